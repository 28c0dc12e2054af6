"""Dead letters of kind ``internal``: a record an error nobody classified was raised for.

Until now an error the sink did not classify, raised while it judged one record (decoding it,
a handler's parse, building its dead letter), stopped the daemon before the offset moved, and
the next start stopped on the same record again: a crash loop. The record becomes a dead
letter of its own kind instead, ``internal``, with the error's class, message and traceback,
and its partition moves on (docs/failures.md). The CHECK of
``omnisink.dead_letters.error_kind`` (step 013) gains the kind, under the same name.

Downgrade: step 020's CHECK has no ``internal``, and giving those rows another kind would
misstate why they failed, so the downgrade refuses while any of them is pending. With the
sink stopped, redrive them (``omnisink dlq redrive --kind internal``: the records go back to
their topics, and the release started after the downgrade consumes them) or mark them
``discarded`` (the error gives the statement), then downgrade again. Rows already
redriven or discarded are deleted: their records are back on their topics or were dropped on
purpose, and each is still on ``<topic>.dlq``.

Revision ID: 021
Revises: 020
"""

from alembic import op

revision = "021"
down_revision = "020"
branch_labels = None
depends_on = None

# Step 013's kinds and the new one; handlers/contract.py DEAD_LETTER_KINDS lists the same
# (tests/unit/test_contract_names.py).
PREVIOUS_KINDS = (
    "decode",
    "schema",
    "unknown_type",
    "invalid_transition",
    "conflict",
    "constraint",
    "oversize",
)
ERROR_KINDS = (*PREVIOUS_KINDS, "internal")

CONSTRAINT = "dead_letters_error_kind_check"  # the name PostgreSQL gave step 013's CHECK

REFUSE_PENDING = """
DO $$
DECLARE
    pending bigint;
BEGIN
    SELECT count(*) INTO pending FROM omnisink.dead_letters
    WHERE error_kind = 'internal' AND status = 'pending';
    IF pending > 0 THEN
        RAISE EXCEPTION
            'omnisink.dead_letters holds % pending dead letter(s) of kind internal, which '
            'revision 020 cannot hold. Redrive them (omnisink dlq redrive --kind internal) '
            'or mark them discarded (UPDATE omnisink.dead_letters SET status = ''discarded'' '
            'WHERE error_kind = ''internal'' AND status = ''pending''), then downgrade '
            'again; redriven and discarded ones are deleted by the downgrade.', pending;
    END IF;
END
$$
"""


def _check(kinds: tuple[str, ...]) -> str:
    listed = ", ".join(f"'{kind}'" for kind in kinds)
    return (
        f"ALTER TABLE omnisink.dead_letters DROP CONSTRAINT {CONSTRAINT}, "
        f"ADD CONSTRAINT {CONSTRAINT} CHECK (error_kind IN ({listed}))"
    )


def upgrade() -> None:
    op.execute(_check(ERROR_KINDS))


def downgrade() -> None:
    op.execute(REFUSE_PENDING)
    op.execute("DELETE FROM omnisink.dead_letters WHERE error_kind = 'internal'")
    op.execute(_check(PREVIOUS_KINDS))
