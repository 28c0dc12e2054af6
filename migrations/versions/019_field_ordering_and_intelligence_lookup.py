"""bridge_states ordering bookkeeping in typed columns; one lookup of a stamp's intelligence.

bridge_states has one ordering pair (state's, step 012), but every value column the reducer's
events fill (namespace, state_data, the aggregation figures, ...) moves on its own: it comes
from the newest event that carries it (contract section 4.2). The sink kept the event that last
moved each of them in ``metadata.field_events`` (``{column: "<UTC time>|<event id>"}``), inside
the seed's JSONB column where every other writer of the row sees that key and can overwrite
it, and where the order was text compared byte by byte. Each of those columns gets its own
``<column>_event_at`` / ``<column>_event_id`` pair instead, the convention of step 012, compared
by ``omnisink.newer`` like every other pair. The values move over and the key goes; a value that
is not one the sink wrote (another writer's) moves as NULL: no event has moved that column yet,
so the next event carrying it does. The downgrade writes the key back from the columns, on
the rows where some column has a pair (a row whose key was empty gets none back).

``omnisink.newest_intelligence(file_hash, not_data)`` is the newest INTELLIGENCE_RECEIVED of a
file hash in event_logs and its intelligence data: the payload's ``intelligence_data``, else its
``intelligence`` (JSON null counts as absent), else the payload minus the keys ``not_data``
(the sink passes handlers.fields.INTELLIGENCE_NOT_DATA, the keys the workflow handler drops
too). The stamps handler asks it both when it creates a stamp and when an intelligence event
arrives for a stamp that exists, so the two paths read one definition. ``LANGUAGE sql STABLE``,
one ``SELECT``, not strict: the planner inlines it into the caller's ``LATERAL`` join, and the
GIN index on ``event_logs.payload`` serves the containment as it did written in place.

All new columns are nullable, so rows written by the seed's own applications stay valid.


Revision ID: 019
Revises: 018
"""

from alembic import op

revision = "019"
down_revision = "018"
branch_labels = None
depends_on = None

# The value columns of bridge_states moved by the newest event that carries them.
FIELDS = (
    "state_data",
    "namespace",
    "total_size_bytes",
    "unique_file_types",
    "unique_workflows",
    "aggregation_type",
    "window_start",
    "window_end",
    "aggregation_duration_ms",
    "items_per_second",
    "version",
    "configuration",
)
KEY = "field_events"
# What the sink wrote: microsecond UTC time without a zone, "|", the event id.
EVENT_TEXT = (
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}"
    r"\|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
TEXT_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US'


def upgrade() -> None:
    columns = ", ".join(
        f"ADD COLUMN {name}_event_at TIMESTAMP WITH TIME ZONE, ADD COLUMN {name}_event_id UUID"
        for name in FIELDS
    )
    op.execute(f"ALTER TABLE bridge_states {columns}")

    moves = []
    for name in FIELDS:
        text = f"(metadata -> '{KEY}' ->> '{name}')"
        moves.append(
            f"{name}_event_at = CASE WHEN {text} ~ '{EVENT_TEXT}' "
            f"THEN split_part({text}, '|', 1)::timestamp AT TIME ZONE 'UTC' END, "
            f"{name}_event_id = CASE WHEN {text} ~ '{EVENT_TEXT}' "
            f"THEN split_part({text}, '|', 2)::uuid END"
        )
    op.execute(
        f"UPDATE bridge_states SET {', '.join(moves)}, metadata = metadata - '{KEY}' "
        f"WHERE metadata ? '{KEY}'"
    )

    op.execute(
        """
        CREATE FUNCTION omnisink.newest_intelligence(file_hash TEXT, not_data TEXT[])
        RETURNS TABLE (data JSONB, event_at TIMESTAMP WITH TIME ZONE, event_id UUID)
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$
            SELECT CASE
                       WHEN COALESCE(jsonb_typeof(i.payload -> 'intelligence_data'), 'null')
                            <> 'null'
                       THEN i.payload -> 'intelligence_data'
                       WHEN COALESCE(jsonb_typeof(i.payload -> 'intelligence'), 'null') <> 'null'
                       THEN i.payload -> 'intelligence'
                       ELSE i.payload - not_data
                   END,
                   i.created_at, i.id
            FROM (
                SELECT e.payload, e.created_at, e.id
                FROM public.event_logs AS e
                WHERE e.event_type = 'INTELLIGENCE_RECEIVED'
                  AND e.payload @> jsonb_build_object('file_hash', newest_intelligence.file_hash)
                ORDER BY e.created_at DESC, e.id DESC
                LIMIT 1
            ) AS i
        $$
        """
    )
    op.execute(
        "COMMENT ON FUNCTION omnisink.newest_intelligence(TEXT, TEXT[]) IS "
        "'the newest INTELLIGENCE_RECEIVED of a file hash in event_logs, and its intelligence "
        "data as the sink reads it: what a stamp of that hash holds'"
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION omnisink.newest_intelligence(TEXT, TEXT[])")

    entries = ", ".join(
        f"'{name}', to_char({name}_event_at AT TIME ZONE 'UTC', '{TEXT_FORMAT}') "
        f"|| '|' || {name}_event_id"
        for name in FIELDS
    )
    moved = " OR ".join(f"{name}_event_at IS NOT NULL" for name in FIELDS)
    op.execute(
        f"UPDATE bridge_states SET metadata = COALESCE(metadata, '{{}}'::jsonb) "
        f"|| jsonb_build_object('{KEY}', jsonb_strip_nulls(jsonb_build_object({entries}))) "
        f"WHERE {moved}"
    )

    columns = ", ".join(
        f"DROP COLUMN {name}_event_id, DROP COLUMN {name}_event_at" for name in reversed(FIELDS)
    )
    op.execute(f"ALTER TABLE bridge_states {columns}")
