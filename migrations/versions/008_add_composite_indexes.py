"""Add composite indexes (seed 000 migration 008: 8 indexes over several tables).

One per query pattern of the seed that filters on one column and orders or groups on another.


Revision ID: 008
Revises: 007
"""

from alembic import op

revision = "008"
down_revision = "007"
branch_labels = None
depends_on = None

INDEXES = {
    # find_failed_workflows: WHERE state = 'FAILED' AND started_at > ...
    "idx_workflow_executions_state_started": "workflow_executions(state, started_at DESC)",
    # workflows by correlation_id ORDER BY started_at DESC
    "idx_workflow_executions_correlation_started": (
        "workflow_executions(correlation_id, started_at DESC)"
    ),
    # step statistics: WHERE status = 'COMPLETED' GROUP BY step_name, step_type
    "idx_workflow_steps_status_name_type": "workflow_steps(status, step_name, step_type)",
    # transition history: WHERE workflow_id = $1 ORDER BY transition_at
    "idx_fsm_transitions_workflow_transition_at": "fsm_transitions(workflow_id, transition_at)",
    # transition failure analysis: WHERE to_state = 'FAILED' GROUP BY from_state, to_state
    "idx_fsm_transitions_to_from": "fsm_transitions(to_state, from_state)",
    # active bridge states: GROUP BY node_type, state
    "idx_bridge_states_node_type_state": "bridge_states(node_type, state)",
    # healthy nodes: WHERE health_status = 'HEALTHY' AND last_heartbeat > ...
    "idx_node_registrations_health_heartbeat": (
        "node_registrations(health_status, last_heartbeat)"
    ),
    # stamps by namespace ORDER BY created_at DESC
    "idx_metadata_stamps_namespace_created": "metadata_stamps(namespace, created_at DESC)",
}


def upgrade() -> None:
    for name, target in INDEXES.items():
        op.execute(f"CREATE INDEX {name} ON {target}")


def downgrade() -> None:
    for name in reversed(list(INDEXES)):
        op.execute(f"DROP INDEX {name}")
