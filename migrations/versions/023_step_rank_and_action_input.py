"""Bookkeeping for two workflow facts no producer column orders: a step's rank, an ACTION's input.

- **workflow_steps.step_order when no event of the step sends one.** The bridge's
  orchestrator never sends ``step_order``; the column is NOT NULL, and a stand-in 0 for every
  step says nothing. The sink ranks such steps within their workflow by event time: the
  step's earliest event, kept in ``order_event_at`` / ``order_event_id`` (the pair convention
  of step 012, compared by ``omnisink.newer``), and ``step_order_ranked`` says the column
  holds that rank rather than a producer's value, so a producer's value that arrives later
  still replaces it. FALSE by default: a row another writer inserts keeps its own
  step_order. ``omnisink.step_ranks(workflow_ids)`` is the rank, declared once: every step of
  those workflows with its rank, 1, 2, ... by (order_event_at, order_event_id), the row id
  breaking the tie of steps no sink event ordered (another writer's rows, last). The sink
  asks it for the workflows a batch touched; this step asks it once for the rows it marks.
  ``LANGUAGE sql STABLE``, one ``SELECT``: the planner inlines it.
- **workflow_executions.input_data from the orchestrator's ACTION.** An event-driven workflow's
  input is in its ACTION (``payload.payload.input_data``); its STARTED carries none, only the
  rest of its payload, which the sink stores as input for want of anything better. The ACTION
  must win in any order, so the row remembers which ACTION's input it holds:
  ``action_event_at`` / ``action_event_id`` (the newest such ACTION; NULL while none).

Rows the sink already wrote: a step whose step_order is the old stand-in 0 becomes ranked,
its earliest known event time (the earliest of started_at, completed_at and its status
event's time) and its status event's id standing in for its earliest event, and each such
workflow's steps are ranked once here. Rows the sink did not write (no status pair) are left
as they are. The downgrade drops the columns; ranks already written stay in step_order.


Revision ID: 023
Revises: 022
"""

from alembic import op

revision = "023"
# 022 once steps 021 and 022 are merged in; 020 on a branch without them.
down_revision = "022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE workflow_steps
            ADD COLUMN order_event_at TIMESTAMP WITH TIME ZONE,
            ADD COLUMN order_event_id UUID,
            ADD COLUMN step_order_ranked BOOLEAN NOT NULL DEFAULT FALSE
        """
    )
    op.execute(
        """
        ALTER TABLE workflow_executions
            ADD COLUMN action_event_at TIMESTAMP WITH TIME ZONE,
            ADD COLUMN action_event_id UUID
        """
    )
    op.execute(
        """
        UPDATE workflow_steps
        SET order_event_at = LEAST(started_at, completed_at, status_event_at),
            order_event_id = status_event_id,
            step_order_ranked = step_order = 0
        WHERE status_event_at IS NOT NULL
        """
    )
    op.execute(
        """
        CREATE FUNCTION omnisink.step_ranks(workflow_ids UUID[])
        RETURNS TABLE (id UUID, step_order INTEGER)
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$
            SELECT s.id, (row_number() OVER (
                PARTITION BY s.workflow_id ORDER BY s.order_event_at, s.order_event_id, s.id
            ))::integer
            FROM public.workflow_steps AS s
            WHERE s.workflow_id = ANY (workflow_ids)
        $$
        """
    )
    op.execute(
        "COMMENT ON FUNCTION omnisink.step_ranks(UUID[]) IS "
        "'the rank of every step of these workflows by its earliest event: the step_order of "
        "a step no event sent one for'"
    )
    op.execute(
        """
        UPDATE workflow_steps AS t SET step_order = r.step_order
        FROM omnisink.step_ranks(
            ARRAY(SELECT DISTINCT workflow_id FROM workflow_steps WHERE step_order_ranked)
        ) AS r
        WHERE t.id = r.id AND t.step_order_ranked
        """
    )


def downgrade() -> None:
    op.execute("DROP FUNCTION omnisink.step_ranks(UUID[])")
    op.execute(
        "ALTER TABLE workflow_executions DROP COLUMN action_event_id, DROP COLUMN action_event_at"
    )
    op.execute(
        "ALTER TABLE workflow_steps DROP COLUMN step_order_ranked, "
        "DROP COLUMN order_event_id, DROP COLUMN order_event_at"
    )
