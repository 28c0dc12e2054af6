"""The sink writes intelligence.fsm_state_history itself; the trigger stays for everyone else.

trigger_record_fsm_history (step 015) writes one history row per change of
fsm_state.current_state. The sink cannot use it: one set-based statement updates a row
once per batch however many transitions the batch holds, and a transition that arrives
after a newer one does not change current_state at all, so the trigger would record a
different history for each arrival order. The sink writes one history row per
FSM_STATE_TRANSITION event instead (handlers/intelligence_fsm.py) and turns the trigger off
for its own transaction with ``set_config('omnisink.fsm_history', 'sink', true)``.

The switch is the trigger's WHEN condition rather than a test inside the function: a row
event whose WHEN is false is never queued, so the sink's large batches do not fill the
AFTER-trigger queue with no-op events, and the condition shows in the trigger's
definition. Every other writer (the seed's own applications, an operator's UPDATE) never
sets the setting and keeps the trigger's behaviour unchanged. ``current_setting(..., true)``
is NULL when the setting was never defined and '' after a transaction that set it ended.


Revision ID: 017
Revises: 016
"""

from alembic import op

revision = "017"
down_revision = "016"
branch_labels = None
depends_on = None


def _create_trigger(when: str) -> None:
    op.execute(
        f"""
        CREATE TRIGGER trigger_record_fsm_history
            AFTER INSERT OR UPDATE ON intelligence.fsm_state
            FOR EACH ROW {when}
            EXECUTE FUNCTION intelligence.record_fsm_state_history()
        """
    )


def upgrade() -> None:
    op.execute("DROP TRIGGER trigger_record_fsm_history ON intelligence.fsm_state")
    _create_trigger("WHEN (current_setting('omnisink.fsm_history', true) IS DISTINCT FROM 'sink')")


def downgrade() -> None:
    op.execute("DROP TRIGGER trigger_record_fsm_history ON intelligence.fsm_state")
    _create_trigger("")
