"""The bridge workflows: ``workflow_executions``, ``workflow_steps`` and ``fsm_transitions``.

Events: WORKFLOW_STARTED / _COMPLETED / _FAILED, STEP_STARTED / _COMPLETED / _FAILED,
STATE_TRANSITION, HASH_GENERATED, ACTION, and the workflow half of INTELLIGENCE_RECEIVED (the
stamp half is the stamps handler's; one without ``workflow_id`` is a no-op here, not a reject).

Decisions (event contract sections 3 and 4):

- **The workflow id is the row id** (``id = workflow_id``), so steps and transitions reference
  their workflow without a lookup. A ``workflow_id`` that is not a UUID maps to its stable uuid5
  (``handlers.base.as_uuid``) and the text is kept in ``metadata.original_workflow_id``.
- **Every workflow an event names gets a row first.** A statement inserts a placeholder for each
  (``PENDING``, correlation_id = the workflow's uuid, ``started_at`` explicitly NULL, every
  ordering pair NULL), then one UPDATE merges the batch's facts into it. Splitting the insert
  from the merge keeps the merge readable (it needs flags that are not columns, which
  ``ON CONFLICT ... excluded`` cannot see) and makes a row created by a child and a row
  created by its STARTED the same thing. The merge locks every workflow row of the batch before
  the steps are written: two consumers writing steps of one workflow (two topics, two
  partitions) are serialised there, so the ``workflow_steps_executed`` recount each makes last
  sees the other's committed steps (READ COMMITTED takes a new snapshot per statement).
- **state** follows the newest (event time, event id) of STARTED -> PROCESSING,
  COMPLETED -> COMPLETED, FAILED -> FAILED, STATE_TRANSITION -> its ``to_state`` upper-cased.
  A placeholder's ``PENDING`` has a NULL ordering pair, so any real state wins.
- **Facts of one event type are written whenever that event arrives**, whatever the state
  ordering: STARTED sets input_data and started_at = LEAST; COMPLETED sets output_data and
  stamp_id, file_hash only while it is NULL, completed_at = GREATEST; FAILED sets error_info
  ``{"message": error, "code": error_type}`` and completed_at = GREATEST. Two STARTEDs (or two
  COMPLETEDs, two FAILEDs) of one workflow with different contents are a conflict: the last to
  arrive supplies the facts (within a batch, the newest).
- **input_data** of a workflow is the payload's ``input`` (else ``input_data``); when neither is
  given it is the payload minus the keys stored elsewhere or describing the event itself
  (``_STARTED_NOT_INPUT``). **output_data** likewise: ``output`` / ``output_data``, else the
  payload minus ``_COMPLETED_NOT_OUTPUT``. The bridge's producer sends no input key at all
  (``{"workflow_id", "status", "node_id", "timestamp"}``), so the remainder keeps what it sent.
- **ACTION** (the orchestrator's ``ORCHESTRATE_WORKFLOW`` request of an event-driven workflow)
  names its workflow in its inner ``payload``: ``workflow_id``, ``namespace``, ``input_data``.
  Its input_data is the workflow's input, whatever the order: the event-driven STARTED carries
  none, only the rest of its payload, which must not replace it. The newest ACTION that
  carries an input holds input_data (``action_event_at`` / ``action_event_id``, migration
  023); while none has, STARTED's rule above applies. Its namespace is like any other event's
  (below). Another action type, or one without an inner workflow_id, is event_logs only.
- **correlation_id, session_id, namespace**: a STARTED's values win; any other event of the
  workflow fills them only while they are unknown (correlation_id equal to the row's own id is
  the NOT NULL stand-in for "unknown"). Order-independent as long as the events that carry a
  value agree; when they do not, STARTED's still wins in every order.
- **hash aspect**: the newest HASH_GENERATED sets file_hash and hash_generation_time_ms (NULL when
  that event has none): a HASH_GENERATED's file_hash wins over a COMPLETED's in every order.
- **intelligence aspect**: the newest INTELLIGENCE_RECEIVED sets intelligence_data: the payload's
  ``intelligence_data``, else ``intelligence``, else the payload minus its ids
  (``_INTELLIGENCE_NOT_DATA``).
- **Steps** are keyed within their workflow by ``step_id``, else ``step_name`` (``step_key``);
  ``id = uuid5(FOREIGN_ID_NAMESPACE, f"{workflow_uuid}/{step_key}")`` so ids match across runs.
  A step event with a step_id and a step event of the same step with only its step_name are two
  steps: producers must name a step one way. status follows the newest event (RUNNING /
  COMPLETED / FAILED). step_name (else the step_id), step_type (else ``'unknown'``, which the
  bridge's producer also sends when it does not know), step_order and input_data (else
  ``{}``) hold their stand-in until an event that carries a real value fills them: the first
  real value wins, so the result is order-independent when the events agree.
  started_at = LEAST of STEP_STARTED times (NULL without one); completed_at = GREATEST of
  COMPLETED/FAILED times, and output_data and execution_time_ms are those of that latest
  terminal event, so a failed-then-retried step shows its final attempt in any order. A
  STEP_FAILED without ``output`` stores ``{"error": error, "error_type": error_type}`` as its
  output: the table has no error column and the reason must not be lost.
- **step_order** no event sent is the step's rank within its workflow, 1, 2, ..., by the
  step's earliest event (event time, then event id; ``order_event_at`` / ``order_event_id``),
  among all the workflow's steps: the bridge's orchestrator sends none, and its steps' events
  follow each other in time. ``step_order_ranked`` says the column holds that rank, so a
  producer's value (0 included) that arrives later replaces it. The rank is one SQL function,
  ``omnisink.step_ranks`` (migration 023), asked for every workflow whose steps the batch
  touched, after the steps are written, like the recount below: a late step that happened
  earlier moves its successors up, and any order or batching of the same steps gives the
  same ranks.
- **workflow_steps_executed** is recounted (steps with status COMPLETED) for every workflow whose
  steps the batch touched, after the steps are written: a count, not an increment, so
  redelivery and order cannot skew it.
- **fsm_transitions**: one row per STATE_TRANSITION, ``id = event_id``; from_state and to_state
  are required and upper-cased; transition_at = event time; triggered_by from the payload (the
  bridge's producer sends none: NULL); metadata = the payload's ``metadata`` object.
- **Durations** (execution_time_ms, generation_time_ms) may arrive as fractional milliseconds
  (producers compute them from ``perf_counter``): they are rounded to the nearest integer, a
  half away from zero (``handlers.fields.rounded_ms``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final, TypeVar
from uuid import UUID, uuid5

import asyncpg
from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from handlers import fields
from handlers.base import Event, Item, Reject, as_uuid, jsonb
from handlers.envelope import FOREIGN_ID_NAMESPACE, EventType
from handlers.sql import Sql, Unnest

# Column limits (migrations 001-003, 009, 012).
STATE_MAX_CHARS: Final = 50
NAMESPACE_MAX_CHARS: Final = 200
STAMP_ID_MAX_CHARS: Final = 255
FILE_HASH_MAX_CHARS: Final = 64
STEP_KEY_MAX_CHARS: Final = 255
STEP_NAME_MAX_CHARS: Final = 100
STEP_TYPE_MAX_CHARS: Final = 50
TRIGGERED_BY_MAX_CHARS: Final = 100

# Stand-ins of the NOT NULL step columns until an event carries the real value (step_order's
# only until the batch's ranking replaces it).
UNKNOWN_STEP_TYPE: Final = "unknown"
UNKNOWN_STEP_ORDER: Final = 0

PLACEHOLDER_STATE: Final = "PENDING"
# The ACTION that requests a workflow run (any case).
ORCHESTRATE_WORKFLOW: Final = "ORCHESTRATE_WORKFLOW"
_STATE_OF: Final[Mapping[str, str]] = {
    EventType.WORKFLOW_STARTED: "PROCESSING",
    EventType.WORKFLOW_COMPLETED: "COMPLETED",
    EventType.WORKFLOW_FAILED: "FAILED",
}
_STEP_STATUS_OF: Final[Mapping[str, str]] = {
    EventType.STEP_STARTED: "RUNNING",
    EventType.STEP_COMPLETED: "COMPLETED",
    EventType.STEP_FAILED: "FAILED",
}

# Payload keys that are not the workflow's input / output / intelligence when the payload has
# no explicit key for it: ids and columns stored elsewhere, and fields describing the event
# itself (its own timestamp, the status its type already says).
_STARTED_NOT_INPUT: Final = frozenset(
    {"workflow_id", "namespace", "correlation_id", "session_id", "timestamp", "status"}
)
_COMPLETED_NOT_OUTPUT: Final = frozenset(
    {
        "workflow_id",
        "namespace",
        "correlation_id",
        "session_id",
        "timestamp",
        "status",
        "stamp_id",
        "file_hash",
    }
)
_INTELLIGENCE_NOT_DATA: Final = frozenset(fields.INTELLIGENCE_NOT_DATA)

_SCHEMA_MESSAGE_MAX_ERRORS: Final = 3


# --- payload models ------------------------------------------------------------------------


Namespace = Annotated[str, StringConstraints(max_length=NAMESPACE_MAX_CHARS)]
StampId = Annotated[fields.IdText, StringConstraints(max_length=STAMP_ID_MAX_CHARS)]
FileHash = Annotated[str, StringConstraints(max_length=FILE_HASH_MAX_CHARS)]
StepKey = Annotated[fields.IdText, StringConstraints(max_length=STEP_KEY_MAX_CHARS)]
StepName = Annotated[str, StringConstraints(max_length=STEP_NAME_MAX_CHARS)]
StepType = Annotated[str, StringConstraints(max_length=STEP_TYPE_MAX_CHARS)]
State = Annotated[str, AfterValidator(fields.upper(STATE_MAX_CHARS))]
TriggeredBy = Annotated[str, StringConstraints(max_length=TRIGGERED_BY_MAX_CHARS)]


class _Payload(BaseModel):
    # Producers we do not control add fields: extra keys are allowed and ignored.
    model_config = ConfigDict(extra="allow", frozen=True)

    workflow_id: fields.IdText | None = None
    namespace: Namespace | None = None


class _StartedPayload(_Payload):
    input: Any = None
    input_data: Any = None


class _CompletedPayload(_Payload):
    stamp_id: StampId | None = None
    file_hash: FileHash | None = None
    output: Any = None
    output_data: Any = None


class _FailedPayload(_Payload):
    error: Any = None
    error_type: Any = None


class _StepPayload(_Payload):
    step_id: StepKey | None = None
    step_name: StepName | None = None
    step_type: StepType | None = None
    step_order: fields.Int4 | None = None
    input: Any = None
    input_data: Any = None
    output: Any = None
    output_data: Any = None
    execution_time_ms: fields.Millis | None = None
    error: Any = None
    error_type: Any = None


class _TransitionPayload(_Payload):
    from_state: State
    to_state: State
    triggered_by: TriggeredBy | None = None
    metadata: dict[str, Any] | None = None


class _HashPayload(_Payload):
    file_hash: FileHash
    generation_time_ms: fields.NonNegativeMillis | None = None
    hash_generation_time_ms: fields.NonNegativeMillis | None = None


class _IntelligencePayload(_Payload):
    intelligence_data: Any = None
    intelligence: Any = None


class _OrchestrationRequest(_Payload):
    input_data: Any = None


class _ActionPayload(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    payload: _OrchestrationRequest


# --- parsed events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkflowRef:
    """The workflow an event belongs to."""

    uuid: UUID
    # The producer's text when it was not a UUID (kept in the row's metadata).
    original_id: str | None
    namespace: str | None


@dataclass(frozen=True, slots=True)
class Started:
    workflow: WorkflowRef
    input_data: Any


@dataclass(frozen=True, slots=True)
class Completed:
    workflow: WorkflowRef
    output_data: Any
    stamp_id: str | None
    file_hash: str | None


@dataclass(frozen=True, slots=True)
class Failed:
    workflow: WorkflowRef
    error_info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Step:
    workflow: WorkflowRef
    status: str
    step_key: str
    # The step_name, else the step_id (the stand-in that a later step_name replaces).
    step_name: str
    step_type: str | None
    step_order: int | None
    input_data: Any
    output_data: Any
    execution_time_ms: int | None


@dataclass(frozen=True, slots=True)
class Transition:
    workflow: WorkflowRef
    from_state: str
    to_state: str
    triggered_by: str | None
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HashGenerated:
    workflow: WorkflowRef
    file_hash: str
    generation_time_ms: int | None


@dataclass(frozen=True, slots=True)
class IntelligenceReceived:
    workflow: WorkflowRef
    intelligence_data: Any


@dataclass(frozen=True, slots=True)
class Action:
    workflow: WorkflowRef
    # None: the request carries no input (it may still name the namespace).
    input_data: Any


Fact = (
    Started | Completed | Failed | Step | Transition | HashGenerated | IntelligenceReceived | Action
)
# None: an INTELLIGENCE_RECEIVED for a stamp only, or an ACTION that is not a workflow's
# request: nothing for this handler to write.
Parsed = Fact | None

_M = TypeVar("_M", bound=_Payload)


def _validate(model: type[_M], payload: dict[str, Any]) -> _M:
    return fields.validate(model, payload, max_errors=_SCHEMA_MESSAGE_MAX_ERRORS)


def _ref(model: _Payload) -> WorkflowRef | None:
    text = fields.present(model.workflow_id)
    if text is None:
        return None
    uuid = as_uuid(text)
    original = None if _is_uuid(text) else text
    return WorkflowRef(uuid=uuid, original_id=original, namespace=fields.present(model.namespace))


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def _required_ref(model: _Payload) -> WorkflowRef:
    ref = _ref(model)
    if ref is None:
        raise Reject("schema", "workflow_id: missing or blank (required)")
    return ref


def _first_given(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _rest(payload: dict[str, Any], excluded: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in excluded}


def _real_input(value: Any) -> Any:
    # An empty object is the column's "no input" stand-in, not a value that could win.
    return None if value is None or value == {} else value


def step_uuid(workflow: UUID, step_key: str) -> UUID:
    """The id of a step: the same (workflow, step_key) gives the same id in every run."""
    return uuid5(FOREIGN_ID_NAMESPACE, f"{workflow}/{step_key}")


def _parse_step(event: Event) -> Step:
    model = _validate(_StepPayload, event.payload)
    ref = _required_ref(model)
    step_id = fields.present(model.step_id)
    step_name = fields.present(model.step_name)
    step_key = step_id if step_id is not None else step_name
    if step_key is None:
        raise Reject("schema", "step_id: missing (required, or step_name)")
    if step_name is None and len(step_key) > STEP_NAME_MAX_CHARS:
        raise Reject(
            "schema",
            f"step_name: missing, and step_id (its stand-in) is longer than "
            f"{STEP_NAME_MAX_CHARS} characters",
        )
    status = _STEP_STATUS_OF[event.event_type]
    output = _first_given(model.output, model.output_data)
    if output is None and status == "FAILED" and model.error is not None:
        output = {"error": model.error, "error_type": model.error_type}
    step_type = fields.present(model.step_type)
    return Step(
        workflow=ref,
        status=status,
        step_key=step_key,
        step_name=step_name if step_name is not None else step_key,
        step_type=step_type if step_type != UNKNOWN_STEP_TYPE else None,
        step_order=model.step_order,
        input_data=_real_input(_first_given(model.input, model.input_data)),
        output_data=output,
        execution_time_ms=model.execution_time_ms,
    )


def _parse_started(event: Event) -> Started:
    model = _validate(_StartedPayload, event.payload)
    given = _first_given(model.input, model.input_data)
    return Started(
        workflow=_required_ref(model),
        input_data=given if given is not None else _rest(event.payload, _STARTED_NOT_INPUT),
    )


def _parse_completed(event: Event) -> Completed:
    model = _validate(_CompletedPayload, event.payload)
    given = _first_given(model.output, model.output_data)
    return Completed(
        workflow=_required_ref(model),
        output_data=given if given is not None else _rest(event.payload, _COMPLETED_NOT_OUTPUT),
        stamp_id=fields.present(model.stamp_id),
        file_hash=fields.present(model.file_hash),
    )


def _parse_failed(event: Event) -> Failed:
    model = _validate(_FailedPayload, event.payload)
    return Failed(
        workflow=_required_ref(model),
        error_info={"message": model.error, "code": model.error_type},
    )


def _parse_transition(event: Event) -> Transition:
    model = _validate(_TransitionPayload, event.payload)
    return Transition(
        workflow=_required_ref(model),
        from_state=model.from_state,
        to_state=model.to_state,
        triggered_by=fields.present(model.triggered_by),
        metadata=model.metadata or {},
    )


def _parse_hash(event: Event) -> HashGenerated:
    model = _validate(_HashPayload, event.payload)
    file_hash = fields.present(model.file_hash)
    if file_hash is None:
        raise Reject("schema", "file_hash: must not be blank")
    return HashGenerated(
        workflow=_required_ref(model),
        file_hash=file_hash,
        generation_time_ms=_first_given(model.generation_time_ms, model.hash_generation_time_ms),
    )


def _parse_intelligence(event: Event) -> IntelligenceReceived | None:
    model = _validate(_IntelligencePayload, event.payload)
    ref = _ref(model)
    if ref is None:
        return None  # a stamp's intelligence only: the stamps handler's part of the event
    data = _first_given(model.intelligence_data, model.intelligence)
    return IntelligenceReceived(
        workflow=ref,
        intelligence_data=data
        if data is not None
        else _rest(event.payload, _INTELLIGENCE_NOT_DATA),
    )


def _parse_action(event: Event) -> Action | None:
    action_type = event.payload.get("action_type", event.envelope.metadata.get("action_type"))
    if not isinstance(action_type, str) or action_type.strip().upper() != ORCHESTRATE_WORKFLOW:
        return None  # another action: not a workflow's request
    if not isinstance(event.payload.get("payload"), dict):
        return None
    request = fields.validate(
        _ActionPayload, event.payload, max_errors=_SCHEMA_MESSAGE_MAX_ERRORS
    ).payload
    ref = _ref(request)
    if ref is None:
        return None
    return Action(workflow=ref, input_data=_real_input(request.input_data))


_PARSERS: Final[Mapping[str, Callable[[Event], Parsed]]] = {
    EventType.WORKFLOW_STARTED: _parse_started,
    EventType.WORKFLOW_COMPLETED: _parse_completed,
    EventType.WORKFLOW_FAILED: _parse_failed,
    EventType.STEP_STARTED: _parse_step,
    EventType.STEP_COMPLETED: _parse_step,
    EventType.STEP_FAILED: _parse_step,
    EventType.STATE_TRANSITION: _parse_transition,
    EventType.HASH_GENERATED: _parse_hash,
    EventType.INTELLIGENCE_RECEIVED: _parse_intelligence,
    EventType.ACTION: _parse_action,
}


def parse(event: Event) -> Parsed:
    """Validate one event's payload into the facts this handler writes (pure)."""
    return _PARSERS[event.event_type](event)


# --- the batch reduced to one input row per target row ------------------------------------


@dataclass
class _WorkflowInput:
    """Everything a batch says about one workflow row."""

    original_id: str | None = None
    # The first value any event of the batch carries (fills an unknown only).
    any_correlation_id: UUID | None = None
    any_session_id: UUID | None = None
    any_namespace: str | None = None
    started: Item[Started] | None = None
    started_at: datetime | None = None
    completed: Item[Completed] | None = None
    failed: Item[Failed] | None = None
    completed_at: datetime | None = None
    state: tuple[tuple[datetime, UUID], str] | None = None
    hashed: Item[HashGenerated] | None = None
    intelligence: Item[IntelligenceReceived] | None = None
    # The newest ACTION that carries an input.
    action: Item[Action] | None = None


@dataclass
class _StepInput:
    """Everything a batch says about one step row."""

    workflow: UUID
    step_key: str
    step_name: str
    status: tuple[tuple[datetime, UUID], str]
    # The step's earliest event: its rank among the workflow's steps when no event sent one.
    first: tuple[datetime, UUID]
    step_type: str | None = None
    step_order: int | None = None
    input_data: Any = None
    started_at: datetime | None = None
    terminal: Item[Step] | None = None


_T = TypeVar("_T")


def _newer(held: Item[_T] | None, item: Item[_T]) -> Item[_T]:
    return item if held is None or item.event.order_key > held.event.order_key else held


def _least(a: datetime | None, b: datetime) -> datetime:
    return b if a is None else min(a, b)


def _greatest(a: datetime | None, b: datetime) -> datetime:
    return b if a is None else max(a, b)


@dataclass
class _Batch:
    workflows: dict[UUID, _WorkflowInput] = field(default_factory=dict)
    steps: dict[tuple[UUID, str], _StepInput] = field(default_factory=dict)
    transitions: list[Item[Transition]] = field(default_factory=list)

    def workflow(self, item: Item[Any], ref: WorkflowRef) -> _WorkflowInput:
        row = self.workflows.setdefault(ref.uuid, _WorkflowInput())
        env = item.event.envelope
        row.original_id = row.original_id or ref.original_id
        row.any_correlation_id = row.any_correlation_id or env.correlation_id
        row.any_session_id = row.any_session_id or env.session_id
        row.any_namespace = row.any_namespace or ref.namespace
        return row

    def state(self, row: _WorkflowInput, item: Item[Any], state: str) -> None:
        key = item.event.order_key
        if row.state is None or key > row.state[0]:
            row.state = (key, state)

    def add(self, item: Item[Fact]) -> None:
        fact = item.payload
        row = self.workflow(item, fact.workflow)
        at = item.event.at
        if isinstance(fact, Started):
            row.started = _newer(row.started, Item(item.event, fact))
            row.started_at = _least(row.started_at, at)
            self.state(row, item, _STATE_OF[item.event.event_type])
        elif isinstance(fact, Completed):
            row.completed = _newer(row.completed, Item(item.event, fact))
            row.completed_at = _greatest(row.completed_at, at)
            self.state(row, item, _STATE_OF[item.event.event_type])
        elif isinstance(fact, Failed):
            row.failed = _newer(row.failed, Item(item.event, fact))
            row.completed_at = _greatest(row.completed_at, at)
            self.state(row, item, _STATE_OF[item.event.event_type])
        elif isinstance(fact, Transition):
            self.transitions.append(Item(item.event, fact))
            self.state(row, item, fact.to_state)
        elif isinstance(fact, HashGenerated):
            row.hashed = _newer(row.hashed, Item(item.event, fact))
        elif isinstance(fact, IntelligenceReceived):
            row.intelligence = _newer(row.intelligence, Item(item.event, fact))
        elif isinstance(fact, Action):
            if fact.input_data is not None:
                row.action = _newer(row.action, Item(item.event, fact))
        else:
            self.add_step(Item(item.event, fact))

    def add_step(self, item: Item[Step]) -> None:
        # The same rules as the steps upsert's ON CONFLICT branch, so one batch holding several
        # events of a step gives what the same events in several batches give.
        step = item.payload
        key = (step.workflow.uuid, step.step_key)
        status = (item.event.order_key, step.status)
        row = self.steps.get(key)
        if row is None:
            row = self.steps[key] = _StepInput(
                workflow=step.workflow.uuid,
                step_key=step.step_key,
                step_name=step.step_name,
                status=status,
                first=item.event.order_key,
            )
        else:
            row.first = min(row.first, item.event.order_key)
            if status[0] > row.status[0]:
                row.status = status
        if row.step_name == row.step_key:
            row.step_name = step.step_name
        row.step_type = row.step_type or step.step_type
        if row.step_order is None:
            row.step_order = step.step_order
        if row.input_data is None:
            row.input_data = step.input_data
        if step.status == "RUNNING":
            row.started_at = _least(row.started_at, item.event.at)
        else:
            row.terminal = _newer(row.terminal, item)


def _reduce(items: Sequence[Item[Parsed]]) -> _Batch:
    batch = _Batch()
    for item in items:
        if item.payload is not None:
            batch.add(Item(item.event, item.payload))
    return batch


# --- SQL ---------------------------------------------------------------------------------------

# Every workflow the batch names, as a placeholder when it has no row yet. Constant per workflow
# (no event's values), so which event created the row never shows; the merge below fills it.
# started_at is explicitly NULL: its DEFAULT NOW() would make replays differ.
_INSERT_PLACEHOLDERS = Unnest(
    """
INSERT INTO workflow_executions (id, workflow_id, correlation_id, state, started_at, metadata)
SELECT p.id, p.id, p.id, $3::text, NULL, p.metadata::jsonb
FROM unnest($1::uuid[], $2::text[]) AS p(id, metadata)
ORDER BY p.id
ON CONFLICT (id) DO NOTHING
""",
    name="workflows.insert_placeholders",
    extra=("state",),
)

# One UPDATE per batch merging each workflow's reduced input. Every SET expression reads the
# row as it was before this statement. Runs for every workflow of the batch even when nothing
# changes: the row lock it takes orders concurrent batches of one workflow (module docstring).
# m says, once per row, which ordered aspects the input moves: an aspect moves when the input has
# an event of it (its pair is not NULL) newer than the stored pair (omnisink.newer: a NULL stored
# pair, a placeholder's, is moved by any event).
_MERGE_WORKFLOWS = Unnest(
    """
UPDATE workflow_executions AS t SET
    correlation_id = CASE
        WHEN i.started_correlation_id IS NOT NULL THEN i.started_correlation_id
        WHEN t.correlation_id = t.id THEN COALESCE(i.any_correlation_id, t.correlation_id)
        ELSE t.correlation_id
    END,
    session_id = COALESCE(i.started_session_id, t.session_id, i.any_session_id),
    namespace = COALESCE(i.started_namespace, t.namespace, i.any_namespace),
    started_at = LEAST(t.started_at, i.started_at),
    output_data = COALESCE(i.output_data::jsonb, t.output_data),
    stamp_id = COALESCE(i.stamp_id, t.stamp_id),
    error_info = COALESCE(i.error_info::jsonb, t.error_info),
    completed_at = GREATEST(t.completed_at, i.completed_at),
    (state, state_event_at, state_event_id, file_hash, hash_generation_time_ms, hash_event_at,
     hash_event_id, intelligence_data, intelligence_event_at, intelligence_event_id, input_data,
     action_event_at, action_event_id) = (
        SELECT CASE WHEN m.state THEN i.state ELSE t.state END,
               CASE WHEN m.state THEN i.state_event_at ELSE t.state_event_at END,
               CASE WHEN m.state THEN i.state_event_id ELSE t.state_event_id END,
               CASE WHEN m.hash THEN i.hash_file_hash
                    ELSE COALESCE(t.file_hash, i.completed_file_hash) END,
               CASE WHEN m.hash THEN i.hash_generation_time_ms
                    ELSE t.hash_generation_time_ms END,
               CASE WHEN m.hash THEN i.hash_event_at ELSE t.hash_event_at END,
               CASE WHEN m.hash THEN i.hash_event_id ELSE t.hash_event_id END,
               CASE WHEN m.intelligence THEN i.intelligence_data::jsonb
                    ELSE t.intelligence_data END,
               CASE WHEN m.intelligence THEN i.intelligence_event_at
                    ELSE t.intelligence_event_at END,
               CASE WHEN m.intelligence THEN i.intelligence_event_id
                    ELSE t.intelligence_event_id END,
               -- An ACTION's input, once there is one, is never replaced by a STARTED's.
               CASE WHEN m.action THEN i.action_input_data::jsonb
                    WHEN t.action_event_at IS NOT NULL THEN t.input_data
                    ELSE COALESCE(i.input_data::jsonb, t.input_data) END,
               CASE WHEN m.action THEN i.action_event_at ELSE t.action_event_at END,
               CASE WHEN m.action THEN i.action_event_id ELSE t.action_event_id END
        FROM (
            SELECT i.state_event_at IS NOT NULL AND omnisink.newer(
                       i.state_event_at, i.state_event_id, t.state_event_at, t.state_event_id
                   ) AS state,
                   i.hash_event_at IS NOT NULL AND omnisink.newer(
                       i.hash_event_at, i.hash_event_id, t.hash_event_at, t.hash_event_id
                   ) AS hash,
                   i.intelligence_event_at IS NOT NULL AND omnisink.newer(
                       i.intelligence_event_at, i.intelligence_event_id,
                       t.intelligence_event_at, t.intelligence_event_id
                   ) AS intelligence,
                   i.action_event_at IS NOT NULL AND omnisink.newer(
                       i.action_event_at, i.action_event_id, t.action_event_at, t.action_event_id
                   ) AS action
        ) AS m
    )
FROM unnest(
    $1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::uuid[], $6::uuid[], $7::text[],
    $8::timestamptz[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
    $14::timestamptz[], $15::text[], $16::timestamptz[], $17::uuid[], $18::text[],
    $19::integer[], $20::timestamptz[], $21::uuid[], $22::text[], $23::timestamptz[],
    $24::uuid[], $25::text[], $26::timestamptz[], $27::uuid[]
) AS i(
    id, started_correlation_id, started_session_id, started_namespace, any_correlation_id,
    any_session_id, any_namespace, started_at, input_data, output_data, stamp_id,
    completed_file_hash, error_info, completed_at, state, state_event_at, state_event_id,
    hash_file_hash, hash_generation_time_ms, hash_event_at, hash_event_id, intelligence_data,
    intelligence_event_at, intelligence_event_id, action_input_data, action_event_at,
    action_event_id
)
WHERE t.id = i.id
""",
    name="workflows.merge",
)

# One row per step. The stand-ins ('unknown', the step_id as name, '{}' input, a ranked
# step_order) are replaced by the first real value; output_data and execution_time_ms follow the
# latest terminal event (the one completed_at shows); status follows the newest event (m.status:
# every input row has a status event, newer than the stored pair or not); the order pair is the
# step's earliest event (o.earlier).
_UPSERT_STEPS = Unnest(
    """
INSERT INTO workflow_steps AS t (
    id, workflow_id, step_key, step_name, step_type, step_order, step_order_ranked,
    input_data, output_data, status, started_at, completed_at, execution_time_ms,
    status_event_at, status_event_id, order_event_at, order_event_id
)
SELECT s.id, s.workflow_id, s.step_key, s.step_name, s.step_type, s.step_order,
    s.step_order_ranked, COALESCE(s.input_data::jsonb, '{}'::jsonb),
    COALESCE(s.output_data::jsonb, '{}'::jsonb), s.status, s.started_at, s.completed_at,
    s.execution_time_ms, s.status_event_at, s.status_event_id, s.order_event_at,
    s.order_event_id
FROM unnest(
    $1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::integer[], $7::boolean[],
    $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[],
    $13::integer[], $14::timestamptz[], $15::uuid[], $16::timestamptz[], $17::uuid[]
) AS s(
    id, workflow_id, step_key, step_name, step_type, step_order, step_order_ranked,
    input_data, output_data, status, started_at, completed_at, execution_time_ms,
    status_event_at, status_event_id, order_event_at, order_event_id
)
ORDER BY s.workflow_id, s.step_key
ON CONFLICT (workflow_id, step_key) DO UPDATE SET
    step_name = CASE WHEN t.step_name = t.step_key THEN excluded.step_name
        ELSE t.step_name END,
    step_type = CASE WHEN t.step_type = 'unknown' THEN excluded.step_type
        ELSE t.step_type END,
    step_order = CASE WHEN t.step_order_ranked AND NOT excluded.step_order_ranked
        THEN excluded.step_order ELSE t.step_order END,
    step_order_ranked = t.step_order_ranked AND excluded.step_order_ranked,
    (order_event_at, order_event_id) = (
        SELECT CASE WHEN o.earlier THEN excluded.order_event_at ELSE t.order_event_at END,
               CASE WHEN o.earlier THEN excluded.order_event_id ELSE t.order_event_id END
        FROM (
            -- The input's earliest event is earlier when the stored one is newer than it (or
            -- there is none: a row another writer made).
            SELECT t.order_event_at IS NULL OR omnisink.newer(
                       t.order_event_at, t.order_event_id,
                       excluded.order_event_at, excluded.order_event_id
                   ) AS earlier
        ) AS o
    ),
    input_data = CASE WHEN COALESCE(t.input_data, '{}'::jsonb) = '{}'::jsonb
        THEN excluded.input_data ELSE t.input_data END,
    started_at = LEAST(t.started_at, excluded.started_at),
    completed_at = GREATEST(t.completed_at, excluded.completed_at),
    output_data = CASE WHEN excluded.completed_at IS NOT NULL
            AND (t.completed_at IS NULL OR excluded.completed_at >= t.completed_at)
        THEN excluded.output_data ELSE t.output_data END,
    execution_time_ms = CASE WHEN excluded.completed_at IS NOT NULL
            AND (t.completed_at IS NULL OR excluded.completed_at >= t.completed_at)
        THEN excluded.execution_time_ms ELSE t.execution_time_ms END,
    (status, status_event_at, status_event_id) = (
        SELECT CASE WHEN m.status THEN excluded.status ELSE t.status END,
               CASE WHEN m.status THEN excluded.status_event_at ELSE t.status_event_at END,
               CASE WHEN m.status THEN excluded.status_event_id ELSE t.status_event_id END
        FROM (
            SELECT omnisink.newer(excluded.status_event_at, excluded.status_event_id,
                                  t.status_event_at, t.status_event_id) AS status
        ) AS m
    )
""",
    name="workflows.upsert_steps",
)

# A per-event table: the event id is the row id, so a replay is a no-op.
_INSERT_TRANSITIONS = Unnest(
    """
INSERT INTO fsm_transitions (
    id, workflow_id, from_state, to_state, transition_at, triggered_by, metadata
)
SELECT id, workflow_id, from_state, to_state, transition_at, triggered_by, metadata::jsonb
FROM unnest(
    $1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[]
) AS f(id, workflow_id, from_state, to_state, transition_at, triggered_by, metadata)
ON CONFLICT (id) DO NOTHING
""",
    name="workflows.insert_transitions",
)

# Every step whose step_order no event sent takes its rank among its workflow's steps, the one
# rule omnisink.step_ranks declares (migration 023): recomputed from the rows, so order and
# batching cannot skew it.
_RANK_STEPS = Sql(
    """
UPDATE workflow_steps AS t
SET step_order = r.step_order
FROM omnisink.step_ranks($1::uuid[]) AS r
WHERE t.id = r.id AND t.step_order_ranked AND t.step_order IS DISTINCT FROM r.step_order
""",
    name="workflows.rank_steps",
)

# A recount, not an increment: order and redelivery cannot skew it.
_RECOUNT_STEPS_EXECUTED = Unnest(
    """
UPDATE workflow_executions AS t
SET workflow_steps_executed = c.completed_steps
FROM (
    SELECT w.id, count(s.id) FILTER (WHERE s.status = 'COMPLETED') AS completed_steps
    FROM unnest($1::uuid[]) AS w(id)
    LEFT JOIN workflow_steps AS s ON s.workflow_id = w.id
    GROUP BY w.id
) AS c
WHERE t.id = c.id AND t.workflow_steps_executed IS DISTINCT FROM c.completed_steps
""",
    name="workflows.recount_steps_executed",
)


def _original_metadata(original_id: str | None) -> str:
    return jsonb({} if original_id is None else {"original_workflow_id": original_id}) or "{}"


class WorkflowsHandler:
    """Writes the bridge's workflow tables. See the module docstring for the decisions."""

    name = "workflows"
    event_types: frozenset[str] = frozenset(str(t) for t in _PARSERS)

    def parse(self, event: Event) -> Parsed:
        return parse(event)

    async def apply(self, conn: asyncpg.Connection, items: Sequence[Item[Parsed]]) -> None:
        batch = _reduce(items)
        if not batch.workflows:
            return
        # Sorted ids: concurrent batches lock shared workflow rows in one order, which makes
        # deadlocks between them unlikely (a deadlock would still only be retried).
        ids = sorted(batch.workflows)
        placeholders = [
            {"id": i, "metadata": _original_metadata(batch.workflows[i].original_id)} for i in ids
        ]
        await conn.execute(
            _INSERT_PLACEHOLDERS.sql,
            *_INSERT_PLACEHOLDERS.args(placeholders, state=PLACEHOLDER_STATE),
        )
        merged = [_merge_row(i, batch.workflows[i]) for i in ids]
        await conn.execute(_MERGE_WORKFLOWS.sql, *_MERGE_WORKFLOWS.args(merged))
        if batch.steps:
            steps = [_step_row(batch.steps[key]) for key in sorted(batch.steps)]
            await conn.execute(_UPSERT_STEPS.sql, *_UPSERT_STEPS.args(steps))
        if batch.transitions:
            transitions = [_transition_row(t) for t in batch.transitions]
            await conn.execute(_INSERT_TRANSITIONS.sql, *_INSERT_TRANSITIONS.args(transitions))
        if batch.steps:
            touched_ids = sorted({workflow for workflow, _ in batch.steps})
            await conn.execute(_RANK_STEPS.sql, touched_ids)
            touched = [{"id": w} for w in touched_ids]
            await conn.execute(_RECOUNT_STEPS_EXECUTED.sql, *_RECOUNT_STEPS_EXECUTED.args(touched))


def _merge_row(workflow_id: UUID, row: _WorkflowInput) -> dict[str, Any]:
    """A workflow's reduced input as the merge's ``i(...)`` row."""
    started = row.started.payload if row.started else None
    started_env = row.started.event.envelope if row.started else None
    completed = row.completed.payload if row.completed else None
    hashed = row.hashed
    intelligence = row.intelligence
    action = row.action
    return {
        "id": workflow_id,
        "started_correlation_id": started_env.correlation_id if started_env else None,
        "started_session_id": started_env.session_id if started_env else None,
        "started_namespace": started.workflow.namespace if started else None,
        "any_correlation_id": row.any_correlation_id,
        "any_session_id": row.any_session_id,
        "any_namespace": row.any_namespace,
        "started_at": row.started_at,
        "input_data": jsonb(started.input_data) if started else None,
        "output_data": jsonb(completed.output_data) if completed else None,
        "stamp_id": completed.stamp_id if completed else None,
        "completed_file_hash": completed.file_hash if completed else None,
        "error_info": jsonb(row.failed.payload.error_info) if row.failed else None,
        "completed_at": row.completed_at,
        "state": row.state[1] if row.state else None,
        "state_event_at": row.state[0][0] if row.state else None,
        "state_event_id": row.state[0][1] if row.state else None,
        "hash_file_hash": hashed.payload.file_hash if hashed else None,
        "hash_generation_time_ms": hashed.payload.generation_time_ms if hashed else None,
        "hash_event_at": hashed.event.at if hashed else None,
        "hash_event_id": hashed.event.event_id if hashed else None,
        "intelligence_data": (
            jsonb(intelligence.payload.intelligence_data) if intelligence else None
        ),
        "intelligence_event_at": intelligence.event.at if intelligence else None,
        "intelligence_event_id": intelligence.event.event_id if intelligence else None,
        "action_input_data": jsonb(action.payload.input_data) if action else None,
        "action_event_at": action.event.at if action else None,
        "action_event_id": action.event.event_id if action else None,
    }


def _step_row(row: _StepInput) -> dict[str, Any]:
    """A step's reduced input as the steps upsert's ``s(...)`` row."""
    terminal = row.terminal
    return {
        "id": step_uuid(row.workflow, row.step_key),
        "workflow_id": row.workflow,
        "step_key": row.step_key,
        "step_name": row.step_name,
        "step_type": row.step_type or UNKNOWN_STEP_TYPE,
        "step_order": UNKNOWN_STEP_ORDER if row.step_order is None else row.step_order,
        "step_order_ranked": row.step_order is None,
        "input_data": jsonb(row.input_data),
        "output_data": jsonb(terminal.payload.output_data) if terminal else None,
        "status": row.status[1],
        "started_at": row.started_at,
        "completed_at": terminal.event.at if terminal else None,
        "execution_time_ms": terminal.payload.execution_time_ms if terminal else None,
        "status_event_at": row.status[0][0],
        "status_event_id": row.status[0][1],
        "order_event_at": row.first[0],
        "order_event_id": row.first[1],
    }


def _transition_row(item: Item[Transition]) -> dict[str, Any]:
    transition = item.payload
    return {
        "id": item.event.event_id,
        "workflow_id": transition.workflow.uuid,
        "from_state": transition.from_state,
        "to_state": transition.to_state,
        "transition_at": item.event.at,
        "triggered_by": transition.triggered_by,
        "metadata": jsonb(transition.metadata),
    }


WORKFLOWS: Final = WorkflowsHandler()
