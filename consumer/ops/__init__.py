"""The seeds' query patterns and maintenance functions, for an operator.

``omnisink query`` reads what the sink wrote, as the bridge database guide (seed 000, "Query
Patterns") and the intelligence schema (seed 003, "FSM Statistics") query it:

- ``trace CORRELATION_ID``: every workflow of a correlation with its steps and transitions,
  and every ``event_logs`` row of it, in time order;
- ``namespace NS``: the namespace's stamps (count, file types, bytes) and workflows by state;
- ``failed``: failed bridge workflows with their error, newest first;
- ``session SESSION_ID``: a session's events as a timeline;
- ``fsm``: intelligence FSM entities per type and state, and the average time spent in a state.

``omnisink maintenance`` runs seed 003's maintenance:

- ``stuck``: ``intelligence.find_stuck_workflows`` and the seed's "Stuck Entities" query;
- ``cleanup``: ``intelligence.cleanup_old_fsm_history`` and
  ``intelligence.cleanup_completed_workflows``; ``--dry-run`` counts the same rows instead.

The package:

- ``queries``: the connection and every statement, written out whole (``handlers.sql.Sql``,
  so the test suite prepares each against the migrated database);
- ``render``: tables of rows;
- ``commands``: each command, from parsed arguments to output;
- ``cli``: the arguments (``query_app`` and ``maintenance_app``, registered by consumer/cli.py).

Decisions (where the seeds' SQL meets the sink's schema):

- **Ids as the sink stores them.** A correlation or session id that is not a UUID is looked
  up as the sink stores it: its uuid5 (docs/contract.md section 2), so ``trace req-42`` finds
  what ``req-42`` wrote.
- **failed's window is on when a workflow failed** (``completed_at``, else ``started_at``),
  not on ``started_at`` alone as in the seed: a row the sink built from a WORKFLOW_FAILED
  whose STARTED never arrived has no ``started_at``, and a workflow that started before the
  window but failed inside it is what an operator looks for.
- **Average time in a state is grouped by ``from_state``.** ``fsm_state_history.duration_ms``
  is the time spent in the previous state (seed 003; the sink computes it the same way), so
  the time spent in a state is the duration of the transitions that leave it. The seed's
  query groups it by ``to_state``. Its other filters are kept: successful transitions, in the
  last ``--days`` (7, the seed's window).
- **Durations and averages are double precision** (``EXTRACT`` yields numeric), so JSON
  output has plain numbers.
- **Connection failures** are ``consumer.dlq.queries.connect``'s: exit 2, the URL redacted.
  A database without the schema (not migrated) is exit 2 too, saying to run
  ``omnisink migrate``.
"""
