"""Create workflow_executions (seed 000, table 1): the bridge's workflow runs.

Revision ID: 001
Revises: None
"""

from alembic import op

revision = "001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE workflow_executions (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            workflow_id UUID NOT NULL,
            correlation_id UUID NOT NULL,
            state VARCHAR(50) NOT NULL,
            input_data JSONB DEFAULT '{}',
            output_data JSONB DEFAULT '{}',
            error_info JSONB DEFAULT '{}',
            started_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
            completed_at TIMESTAMP WITH TIME ZONE,
            metadata JSONB DEFAULT '{}'
        )
        """
    )
    op.execute(
        "CREATE INDEX idx_workflow_executions_correlation ON workflow_executions(correlation_id)"
    )
    op.execute("CREATE INDEX idx_workflow_executions_state ON workflow_executions(state)")
    op.execute("CREATE INDEX idx_workflow_executions_started ON workflow_executions(started_at)")
    op.execute("CREATE INDEX idx_workflow_exec_workflow_id ON workflow_executions(workflow_id)")


def downgrade() -> None:
    op.execute("DROP TABLE workflow_executions")
