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
  Which STARTED and which step event won is kept in columns of the sink's own (migration 020),
  started_event_at / started_event_id and step_event_at / step_event_id; metadata is not the
  sink's (it writes none). duration_ms is the seed's trigger's (completed_at - started_at,
  recomputed when started_at arrives later and moves earlier); the sink sets it NULL when a
  newer STARTED clears completed_at.
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
from handlers.base import Event, Item, jsonb
from handlers.envelope import EventType
from handlers.intelligence_fields import EntityId, Payload, correlation_text, validate
from handlers.sql import Unnest

# Column limits (migration 016).
WORKFLOW_ID_MAX_CHARS: Final = 255
OPERATION_TYPE_MAX_CHARS: Final = 50
STEP_MAX_CHARS: Final = 100

# A placeholder's stand-ins until a STARTED arrives (module docstring); _UPSERT_WORKFLOWS
# spells them too.
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


# --- SQL -------------------------------------------------------------------------------------

# One row per workflow of the batch (reduced in Python). On conflict each aspect's columns are
# those of the row, stored or the batch's (``excluded``), whose event wins it (``s``): the
# first STARTED, the newest step event, the newest status event. A placeholder's stand-ins
# give way to a child's value, and of two children's values the least (code point order, as
# the batch's own reduction in Python) wins: commutative and associative, so the children's
# arrival order does not show. duration_ms is the seed's trigger's whenever completed_at is
# set; it is cleared here when a newer STARTED clears completed_at, which the trigger leaves
# alone.
_UPSERT_WORKFLOWS: Final = Unnest(
    """
INSERT INTO intelligence.workflow_executions AS t (
    workflow_id, operation_type, entity_id, status, current_step, completed_steps,
    failed_step, started_at, completed_at, correlation_id, input_payload, output_results,
    error_message, created_at, state_event_at, state_event_id, started_event_at,
    started_event_id, step_event_at, step_event_id
)
SELECT *
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::text[],
    $8::timestamptz[], $9::timestamptz[], $10::text[], $11::jsonb[], $12::jsonb[],
    $13::text[], $14::timestamptz[], $15::timestamptz[], $16::uuid[], $17::timestamptz[],
    $18::uuid[], $19::timestamptz[], $20::uuid[]
) AS v(
    workflow_id, operation_type, entity_id, status, current_step, completed_steps,
    failed_step, started_at, completed_at, correlation_id, input_payload, output_results,
    error_message, created_at, state_event_at, state_event_id, started_event_at,
    started_event_id, step_event_at, step_event_id
)
ORDER BY v.workflow_id
ON CONFLICT (workflow_id) DO UPDATE SET (
    operation_type, entity_id, correlation_id, input_payload, started_event_at,
    started_event_id
) = (
    SELECT
        CASE WHEN s.started_event_id IS NOT NULL THEN s.operation_type
            ELSE COALESCE(known.operation_type, 'UNKNOWN') END,
        CASE WHEN s.started_event_id IS NOT NULL THEN s.entity_id
            ELSE COALESCE(known.entity_id, '') END,
        CASE WHEN s.started_event_id IS NOT NULL THEN s.correlation_id
            ELSE COALESCE(known.correlation_id, t.workflow_id) END,
        s.input_payload, s.started_event_at, s.started_event_id
    FROM (
        -- The first STARTED supplies the facts: the stored one unless it is newer.
        SELECT (CASE
            WHEN excluded.started_event_id IS NOT NULL AND (
                t.started_event_id IS NULL
                OR omnisink.newer(
                    t.started_event_at, t.started_event_id,
                    excluded.started_event_at, excluded.started_event_id
                )
            ) THEN excluded
            ELSE t
        END).*
    ) AS s, (
        -- Before any STARTED: the children's values, a stand-in counting as none.
        SELECT
            LEAST(NULLIF(t.operation_type, 'UNKNOWN') COLLATE "C",
                NULLIF(excluded.operation_type, 'UNKNOWN') COLLATE "C") AS operation_type,
            LEAST(NULLIF(t.entity_id, '') COLLATE "C",
                NULLIF(excluded.entity_id, '') COLLATE "C") AS entity_id,
            LEAST(NULLIF(t.correlation_id, t.workflow_id) COLLATE "C",
                NULLIF(excluded.correlation_id, t.workflow_id) COLLATE "C") AS correlation_id
    ) AS known
), (
    status, completed_at, duration_ms, output_results, error_message, failed_step,
    state_event_at, state_event_id
) = (
    SELECT s.status, s.completed_at,
        CASE WHEN w.wins AND s.completed_at IS NULL THEN NULL ELSE t.duration_ms END,
        s.output_results, s.error_message, s.failed_step, s.state_event_at, s.state_event_id
    FROM (
        SELECT excluded.state_event_id IS NOT NULL AND omnisink.newer(
            excluded.state_event_at, excluded.state_event_id,
            t.state_event_at, t.state_event_id
        ) AS wins
    ) AS w, LATERAL (SELECT (CASE WHEN w.wins THEN excluded ELSE t END).*) AS s
), (current_step, step_event_at, step_event_id) = (
    SELECT s.current_step, s.step_event_at, s.step_event_id
    FROM (
        SELECT (CASE
            WHEN excluded.step_event_id IS NOT NULL AND omnisink.newer(
                excluded.step_event_at, excluded.step_event_id,
                t.step_event_at, t.step_event_id
            ) THEN excluded
            ELSE t
        END).*
    ) AS s
),
completed_steps = (
    SELECT COALESCE(jsonb_agg(s.step ORDER BY s.step COLLATE "C"), '[]'::jsonb)
    FROM (
        SELECT jsonb_array_elements_text(COALESCE(t.completed_steps, '[]'::jsonb))
        UNION
        SELECT jsonb_array_elements_text(COALESCE(excluded.completed_steps, '[]'::jsonb))
    ) AS s(step)
),
started_at = LEAST(t.started_at, excluded.started_at),
created_at = LEAST(t.created_at, excluded.created_at)
""",
    name="intelligence_workflows.upsert_workflows",
)


# --- the batch reduced to one input row per workflow -----------------------------------------


def _least_known(held: str | None, value: str | None) -> str | None:
    # The SQL's rule for stand-ins: min() compares code points, as COLLATE "C" does.
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


_STATUS_OF: Final[Mapping[WorkflowKind, str]] = {
    "STARTED": "RUNNING",
    "COMPLETED": "COMPLETED",
    "FAILED": "FAILED",
}


def _workflow_row(workflow_id: str, row: _WorkflowInput) -> dict[str, Any]:
    started = row.started.payload if row.started else None
    status = row.status.payload if row.status else None
    terminal = status if status is not None and status.kind != "STARTED" else None
    if started is not None:
        operation_type = started.operation_type
        entity_id = started.entity_id
        correlation_id = started.correlation_id or workflow_id
    else:
        operation_type = row.any_operation_type or UNKNOWN_OPERATION_TYPE
        entity_id = row.any_entity_id or UNKNOWN_ENTITY_ID
        correlation_id = row.any_correlation_id or workflow_id
    return {
        "workflow_id": workflow_id,
        "operation_type": operation_type,
        "entity_id": entity_id,
        "status": _STATUS_OF[status.kind] if status is not None else "RUNNING",
        "current_step": row.step.payload.step if row.step else None,
        # Sorted by code point, as the SQL sorts them on conflict (COLLATE "C").
        "completed_steps": jsonb(sorted(row.steps)),
        "failed_step": terminal.failed_step if terminal else None,
        "started_at": row.first_at,
        "completed_at": row.status.event.at if row.status and terminal else None,
        "correlation_id": correlation_id,
        "input_payload": jsonb(started.input_payload) if started else None,
        "output_results": jsonb(terminal.output_results) if terminal else None,
        "error_message": terminal.error_message if terminal else None,
        "created_at": row.first_at,
        "state_event_at": row.status.event.at if row.status else None,
        "state_event_id": row.status.event.event_id if row.status else None,
        "started_event_at": row.started.event.at if row.started else None,
        "started_event_id": row.started.event.event_id if row.started else None,
        "step_event_at": row.step.event.at if row.step else None,
        "step_event_id": row.step.event.event_id if row.step else None,
    }


def _workflow_rows(items: Sequence[Item[WorkflowFact]]) -> list[dict[str, Any]]:
    workflows: dict[str, _WorkflowInput] = {}
    for item in items:
        workflow_id = item.payload.workflow_id
        row = workflows.get(workflow_id)
        if row is None:
            row = workflows[workflow_id] = _WorkflowInput(first_at=item.event.at)
        row.add(item)
    return [_workflow_row(workflow_id, row) for workflow_id, row in sorted(workflows.items())]


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
        rows = _workflow_rows(items)
        await conn.execute(_UPSERT_WORKFLOWS.sql, *_UPSERT_WORKFLOWS.args(rows))


INTELLIGENCE_WORKFLOWS: Final = IntelligenceWorkflowsHandler()
