"""Create fsm_transitions (seed 000, table 3): the audit trail of workflow state changes.

Revision ID: 003
Revises: 002
"""

from alembic import op

revision = "003"
down_revision = "002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE fsm_transitions (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            workflow_id UUID NOT NULL REFERENCES workflow_executions(id),
            from_state VARCHAR(50) NOT NULL,
            to_state VARCHAR(50) NOT NULL,
            transition_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
            triggered_by VARCHAR(100),
            metadata JSONB DEFAULT '{}'
        )
        """
    )
    op.execute("CREATE INDEX idx_fsm_transitions_workflow_id ON fsm_transitions(workflow_id)")
    op.execute("CREATE INDEX idx_fsm_transitions_transition_at ON fsm_transitions(transition_at)")


def downgrade() -> None:
    op.execute("DROP TABLE fsm_transitions")
