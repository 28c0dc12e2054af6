"""Create event_logs (seed 000, table 7): one row per consumed event.

The sink writes the event_id as the row id, so a redelivered event is a no-op on the
primary key. Besides the seed's five indexes, two composites serve the seed's timeline
queries (by session and by correlation, ordered by time).


Revision ID: 011
Revises: 010
"""

from alembic import op

revision = "011"
down_revision = "010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE event_logs (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            event_type VARCHAR(100) NOT NULL,
            correlation_id UUID,
            session_id UUID,
            payload JSONB NOT NULL,
            metadata JSONB DEFAULT '{}',
            created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW()
        )
        """
    )
    op.execute("CREATE INDEX idx_event_logs_correlation ON event_logs(correlation_id)")
    op.execute("CREATE INDEX idx_event_logs_session ON event_logs(session_id)")
    op.execute("CREATE INDEX idx_event_logs_type ON event_logs(event_type)")
    op.execute("CREATE INDEX idx_event_logs_created ON event_logs(created_at)")
    op.execute("CREATE INDEX idx_event_logs_payload_gin ON event_logs USING GIN (payload)")
    op.execute(
        "CREATE INDEX idx_event_logs_session_created ON event_logs(session_id, created_at) "
        "WHERE session_id IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX idx_event_logs_correlation_created "
        "ON event_logs(correlation_id, created_at) WHERE correlation_id IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP TABLE event_logs")
