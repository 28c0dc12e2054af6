"""A stamp's intelligence found by one index probe, not a scan of every intelligence event.

``omnisink.newest_intelligence`` (step 019) asked for the newest INTELLIGENCE_RECEIVED whose
payload contains the file hash, ``ORDER BY created_at DESC, id DESC LIMIT 1``. With that order
and limit the planner walks the intelligence events newest first and tests each for the hash,
so the cost grows with every intelligence event ever stored: at about 100,000 events one
batch's statement took longer than the 60 s statement timeout, every attempt again, and the
sink stopped making progress. The lookup now compares ``payload ->> 'file_hash'`` (the
stamps handler accepts a file hash only as a JSON string, so this is the containment's
answer) and a partial index on the hash, newest first, answers it in one probe.


Revision ID: 024
Revises: 023
"""

from alembic import op

revision = "024"
down_revision = "023"
branch_labels = None
depends_on = None

_BODY = """
        CREATE OR REPLACE FUNCTION omnisink.newest_intelligence(file_hash TEXT, not_data TEXT[])
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
                  AND {match}
                ORDER BY e.created_at DESC, e.id DESC
                LIMIT 1
            ) AS i
        $$
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE INDEX idx_event_logs_intelligence_file_hash
            ON public.event_logs ((payload ->> 'file_hash'), created_at DESC, id DESC)
            WHERE event_type = 'INTELLIGENCE_RECEIVED'
        """
    )
    op.execute(_BODY.format(match="e.payload ->> 'file_hash' = newest_intelligence.file_hash"))


def downgrade() -> None:
    op.execute(
        _BODY.format(
            match="e.payload @> jsonb_build_object('file_hash', newest_intelligence.file_hash)"
        )
    )
    op.execute("DROP INDEX public.idx_event_logs_intelligence_file_hash")
