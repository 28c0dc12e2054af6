"""The intelligence workflows (seed 003, schema ``intelligence``): ``workflow_executions``.

``INTELLIGENCE_WORKFLOWS`` (INTELLIGENCE_WORKFLOW_STARTED / _STEP_COMPLETED / _COMPLETED /
_FAILED) writes ``workflow_executions`` (one row per text workflow_id). What it shares with the
intelligence FSM handler (correlation text, payload rules, event time) is in
``handlers/intelligence_fields.py``.

Decisions (event contract sections 3 and 4):

- **workflow_executions**: operation_type, entity_id, correlation_id and input_payload are the
  STARTED event's (the first STARTED by (time, id) if there were several). Before a STARTED, a
  child creates a placeholder: operation_type 'UNKNOWN', entity_id '', correlation_id =
  workflow_id unless children carry values; children's values fill those stand-ins, the least
  (code point order) winning among disagreeing children, so the result is order-independent.
  started_at = LEAST over every event of the workflow (the STARTED's time in practice), as is
  created_at. status (state_event_at/_id) follows the newest of STARTED -> RUNNING, COMPLETED,
  FAILED; the winning event also sets completed_at (its time for COMPLETED/FAILED, NULL for
  STARTED), output_results, error_message and failed_step together, so a retried workflow
  shows its final attempt. STEP_COMPLETED does not compete for status: it adds its step to
  completed_steps (distinct, sorted by code point) and the newest step event sets current_step.
  Which STARTED and which step event won is kept in ``metadata.omnisink`` ({"started": {at,
  id}, "step": {at, id}}): the table has no ordering columns for those aspects. duration_ms is
  the seed's trigger's (completed_at - started_at, recomputed when started_at arrives later and
  moves earlier); the sink sets it NULL when a newer STARTED clears completed_at.
- **Payloads**: keys by the names the omniintelligence models use: step | step_name; results |
  output_results | output; error | error_message (anything but a string is kept as JSON text);
  failed_step | step; input_payload | input | input_data, else the STARTED payload minus its
  ids (``_STARTED_NOT_INPUT``), as the bridge workflows handler does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import asyncpg
import orjson
from pydantic import AfterValidator, AliasChoices, Field, StringConstraints

from handlers import fields
from handlers.base import Event, Item, as_columns, jsonb
from handlers.envelope import EventType
from handlers.intelligence_fields import EntityId, Payload, correlation_text, validate

# Column limits (migration 016).
WORKFLOW_ID_MAX_CHARS: Final = 255
OPERATION_TYPE_MAX_CHARS: Final = 50
STEP_MAX_CHARS: Final = 100

# workflow_executions.metadata key holding which STARTED / step event won.
WORKFLOW_KEY: Final = "omnisink"

UNKNOWN_OPERATION_TYPE: Final = "UNKNOWN"
UNKNOWN_ENTITY_ID: Final = ""


# --- payload models --------------------------------------------------------------------------

WorkflowId = Annotated[
    fields.NumberText,
    StringConstraints(max_length=WORKFLOW_ID_MAX_CHARS),
    AfterValidator(fields.not_blank),
]
OperationType = Annotated[
    fields.NumberText,
    StringConstraints(max_length=OPERATION_TYPE_MAX_CHARS),
    AfterValidator(fields.not_blank),
]
StepName = Annotated[
    fields.NumberText,
    StringConstraints(max_length=STEP_MAX_CHARS),
    AfterValidator(fields.not_blank),
]


class _WorkflowPayload(Payload):
    workflow_id: WorkflowId
    # Any event of the workflow may name these; STARTED's win (module docstring).
    operation_type: OperationType | None = None
    entity_id: EntityId | None = None


class _WorkflowStartedPayload(_WorkflowPayload):
    operation_type: OperationType
    entity_id: EntityId
    input_payload: Any = Field(
        default=None, validation_alias=AliasChoices("input_payload", "input", "input_data")
    )


class _WorkflowStepPayload(_WorkflowPayload):
    step: StepName = Field(validation_alias=AliasChoices("step", "step_name", "current_step"))


class _WorkflowCompletedPayload(_WorkflowPayload):
    output_results: Any = Field(
        default=None, validation_alias=AliasChoices("results", "output_results", "output")
    )


class _WorkflowFailedPayload(_WorkflowPayload):
    error: Any = Field(default=None, validation_alias=AliasChoices("error", "error_message"))
    failed_step: StepName | None = Field(
        default=None, validation_alias=AliasChoices("failed_step", "step", "step_name")
    )


# Payload keys that are not the workflow's input when STARTED has no input key: ids stored in
# their own columns and fields describing the event itself.
_STARTED_NOT_INPUT: Final = frozenset(
    {"workflow_id", "operation_type", "entity_id", "correlation_id", "timestamp", "status"}
)


# --- parsed events ---------------------------------------------------------------------------

WorkflowKind = Literal["STARTED", "STEP_COMPLETED", "COMPLETED", "FAILED"]


@dataclass(frozen=True, slots=True)
class WorkflowFact:
    kind: WorkflowKind
    workflow_id: str
    operation_type: str | None
    entity_id: str | None
    correlation_id: str | None
    input_payload: Any = None
    step: str | None = None
    output_results: Any = None
    error_message: str | None = None
    failed_step: str | None = None


def _error_text(error: Any) -> str | None:
    if error is None or isinstance(error, str):
        return error
    # A structured error ({"message": ..., "code": ...}) or a bare code is kept whole, as JSON
    # text: error_message is TEXT, and the reason must not be lost.
    return orjson.dumps(error).decode()


def _fact(
    kind: WorkflowKind, model: _WorkflowPayload, correlation: str | None, **specific: Any
) -> WorkflowFact:
    """The facts every intelligence workflow event carries, and those of its kind."""
    return WorkflowFact(
        kind=kind,
        workflow_id=model.workflow_id,
        operation_type=model.operation_type,
        entity_id=model.entity_id,
        correlation_id=correlation,
        **specific,
    )


def parse_workflow(event: Event) -> WorkflowFact:
    """Validate an intelligence workflow event."""
    kind = event.event_type
    payload = event.payload
    correlation = correlation_text(event.envelope)
    if kind == EventType.INTELLIGENCE_WORKFLOW_STARTED:
        started = validate(_WorkflowStartedPayload, payload)
        given = started.input_payload
        return _fact(
            "STARTED",
            started,
            correlation,
            input_payload=given
            if given is not None
            else {k: v for k, v in payload.items() if k not in _STARTED_NOT_INPUT},
        )
    if kind == EventType.INTELLIGENCE_WORKFLOW_STEP_COMPLETED:
        step = validate(_WorkflowStepPayload, payload)
        return _fact("STEP_COMPLETED", step, correlation, step=step.step)
    if kind == EventType.INTELLIGENCE_WORKFLOW_COMPLETED:
        completed = validate(_WorkflowCompletedPayload, payload)
        return _fact("COMPLETED", completed, correlation, output_results=completed.output_results)
    if kind == EventType.INTELLIGENCE_WORKFLOW_FAILED:
        failed = validate(_WorkflowFailedPayload, payload)
        return _fact(
            "FAILED",
            failed,
            correlation,
            error_message=_error_text(failed.error),
            failed_step=failed.failed_step,
        )
    raise ValueError(f"not an intelligence workflow event type: {kind}")


# --- SQL: workflow_executions ----------------------------------------------------------------


def _event_order(pair: str) -> str:
    return f"(({pair}->>'at')::timestamptz, ({pair}->>'id')::uuid)"


def _fill_stand_in(column: str, stand_in: str) -> str:
    """SQL: a placeholder's value merged with a child's: a real value beats the stand-in, and
    the least (code point order, as Python's min) of two real values wins: commutative and
    associative, so the children's arrival order does not show."""
    return f"""CASE
            WHEN t.{column} = {stand_in} THEN excluded.{column}
            WHEN excluded.{column} = {stand_in} THEN t.{column}
            ELSE LEAST(t.{column} COLLATE "C", excluded.{column} COLLATE "C")
        END"""


def _started_fact(column: str, stand_in: str) -> str:
    return f"""CASE
            WHEN f.started_wins THEN excluded.{column}
            WHEN f.stored_started IS NOT NULL THEN t.{column}
            ELSE {_fill_stand_in(column, stand_in)}
        END"""


def _sorted_steps(*arrays: str) -> str:
    """SQL: the distinct step names of JSON arrays, sorted by code point, as a JSON array."""
    elements = "\n                UNION ".join(
        f"SELECT jsonb_array_elements_text(COALESCE({a}, '[]'::jsonb))" for a in arrays
    )
    return f"""(
            SELECT COALESCE(jsonb_agg(s.step ORDER BY s.step COLLATE "C"), '[]'::jsonb)
            FROM ({elements}) AS s(step)
        )"""


_STATUS_WINS: Final = """(excluded.state_event_id IS NOT NULL
            AND (t.state_event_id IS NULL
                OR (excluded.state_event_at, excluded.state_event_id)
                    > (t.state_event_at, t.state_event_id)))"""

# One row per workflow of the batch (reduced in Python). duration_ms is the seed's trigger's
# whenever completed_at is set; it is cleared here when a newer STARTED clears completed_at,
# which the trigger leaves alone.
_UPSERT_WORKFLOWS: Final = f"""
WITH i AS (
    SELECT *
    FROM unnest(
        $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::timestamptz[], $9::timestamptz[], $10::text[], $11::text[], $12::text[],
        $13::text[], $14::text[], $15::timestamptz[], $16::timestamptz[], $17::uuid[]
    ) AS i(
        workflow_id, operation_type, entity_id, status, current_step, completed_steps,
        failed_step, started_at, completed_at, correlation_id, input_payload, output_results,
        error_message, metadata, created_at, state_event_at, state_event_id
    )
)
INSERT INTO intelligence.workflow_executions AS t (
    workflow_id, operation_type, entity_id, status, current_step, completed_steps,
    failed_step, started_at, completed_at, correlation_id, input_payload, output_results,
    error_message, metadata, created_at, state_event_at, state_event_id
)
SELECT i.workflow_id, i.operation_type, i.entity_id, i.status, i.current_step,
    {_sorted_steps("i.completed_steps::jsonb")},
    i.failed_step, i.started_at, i.completed_at, i.correlation_id, i.input_payload::jsonb,
    i.output_results::jsonb, i.error_message, i.metadata::jsonb, i.created_at,
    i.state_event_at, i.state_event_id
FROM i
ORDER BY i.workflow_id
ON CONFLICT (workflow_id) DO UPDATE SET (
    operation_type, entity_id, correlation_id, input_payload, started_at, status,
    completed_at, duration_ms, output_results, error_message, failed_step, state_event_at,
    state_event_id, current_step, completed_steps, metadata, created_at
) = (
    SELECT
        {_started_fact("operation_type", f"'{UNKNOWN_OPERATION_TYPE}'")},
        {_started_fact("entity_id", f"'{UNKNOWN_ENTITY_ID}'")},
        {_started_fact("correlation_id", "t.workflow_id")},
        CASE WHEN f.started_wins THEN excluded.input_payload ELSE t.input_payload END,
        LEAST(t.started_at, excluded.started_at),
        CASE WHEN f.status_wins THEN excluded.status ELSE t.status END,
        CASE WHEN f.status_wins THEN excluded.completed_at ELSE t.completed_at END,
        CASE WHEN f.status_wins AND excluded.completed_at IS NULL THEN NULL
            ELSE t.duration_ms END,
        CASE WHEN f.status_wins THEN excluded.output_results ELSE t.output_results END,
        CASE WHEN f.status_wins THEN excluded.error_message ELSE t.error_message END,
        CASE WHEN f.status_wins THEN excluded.failed_step ELSE t.failed_step END,
        CASE WHEN f.status_wins THEN excluded.state_event_at ELSE t.state_event_at END,
        CASE WHEN f.status_wins THEN excluded.state_event_id ELSE t.state_event_id END,
        CASE WHEN f.step_wins THEN excluded.current_step ELSE t.current_step END,
        {_sorted_steps("t.completed_steps", "excluded.completed_steps")},
        jsonb_build_object('{WORKFLOW_KEY}', jsonb_strip_nulls(jsonb_build_object(
            'started',
            CASE WHEN f.started_wins THEN f.incoming_started ELSE f.stored_started END,
            'step', CASE WHEN f.step_wins THEN f.incoming_step ELSE f.stored_step END
        ))),
        LEAST(t.created_at, excluded.created_at)
    FROM (
        SELECT p.*,
            -- The first STARTED supplies the facts (started_at is the LEAST anyway).
            p.incoming_started IS NOT NULL AND (p.stored_started IS NULL
                OR {_event_order("p.incoming_started")} < {_event_order("p.stored_started")})
                AS started_wins,
            p.incoming_step IS NOT NULL AND (p.stored_step IS NULL
                OR {_event_order("p.incoming_step")} > {_event_order("p.stored_step")})
                AS step_wins,
            {_STATUS_WINS} AS status_wins
        FROM (
            SELECT t.metadata->'{WORKFLOW_KEY}'->'started' AS stored_started,
                excluded.metadata->'{WORKFLOW_KEY}'->'started' AS incoming_started,
                t.metadata->'{WORKFLOW_KEY}'->'step' AS stored_step,
                excluded.metadata->'{WORKFLOW_KEY}'->'step' AS incoming_step
        ) AS p
    ) AS f
)
"""


# --- the workflow batch reduced to one input row per workflow --------------------------------


def _least_known(held: str | None, value: str | None) -> str | None:
    # The same rule as _fill_stand_in: min() compares code points, as COLLATE "C" does.
    if value is None:
        return held
    return value if held is None else min(held, value)


@dataclass
class _WorkflowInput:
    """Everything a batch says about one workflow_executions row."""

    first_at: datetime
    started: Item[WorkflowFact] | None = None
    status: Item[WorkflowFact] | None = None
    step: Item[WorkflowFact] | None = None
    steps: set[str] = field(default_factory=set)
    # Children's values for a placeholder (stand-ins until a STARTED arrives).
    any_operation_type: str | None = None
    any_entity_id: str | None = None
    any_correlation_id: str | None = None

    def add(self, item: Item[WorkflowFact]) -> None:
        fact = item.payload
        key = item.event.order_key
        self.first_at = min(self.first_at, item.event.at)
        self.any_operation_type = _least_known(self.any_operation_type, fact.operation_type)
        self.any_entity_id = _least_known(self.any_entity_id, fact.entity_id)
        self.any_correlation_id = _least_known(self.any_correlation_id, fact.correlation_id)
        if fact.kind == "STEP_COMPLETED":
            assert fact.step is not None  # noqa: S101 - parse requires it
            self.steps.add(fact.step)
            if self.step is None or key > self.step.event.order_key:
                self.step = item
            return
        if fact.kind == "STARTED" and (self.started is None or key < self.started.event.order_key):
            self.started = item
        if self.status is None or key > self.status.event.order_key:
            self.status = item


def _reduce_workflows(items: Sequence[Item[WorkflowFact]]) -> dict[str, _WorkflowInput]:
    workflows: dict[str, _WorkflowInput] = {}
    for item in items:
        workflow_id = item.payload.workflow_id
        row = workflows.get(workflow_id)
        if row is None:
            row = workflows[workflow_id] = _WorkflowInput(first_at=item.event.at)
        row.add(item)
    return workflows


def _event_pair(item: Item[WorkflowFact] | None) -> dict[str, str] | None:
    if item is None:
        return None
    return {"at": item.event.at.isoformat(), "id": str(item.event.event_id)}


_STATUS_OF: Final[Mapping[WorkflowKind, str]] = {
    "STARTED": "RUNNING",
    "COMPLETED": "COMPLETED",
    "FAILED": "FAILED",
}


def _workflow_columns(workflows: dict[str, _WorkflowInput]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for workflow_id, row in sorted(workflows.items()):
        started = row.started.payload if row.started else None
        status = row.status.payload if row.status else None
        terminal = status if status is not None and status.kind != "STARTED" else None
        bookkeeping = {
            key: value
            for key, value in (
                ("started", _event_pair(row.started)),
                ("step", _event_pair(row.step)),
            )
            if value is not None
        }
        if started is not None:
            operation_type = started.operation_type
            entity_id = started.entity_id
            correlation_id = started.correlation_id or workflow_id
        else:
            operation_type = row.any_operation_type or UNKNOWN_OPERATION_TYPE
            entity_id = row.any_entity_id or UNKNOWN_ENTITY_ID
            correlation_id = row.any_correlation_id or workflow_id
        values: list[Any] = [
            workflow_id,
            operation_type,
            entity_id,
            _STATUS_OF[status.kind] if status is not None else "RUNNING",
            row.step.payload.step if row.step else None,
            jsonb(sorted(row.steps)),
            terminal.failed_step if terminal else None,
            row.first_at,
            row.status.event.at if row.status and terminal else None,
            correlation_id,
            jsonb(started.input_payload) if started else None,
            jsonb(terminal.output_results) if terminal else None,
            terminal.error_message if terminal else None,
            jsonb({WORKFLOW_KEY: bookkeeping}),
            row.first_at,
            row.status.event.at if row.status else None,
            row.status.event.event_id if row.status else None,
        ]
        rows.append(values)
    return as_columns(rows, width=17)


class IntelligenceWorkflowsHandler:
    """Writes intelligence.workflow_executions. See the module docstring."""

    name = "intelligence_workflows"
    event_types = frozenset(
        {
            EventType.INTELLIGENCE_WORKFLOW_STARTED.value,
            EventType.INTELLIGENCE_WORKFLOW_STEP_COMPLETED.value,
            EventType.INTELLIGENCE_WORKFLOW_COMPLETED.value,
            EventType.INTELLIGENCE_WORKFLOW_FAILED.value,
        }
    )

    def parse(self, event: Event) -> WorkflowFact:
        return parse_workflow(event)

    async def apply(self, conn: asyncpg.Connection, items: Sequence[Item[WorkflowFact]]) -> None:
        workflows = _reduce_workflows(items)
        await conn.execute(_UPSERT_WORKFLOWS, *_workflow_columns(workflows))


INTELLIGENCE_WORKFLOWS: Final = IntelligenceWorkflowsHandler()
