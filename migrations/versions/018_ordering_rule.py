"""One ordering rule for every table family: ``omnisink.newer``.

Contract section 4.2: a current-state value moves only for an event newer, by
``(event_timestamp, event_id)``, than the one that last moved it; a value no event has moved
yet (``held_at`` NULL: a placeholder row, or a row another writer made) is moved by any event.
Every handler's SQL asks this one function instead of spelling the comparison out.

It is ``LANGUAGE sql IMMUTABLE``, a single ``SELECT`` of one expression, so the planner inlines
it: a call costs what the comparison written in place costs.


Revision ID: 018
Revises: 017
"""

from alembic import op

revision = "018"
down_revision = "017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION omnisink.newer(
            at TIMESTAMP WITH TIME ZONE, id UUID,
            held_at TIMESTAMP WITH TIME ZONE, held_id UUID
        ) RETURNS BOOLEAN
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS $$
            SELECT held_at IS NULL
                OR (at, id) > (held_at, COALESCE(held_id, '00000000-0000-0000-0000-000000000000'))
        $$
        """
    )
    op.execute(
        "COMMENT ON FUNCTION omnisink.newer(TIMESTAMP WITH TIME ZONE, UUID, "
        "TIMESTAMP WITH TIME ZONE, UUID) IS "
        "'true when the event (at, id) is newer than the one that last moved a value "
        "(held_at, held_id), or nothing moved it yet: the sink''s one ordering rule'"
    )


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION omnisink.newer(TIMESTAMP WITH TIME ZONE, UUID, "
        "TIMESTAMP WITH TIME ZONE, UUID)"
    )
