"""Create node_registrations (seed 000, table 5): service discovery and node health.

Revision ID: 005
Revises: 004
"""

from alembic import op

revision = "005"
down_revision = "004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE node_registrations (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            node_id UUID NOT NULL UNIQUE,
            node_type VARCHAR(50) NOT NULL,
            node_version VARCHAR(20) NOT NULL,
            endpoint_url VARCHAR(500) NOT NULL,
            health_status VARCHAR(20) NOT NULL,
            last_heartbeat TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
            registered_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
            metadata JSONB DEFAULT '{}'
        )
        """
    )
    op.execute("CREATE INDEX idx_node_registrations_type ON node_registrations(node_type)")
    op.execute("CREATE INDEX idx_node_registrations_health ON node_registrations(health_status)")
    op.execute(
        "CREATE INDEX idx_node_registrations_heartbeat ON node_registrations(last_heartbeat)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE node_registrations")
