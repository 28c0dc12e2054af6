"""The intelligence handlers' ordering bookkeeping in typed columns of the sink's own.

The sink kept what orders its intelligence writes inside the seed's JSONB columns:
fsm_state.metadata.omnisink_lease (the lease fencing state) and
workflow_executions.metadata.omnisink (which STARTED and which step event won), as JSON
{at, id} pairs. Other writers of those tables see the keys and, replacing metadata, erase
them; a producer's own key of that name had to be dropped. They become columns, named like
migration 012's ordering pairs (<aspect>_event_at / <aspect>_event_id), which the SQL
compares with omnisink.newer (migration 018):

- fsm_state: lease_event_at / lease_event_id, the acquire that holds the lease or last held
  it (the greatest by (lease_epoch, event time, event id)), with its lease_top_id,
  lease_top_epoch and lease_top_expires_at: the seed's lease_id, lease_epoch and
  lease_expires_at are NULL once that lease is released, and other writers set them.
  lease_released: the releases that may still match an acquire (epoch at or above the top's),
  sorted, NULL when there are none; an array of omnisink.lease_key (lease_id, lease_epoch),
  whose lease_id compares by code point (COLLATE "C") so the order is every server's.
- workflow_executions: started_event_at / started_event_id (the first STARTED, whose facts
  the row shows) and step_event_at / step_event_id (the newest STEP_COMPLETED, which set
  current_step).

All are nullable: NULL is "no event has set it yet", as in 012, so rows other writers made
stay valid. The values already written are moved and their keys removed (a metadata the key
alone made non-NULL becomes NULL again, as the sink now writes it); downgrade puts them back.
Moving bookkeeping is not a change of a row: the updated_at triggers (014, 016) are off while
the rows are rewritten, so updated_at, which find_stuck_workflows reads, keeps its value. The
history trigger (015, 017) records only a change of current_state, which the move never
makes; the duration trigger (016) only a change of started_at or completed_at, likewise.


Revision ID: 020
Revises: 019
"""

from alembic import op

revision = "020"
down_revision = "019"
branch_labels = None
depends_on = None

ADD_COLUMNS = (
    """
    ALTER TABLE intelligence.fsm_state
        ADD COLUMN lease_event_at TIMESTAMP WITH TIME ZONE,
        ADD COLUMN lease_event_id UUID,
        ADD COLUMN lease_top_id VARCHAR(255),
        ADD COLUMN lease_top_epoch INTEGER,
        ADD COLUMN lease_top_expires_at TIMESTAMP WITH TIME ZONE,
        ADD COLUMN lease_released omnisink.lease_key[]
    """,
    """
    ALTER TABLE intelligence.workflow_executions
        ADD COLUMN started_event_at TIMESTAMP WITH TIME ZONE,
        ADD COLUMN started_event_id UUID,
        ADD COLUMN step_event_at TIMESTAMP WITH TIME ZONE,
        ADD COLUMN step_event_id UUID
    """,
)
DROP_COLUMNS = (
    """
    ALTER TABLE intelligence.workflow_executions
        DROP COLUMN step_event_id, DROP COLUMN step_event_at,
        DROP COLUMN started_event_id, DROP COLUMN started_event_at
    """,
    """
    ALTER TABLE intelligence.fsm_state
        DROP COLUMN lease_released, DROP COLUMN lease_top_expires_at,
        DROP COLUMN lease_top_epoch, DROP COLUMN lease_top_id,
        DROP COLUMN lease_event_id, DROP COLUMN lease_event_at
    """,
)
# What each column is, for whoever else reads or writes these tables.
MEANINGS = {
    "fsm_state.lease_event_at": "the top acquire's event time",
    "fsm_state.lease_event_id": "the top acquire's event id",
    "fsm_state.lease_top_id": "the top acquire's lease_id",
    "fsm_state.lease_top_epoch": "the top acquire's lease_epoch",
    "fsm_state.lease_top_expires_at": "the top acquire's lease_expires_at",
    "fsm_state.lease_released": "the releases at or above the top acquire's epoch",
    "workflow_executions.started_event_at": "the first STARTED's event time",
    "workflow_executions.started_event_id": "the first STARTED's event id",
    "workflow_executions.step_event_at": "the newest STEP_COMPLETED's event time",
    "workflow_executions.step_event_id": "the newest STEP_COMPLETED's event id",
}
UPDATED_AT_TRIGGERS = {
    "fsm_state": "trigger_fsm_state_updated_at",
    "workflow_executions": "trigger_workflow_exec_updated_at",
}

FSM_STATE_UP = """
    UPDATE intelligence.fsm_state SET
        lease_event_at = (metadata #>> '{omnisink_lease,top,event_at}')::timestamptz,
        lease_event_id = (metadata #>> '{omnisink_lease,top,event_id}')::uuid,
        lease_top_id = metadata #>> '{omnisink_lease,top,lease_id}',
        lease_top_epoch = (metadata #>> '{omnisink_lease,top,lease_epoch}')::integer,
        lease_top_expires_at =
            (metadata #>> '{omnisink_lease,top,lease_expires_at}')::timestamptz,
        lease_released = (
            SELECT array_agg(ROW(p ->> 0, (p ->> 1)::integer)::omnisink.lease_key
                ORDER BY (p ->> 0) COLLATE "C", (p ->> 1)::integer)
            FROM jsonb_array_elements(metadata #> '{omnisink_lease,released}') AS p
        ),
        metadata = NULLIF(metadata - 'omnisink_lease', '{}'::jsonb)
    WHERE jsonb_typeof(metadata) = 'object' AND metadata ? 'omnisink_lease'
"""
FSM_STATE_DOWN = """
    UPDATE intelligence.fsm_state SET metadata = COALESCE(metadata, '{}'::jsonb)
        || jsonb_build_object('omnisink_lease', jsonb_build_object(
            'top', CASE WHEN lease_event_id IS NOT NULL THEN jsonb_build_object(
                'lease_id', lease_top_id,
                'lease_epoch', lease_top_epoch,
                'lease_expires_at', lease_top_expires_at,
                'event_at', lease_event_at,
                'event_id', lease_event_id
            ) END,
            'released', COALESCE((
                SELECT jsonb_agg(jsonb_build_array(k.lease_id, k.lease_epoch) ORDER BY k)
                FROM unnest(lease_released) AS k
            ), '[]'::jsonb)
        ))
    WHERE lease_event_id IS NOT NULL OR lease_released IS NOT NULL
"""
WORKFLOWS_UP = """
    UPDATE intelligence.workflow_executions SET
        started_event_at = (metadata #>> '{omnisink,started,at}')::timestamptz,
        started_event_id = (metadata #>> '{omnisink,started,id}')::uuid,
        step_event_at = (metadata #>> '{omnisink,step,at}')::timestamptz,
        step_event_id = (metadata #>> '{omnisink,step,id}')::uuid,
        metadata = NULLIF(metadata - 'omnisink', '{}'::jsonb)
    WHERE jsonb_typeof(metadata) = 'object' AND metadata ? 'omnisink'
"""
# The sink wrote its key on every row it wrote, and every event it writes sets one of these.
WORKFLOWS_DOWN = """
    UPDATE intelligence.workflow_executions SET metadata = COALESCE(metadata, '{}'::jsonb)
        || jsonb_build_object('omnisink', jsonb_strip_nulls(jsonb_build_object(
            'started', CASE WHEN started_event_id IS NOT NULL THEN
                jsonb_build_object('at', started_event_at, 'id', started_event_id) END,
            'step', CASE WHEN step_event_id IS NOT NULL THEN
                jsonb_build_object('at', step_event_at, 'id', step_event_id) END
        )))
    WHERE state_event_id IS NOT NULL OR started_event_id IS NOT NULL
        OR step_event_id IS NOT NULL
"""


def _rewrite(table: str, statement: str) -> None:
    """Run ``statement`` on ``table`` without its updated_at trigger (module docstring)."""
    trigger = UPDATED_AT_TRIGGERS[table]
    op.execute(f"ALTER TABLE intelligence.{table} DISABLE TRIGGER {trigger}")
    op.execute(statement)
    op.execute(f"ALTER TABLE intelligence.{table} ENABLE TRIGGER {trigger}")


def upgrade() -> None:
    op.execute(
        'CREATE TYPE omnisink.lease_key AS (lease_id VARCHAR(255) COLLATE "C", lease_epoch INTEGER)'
    )
    for statement in ADD_COLUMNS:
        op.execute(statement)
    for column, meaning in MEANINGS.items():
        comment = f"the sink's ordering bookkeeping (migration 020): {meaning}"
        quoted = comment.replace("'", "''")
        op.execute(f"COMMENT ON COLUMN intelligence.{column} IS '{quoted}'")
    _rewrite("fsm_state", FSM_STATE_UP)
    _rewrite("workflow_executions", WORKFLOWS_UP)


def downgrade() -> None:
    _rewrite("workflow_executions", WORKFLOWS_DOWN)
    _rewrite("fsm_state", FSM_STATE_DOWN)
    for statement in DROP_COLUMNS:
        op.execute(statement)
    op.execute("DROP TYPE omnisink.lease_key")
