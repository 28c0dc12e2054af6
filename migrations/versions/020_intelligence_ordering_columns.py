"""The intelligence handlers' ordering bookkeeping in typed columns of the sink's own.

The sink kept what orders its intelligence writes inside the seed's JSONB columns:
fsm_state.metadata.omnisink_lease (the lease fencing state), with JSON event times. Other
writers of the table see the key and, replacing metadata, erase it; a producer's own key of
that name had to be dropped. It becomes columns, named like migration 012's ordering pairs
(<aspect>_event_at / <aspect>_event_id), which the SQL compares with omnisink.newer
(migration 018):

- fsm_state: lease_event_at / lease_event_id, the acquire that holds the lease or last held
  it (the greatest by (lease_epoch, event time, event id)), with its lease_top_id,
  lease_top_epoch and lease_top_expires_at: the seed's lease_id, lease_epoch and
  lease_expires_at are NULL once that lease is released, and other writers set them.
  lease_released: the releases that may still match an acquire (epoch at or above the top's),
  sorted, NULL when there are none; an array of omnisink.lease_key (lease_id, lease_epoch),
  whose lease_id compares by code point (COLLATE "C") so the order is every server's.

All are nullable: NULL is "no event has set it yet", as in 012, so rows other writers made
stay valid. The values already written are moved and their key removed (a metadata the key
alone made non-NULL becomes NULL again, as the sink now writes it); downgrade puts them back.
Moving bookkeeping is not a change of a row: the updated_at trigger (014) is off while the
rows are rewritten, so updated_at keeps its value. The history trigger (015, 017) records
only a change of current_state, which the move never makes.


Revision ID: 020
Revises: 018
"""

from alembic import op

revision = "020"
down_revision = "018"
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
)
DROP_COLUMNS = (
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
}
UPDATED_AT_TRIGGERS = {
    "fsm_state": "trigger_fsm_state_updated_at",
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


def downgrade() -> None:
    _rewrite("fsm_state", FSM_STATE_DOWN)
    for statement in DROP_COLUMNS:
        op.execute(statement)
    op.execute("DROP TYPE omnisink.lease_key")
