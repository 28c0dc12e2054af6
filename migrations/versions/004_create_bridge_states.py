"""Create bridge_states (seed 000, table 4): aggregated reducer state.

Revision ID: 004
Revises: 003
"""

from alembic import op

revision = "004"
down_revision = "003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE bridge_states (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            node_type VARCHAR(50) NOT NULL,
            correlation_id UUID NOT NULL,
            state VARCHAR(50) NOT NULL,
            state_data JSONB DEFAULT '{}',
            metadata JSONB DEFAULT '{}',
            created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
            updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
        )
        """
    )
    op.execute("CREATE INDEX idx_bridge_states_correlation ON bridge_states(correlation_id)")
    op.execute("CREATE INDEX idx_bridge_states_node_type ON bridge_states(node_type)")
    op.execute("CREATE INDEX idx_bridge_states_state ON bridge_states(state)")


def downgrade() -> None:
    op.execute("DROP TABLE bridge_states")
