"""Create metadata_stamps (seed 000, table 6): O.N.E. v0.1 metadata stamps.

Revision ID: 006
Revises: 005
"""

from alembic import op

revision = "006"
down_revision = "005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE metadata_stamps (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
            stamp_id VARCHAR(100) NOT NULL UNIQUE,
            file_hash VARCHAR(256) NOT NULL UNIQUE,
            namespace VARCHAR(200) NOT NULL,
            stamp_data JSONB NOT NULL,
            file_metadata JSONB DEFAULT '{}',
            intelligence_data JSONB DEFAULT '{}',
            created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
            metadata_version VARCHAR(10) DEFAULT '0.1'
        )
        """
    )
    op.execute("CREATE INDEX idx_metadata_stamps_stamp_id ON metadata_stamps(stamp_id)")
    op.execute("CREATE INDEX idx_metadata_stamps_file_hash ON metadata_stamps(file_hash)")
    op.execute("CREATE INDEX idx_metadata_stamps_namespace ON metadata_stamps(namespace)")
    op.execute("CREATE INDEX idx_metadata_stamps_created ON metadata_stamps(created_at)")
    op.execute(
        "CREATE INDEX idx_metadata_stamps_intelligence_gin "
        "ON metadata_stamps USING GIN (intelligence_data)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE metadata_stamps")
