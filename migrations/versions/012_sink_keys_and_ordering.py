"""The unique keys the sink's upserts need and the columns that order state changes.

Order tolerance (event contract section 4.2): a current-state column is only moved by an
event that is newer, by (event_timestamp, event_id), than the one that last moved it. Each
independently updated aspect of a row keeps that pair beside it:
<aspect>_event_at / <aspect>_event_id. NULL means no event has set it yet (a
placeholder parent created from a child), so any real event wins.

All new columns are nullable and the unique indexes ignore NULLs, so rows written by the
seed's own applications before the sink existed stay valid.


Revision ID: 012
Revises: 011
"""

from alembic import op

revision = "012"
down_revision = "011"
branch_labels = None
depends_on = None

ORDERING = {
    "workflow_executions": ("state", "hash", "intelligence"),
    "workflow_steps": ("status",),
    "bridge_states": ("state",),
    "node_registrations": ("state", "heartbeat"),
    "metadata_stamps": ("intelligence",),
}


def upgrade() -> None:
    for table, aspects in ORDERING.items():
        columns = ", ".join(
            f"ADD COLUMN {aspect}_event_at TIMESTAMP WITH TIME ZONE, "
            f"ADD COLUMN {aspect}_event_id UUID"
            for aspect in aspects
        )
        op.execute(f"ALTER TABLE {table} {columns}")

    # workflow_executions: one row per workflow; the sink uses workflow_id as the row id too,
    # so children (steps, transitions) reference it without a lookup.
    op.execute("ALTER TABLE workflow_executions ADD COLUMN namespace VARCHAR(200)")
    op.execute(
        "CREATE UNIQUE INDEX uq_workflow_executions_workflow_id ON workflow_executions(workflow_id)"
    )
    op.execute(
        "CREATE INDEX idx_workflow_executions_namespace_state "
        "ON workflow_executions(namespace, state) WHERE namespace IS NOT NULL"
    )

    # workflow_steps: a step is identified within its workflow by the producer's step_id,
    # else its step_name.
    op.execute("ALTER TABLE workflow_steps ADD COLUMN step_key VARCHAR(255)")
    op.execute(
        "CREATE UNIQUE INDEX uq_workflow_steps_workflow_step_key "
        "ON workflow_steps(workflow_id, step_key)"
    )

    # bridge_states: one row per (node_type, correlation_id), as the seed's update pattern
    # (WHERE correlation_id = $3 AND node_type = $4) already assumes.
    op.execute("ALTER TABLE bridge_states ADD COLUMN namespace VARCHAR(255)")
    op.execute(
        "CREATE UNIQUE INDEX uq_bridge_states_node_type_correlation "
        "ON bridge_states(node_type, correlation_id)"
    )
    op.execute(
        "CREATE INDEX idx_bridge_states_namespace_aggregation_type "
        "ON bridge_states(namespace, aggregation_type)"
    )
    op.execute(
        "CREATE INDEX idx_bridge_states_namespace_window "
        "ON bridge_states(namespace, window_start DESC, window_end DESC) "
        "WHERE window_start IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX idx_bridge_states_namespace_window")
    op.execute("DROP INDEX idx_bridge_states_namespace_aggregation_type")
    op.execute("DROP INDEX uq_bridge_states_node_type_correlation")
    op.execute("ALTER TABLE bridge_states DROP COLUMN namespace")
    op.execute("DROP INDEX uq_workflow_steps_workflow_step_key")
    op.execute("ALTER TABLE workflow_steps DROP COLUMN step_key")
    op.execute("DROP INDEX idx_workflow_executions_namespace_state")
    op.execute("DROP INDEX uq_workflow_executions_workflow_id")
    op.execute("ALTER TABLE workflow_executions DROP COLUMN namespace")
    for table, aspects in reversed(list(ORDERING.items())):
        columns = ", ".join(
            f"DROP COLUMN {aspect}_event_id, DROP COLUMN {aspect}_event_at"
            for aspect in reversed(aspects)
        )
        op.execute(f"ALTER TABLE {table} {columns}")
