"""Enhance bridge_states for reducer aggregation (seed 000 migration 010).

Aggregation totals, windowing, throughput, optimistic-locking version and configuration.


Revision ID: 010
Revises: 009
"""

from alembic import op

revision = "010"
down_revision = "009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE bridge_states
            ADD COLUMN total_size_bytes BIGINT DEFAULT 0 CHECK (total_size_bytes >= 0),
            ADD COLUMN unique_file_types TEXT[] DEFAULT '{}',
            ADD COLUMN unique_workflows UUID[] DEFAULT '{}',
            ADD COLUMN aggregation_type VARCHAR(50) DEFAULT 'namespace_grouping',
            ADD COLUMN window_start TIMESTAMP WITH TIME ZONE,
            ADD COLUMN window_end TIMESTAMP WITH TIME ZONE,
            ADD COLUMN aggregation_duration_ms INTEGER CHECK (aggregation_duration_ms >= 0),
            ADD COLUMN items_per_second NUMERIC(10, 2) CHECK (items_per_second >= 0),
            ADD COLUMN version INTEGER DEFAULT 1 CHECK (version >= 1),
            ADD COLUMN configuration JSONB DEFAULT '{}'
        """
    )
    op.execute("CREATE INDEX idx_bridge_states_aggregation_type ON bridge_states(aggregation_type)")
    op.execute(
        "CREATE INDEX idx_bridge_states_window_start ON bridge_states(window_start DESC) "
        "WHERE window_start IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX idx_bridge_states_window_end ON bridge_states(window_end DESC) "
        "WHERE window_end IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX idx_bridge_states_total_size_bytes ON bridge_states(total_size_bytes DESC)"
    )
    op.execute(
        "CREATE INDEX idx_bridge_states_unique_file_types_gin "
        "ON bridge_states USING GIN (unique_file_types) "
        "WHERE unique_file_types IS NOT NULL AND unique_file_types <> '{}'"
    )
    op.execute(
        "CREATE INDEX idx_bridge_states_unique_workflows_gin "
        "ON bridge_states USING GIN (unique_workflows) "
        "WHERE unique_workflows IS NOT NULL AND unique_workflows <> '{}'"
    )
    op.execute(
        "CREATE INDEX idx_bridge_states_configuration_gin "
        "ON bridge_states USING GIN (configuration) "
        "WHERE configuration IS NOT NULL AND configuration <> '{}'::jsonb"
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE bridge_states
            DROP COLUMN configuration,
            DROP COLUMN version,
            DROP COLUMN items_per_second,
            DROP COLUMN aggregation_duration_ms,
            DROP COLUMN window_end,
            DROP COLUMN window_start,
            DROP COLUMN aggregation_type,
            DROP COLUMN unique_workflows,
            DROP COLUMN unique_file_types,
            DROP COLUMN total_size_bytes
        """
    )
