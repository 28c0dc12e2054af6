"""Add missing workflow indexes (seed 000 migration 007: 4 indexes).

The seed names the step and its count, not the indexes. These four serve the seed's own
workflow queries: failed workflows ordered by completed_at, steps read in step_order, step
statistics grouped by step_name, and steps by start time.


Revision ID: 007
Revises: 006
"""

from alembic import op

revision = "007"
down_revision = "006"
branch_labels = None
depends_on = None

INDEXES = {
    "idx_workflow_executions_completed_at": "workflow_executions(completed_at)",
    "idx_workflow_steps_workflow_id_order": "workflow_steps(workflow_id, step_order)",
    "idx_workflow_steps_step_name": "workflow_steps(step_name)",
    "idx_workflow_steps_started_at": "workflow_steps(started_at)",
}


def upgrade() -> None:
    for name, target in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON {target}")


def downgrade() -> None:
    for name in reversed(list(INDEXES)):
        op.execute(f"DROP INDEX {name}")
