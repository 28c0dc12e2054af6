"""Create workflow_steps (seed 000, table 2): the steps of a workflow run.

Revision ID: 002
Revises: 001
"""

from alembic import op

revision = "002"
down_revision = "001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE workflow_steps (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            workflow_id UUID NOT NULL REFERENCES workflow_executions(id),
            step_name VARCHAR(100) NOT NULL,
            step_type VARCHAR(50) NOT NULL,
            step_order INTEGER NOT NULL,
            input_data JSONB DEFAULT '{}',
            output_data JSONB DEFAULT '{}',
            status VARCHAR(50) NOT NULL,
            started_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
            completed_at TIMESTAMP WITH TIME ZONE,
            execution_time_ms INTEGER
        )
        """
    )
    op.execute("CREATE INDEX idx_workflow_steps_workflow_id ON workflow_steps(workflow_id)")
    op.execute("CREATE INDEX idx_workflow_steps_status ON workflow_steps(status)")
    op.execute("CREATE INDEX idx_workflow_steps_type ON workflow_steps(step_type)")


def downgrade() -> None:
    op.execute("DROP TABLE workflow_steps")
