"""Enhance workflow_executions for the orchestrator (seed 000 migration 009).

Stamp results, per-step details, OnexTree intelligence, hash timing and session tracking,
with partial B-tree indexes for the sparse identifiers and GIN indexes for the JSONB.


Revision ID: 009
Revises: 008
"""

from alembic import op

revision = "009"
down_revision = "008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE workflow_executions
            ADD COLUMN stamp_id VARCHAR(255),
            ADD COLUMN file_hash VARCHAR(64),
            ADD COLUMN workflow_steps JSONB DEFAULT '[]',
            ADD COLUMN intelligence_data JSONB,
            ADD COLUMN hash_generation_time_ms INTEGER
                CHECK (hash_generation_time_ms >= 0),
            ADD COLUMN workflow_steps_executed INTEGER DEFAULT 0
                CHECK (workflow_steps_executed >= 0),
            ADD COLUMN session_id UUID
        """
    )
    op.execute(
        "CREATE INDEX idx_workflow_executions_stamp_id ON workflow_executions(stamp_id) "
        "WHERE stamp_id IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX idx_workflow_executions_file_hash ON workflow_executions(file_hash) "
        "WHERE file_hash IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX idx_workflow_executions_session_id ON workflow_executions(session_id) "
        "WHERE session_id IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX idx_workflow_executions_workflow_steps_gin "
        "ON workflow_executions USING GIN (workflow_steps) "
        "WHERE workflow_steps IS NOT NULL AND workflow_steps <> '[]'::jsonb"
    )
    op.execute(
        "CREATE INDEX idx_workflow_executions_intelligence_data_gin "
        "ON workflow_executions USING GIN (intelligence_data) "
        "WHERE intelligence_data IS NOT NULL AND intelligence_data <> '{}'::jsonb"
    )


def downgrade() -> None:
    # Dropping the columns drops their indexes with them.
    op.execute(
        """
        ALTER TABLE workflow_executions
            DROP COLUMN session_id,
            DROP COLUMN workflow_steps_executed,
            DROP COLUMN hash_generation_time_ms,
            DROP COLUMN intelligence_data,
            DROP COLUMN workflow_steps,
            DROP COLUMN file_hash,
            DROP COLUMN stamp_id
        """
    )
