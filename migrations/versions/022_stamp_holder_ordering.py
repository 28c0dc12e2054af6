"""metadata_stamps: the stamp that holds a row, in typed columns of the sink's own.

A row is one file hash. The producers stamp unchanged content again under a new stamp_id, so
several STAMP_CREATED events claim one hash; the earliest of them by (event time, event id)
holds the row (contract rule 4.6). ``stamp_event_at`` / ``stamp_event_id`` are that event,
named like migration 012's ordering pairs and compared by ``omnisink.newer`` (migration 018):
a stamp older than the pair takes the row over, so any arrival order gives the same row.

The rows the sink wrote before this step get the pair of their oldest STAMP_CREATED in
event_logs with the same stamp_id and file_hash (by event time, then id: the event whose
facts the row shows). A row with no such event (another writer's) keeps NULL: no event holds
it, and stamps of its hash never take it over. Both columns are nullable, so rows other
writers make stay valid.

A stamp without a file hash (the orchestrator's) waits in event_logs until its workflow's
HASH_GENERATED or WORKFLOW_COMPLETED arrives; each side finds the other by the payload's
``workflow_id``. ``idx_event_logs_workflow_stamp_events``, a partial B-tree on
``payload ->> 'workflow_id'`` over those three event types only, serves both lookups: one
index probe per workflow, where containment through the GIN index on the whole payload
would read the posting list of the key ``workflow_id`` (every workflow event) and the GIN
pending list on every probe. Building it takes a lock on event_logs for its duration.

The downgrade drops the index and the columns.


Revision ID: 022
Revises: 021
"""

from alembic import op

revision = "022"
# 021 is written beside this step; the history is re-chained onto it when both are in.
down_revision = "021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE metadata_stamps "
        "ADD COLUMN stamp_event_at TIMESTAMP WITH TIME ZONE, ADD COLUMN stamp_event_id UUID"
    )
    op.execute(
        """
        UPDATE metadata_stamps AS t
        SET (stamp_event_at, stamp_event_id) = (
            SELECT e.created_at, e.id
            FROM event_logs AS e
            WHERE e.event_type = 'STAMP_CREATED'
              AND e.payload @> jsonb_build_object('stamp_id', t.stamp_id,
                                                  'file_hash', t.file_hash)
            ORDER BY e.created_at, e.id
            LIMIT 1
        )
        """
    )

    op.execute(
        "CREATE INDEX idx_event_logs_workflow_stamp_events "
        "ON event_logs ((payload ->> 'workflow_id'), event_type) "
        "WHERE event_type IN ('STAMP_CREATED', 'HASH_GENERATED', 'WORKFLOW_COMPLETED')"
    )


def downgrade() -> None:
    op.execute("DROP INDEX idx_event_logs_workflow_stamp_events")
    op.execute("ALTER TABLE metadata_stamps DROP COLUMN stamp_event_id, DROP COLUMN stamp_event_at")
