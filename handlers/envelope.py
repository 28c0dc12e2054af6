"""The wire format: one Kafka record value decoded and validated into an :class:`Envelope`.

``decode`` is the only entry point the consumer needs. For any bytes it either returns an
``Envelope`` or raises :class:`DecodeError` whose ``kind`` is the dead-letter kind of the
contract (section 5): ``decode`` (not UTF-8, not JSON, or content PostgreSQL cannot store),
``schema`` (valid JSON that is not an envelope) or ``oversize``.

Decisions (event contract sections 2, 3 and 5):

- **Non-UUID correlation and session ids are not errors.** Producers we do not control send
  free-form ids (``"req-42"``). Such a string maps to ``uuid5(FOREIGN_ID_NAMESPACE, text)``, so
  the same text always gives the same UUID and events stay correlated, and the text itself is
  kept in ``original_correlation_id`` / ``original_session_id``. An empty or blank string is
  treated as absent: mapping it would correlate every event that sends ``""``.
- **NUL (``\\u0000``) is a ``decode`` error**, wherever it is (key or value, at any depth):
  PostgreSQL ``text`` and ``jsonb`` refuse it, so the event could never be written. The message
  names the JSON path. Lone UTF-16 surrogates are rejected by orjson itself (escaped or raw).
- **Integers outside the 64-bit range are a ``decode`` error.** orjson does not reject them: it
  silently turns them into (rounded) floats. A sink must not store a different number than was
  sent, so an integer literal outside ``[-2**63, 2**64 - 1]`` (what orjson keeps exactly) is
  refused with its JSON path. Float literals (``1e30``) are floats and are kept.
- **Timestamps.** ``event_timestamp``, or the legacy ``timestamp`` when ``event_timestamp`` is
  absent or null (when both are sent, ``timestamp`` is kept in ``extra``). ISO 8601 strings, or
  numbers since the epoch as ``time.time()`` sends them. Numbers follow pydantic's rule: seconds
  up to ``2e10`` (year 2603), milliseconds beyond, so Java and JavaScript producers'
  milliseconds work too. A timestamp without a zone is UTC; every timestamp is returned in UTC.
- **event_type** is stored in ``event_logs.event_type VARCHAR(100)``: blank or longer than 100
  characters once normalised is a ``schema`` error. An unknown type is valid (kept in
  ``event_logs`` only); see :func:`normalize_event_type`. The text as sent is kept in
  ``original_event_type`` when it is not the stored name (``stamp_workflow_started``,
  ``fsm.state.changed``, any unknown type not already in canonical form).
- A UTF-8 byte order mark before the JSON is ignored (RFC 8259 allows parsers to do so).
- Unknown top-level fields are kept in ``extra``, never an error.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, Self
from uuid import UUID, uuid5

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

DecodeErrorKind = Literal["decode", "schema", "oversize"]

# The uuid5 namespace of ids that arrive as free text. Never change it: the UUIDs derived from
# it are stored, and a new namespace would split every correlation in two.
FOREIGN_ID_NAMESPACE = UUID("6972b912-a5e8-4e74-8711-9a624b999a46")

# event_logs.event_type is VARCHAR(100) (seed table, migration 011).
EVENT_TYPE_MAX_CHARS = 100

# orjson keeps integers in [-2**63, 2**64 - 1] exactly and rounds anything else to a float.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

_UTF8_BOM = b"\xef\xbb\xbf"
# A NUL can only reach a decoded string through the escape `\u0000` (a raw 0x00 byte is a
# control character orjson refuses), so this byte test is a cheap exact pre-filter.
_NUL_ESCAPE = b"\\u0000"
# The deepest nesting of objects and arrays an event may have: the sink re-encodes payloads
# with orjson (which stops at 254 levels) and nests parts of them one or two levels deeper.
MAX_NESTING = 200
# Every integer literal outside the 64-bit range has at least 19 digits; a run that long is
# rare, so only such values pay for the exact scan below. Masking digits to "0" and the rest
# to " " with bytes.translate, then searching, is ~20x faster than a regex over small values.
_DIGIT_MASK = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_DIGIT_RUN = b"0" * 19
# Over a document orjson has accepted: skip each string whole, and capture each integer
# literal of 19+ digits (not part of a fraction or an exponent).
_STRING_OR_LONG_INT = re.compile(
    rb'"[^"\\]*(?:\\.[^"\\]*)*"|(?<![\d.eE+-])(-?\d{19,})(?![\d.eE])', re.DOTALL
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH_KEY_MAX_CHARS = 40
_MESSAGE_MAX_ERRORS = 5
_MESSAGE_MAX_CHARS = 300


class EventType(StrEnum):
    """The canonical event types of the contract (section 3). Values equal names."""

    WORKFLOW_STARTED = "WORKFLOW_STARTED"
    WORKFLOW_COMPLETED = "WORKFLOW_COMPLETED"
    WORKFLOW_FAILED = "WORKFLOW_FAILED"
    STEP_STARTED = "STEP_STARTED"
    STEP_COMPLETED = "STEP_COMPLETED"
    STEP_FAILED = "STEP_FAILED"
    STATE_TRANSITION = "STATE_TRANSITION"
    STAMP_CREATED = "STAMP_CREATED"
    HASH_GENERATED = "HASH_GENERATED"
    INTELLIGENCE_REQUESTED = "INTELLIGENCE_REQUESTED"
    INTELLIGENCE_RECEIVED = "INTELLIGENCE_RECEIVED"
    NODE_INTROSPECTION = "NODE_INTROSPECTION"
    NODE_HEARTBEAT = "NODE_HEARTBEAT"
    REGISTRY_REQUEST_INTROSPECTION = "REGISTRY_REQUEST_INTROSPECTION"
    AGGREGATION_STARTED = "AGGREGATION_STARTED"
    AGGREGATION_COMPLETED = "AGGREGATION_COMPLETED"
    AGGREGATION_FAILED = "AGGREGATION_FAILED"
    BATCH_PROCESSED = "BATCH_PROCESSED"
    STATE_PERSISTED = "STATE_PERSISTED"
    FSM_STATE_INITIALIZED = "FSM_STATE_INITIALIZED"
    FSM_STATE_TRANSITIONED = "FSM_STATE_TRANSITIONED"
    FSM_STATE_TRANSITION = "FSM_STATE_TRANSITION"
    LEASE_ACQUIRED = "LEASE_ACQUIRED"
    LEASE_RELEASED = "LEASE_RELEASED"
    INTELLIGENCE_WORKFLOW_STARTED = "INTELLIGENCE_WORKFLOW_STARTED"
    INTELLIGENCE_WORKFLOW_STEP_COMPLETED = "INTELLIGENCE_WORKFLOW_STEP_COMPLETED"
    INTELLIGENCE_WORKFLOW_COMPLETED = "INTELLIGENCE_WORKFLOW_COMPLETED"
    INTELLIGENCE_WORKFLOW_FAILED = "INTELLIGENCE_WORKFLOW_FAILED"
    # The orchestrator's request to run an event-driven workflow (EventBus, `action.v1`).
    ACTION = "ACTION"
    # Kept in event_logs only: no table needs them, but they are the producers' own traffic, so
    # OMNISINK_UNKNOWN_EVENTS=dlq must not dead-letter them. The stamping service's validations
    # and batches (`metadata.stamp.validated`, `metadata.batch.processed`; not the reducer's
    # BATCH_PROCESSED), the intelligence adapter's code-analysis results, and the intelligence
    # reducer's FSM_<state> intents for an entity entering a final state.
    STAMP_VALIDATED = "STAMP_VALIDATED"
    STAMP_BATCH_PROCESSED = "STAMP_BATCH_PROCESSED"
    CODE_ANALYSIS_COMPLETED = "CODE_ANALYSIS_COMPLETED"
    CODE_ANALYSIS_FAILED = "CODE_ANALYSIS_FAILED"
    FSM_INDEXED = "FSM_INDEXED"
    FSM_COMPLETED = "FSM_COMPLETED"
    FSM_STORED = "FSM_STORED"
    FSM_FAILED = "FSM_FAILED"


# The producers' enum values (contract section 3). The dotted legacy names and the topic slugs
# fold onto these: `metadata.stamp.created` and `metadata-stamp-created` both fold to
# METADATA_STAMP_CREATED. Every canonical name is also its own alias.
_PRODUCER_ALIASES: dict[str, EventType] = {
    "stamp_workflow_started": EventType.WORKFLOW_STARTED,
    "stamp_workflow_completed": EventType.WORKFLOW_COMPLETED,
    "stamp_workflow_failed": EventType.WORKFLOW_FAILED,
    # The contract names only workflow_step_completed; its two siblings follow the same form.
    "workflow_step_started": EventType.STEP_STARTED,
    "workflow_step_completed": EventType.STEP_COMPLETED,
    "workflow_step_failed": EventType.STEP_FAILED,
    "workflow_state_transition": EventType.STATE_TRANSITION,
    "metadata_stamp_created": EventType.STAMP_CREATED,
    "blake3_hash_generated": EventType.HASH_GENERATED,
    "onextree_intelligence_requested": EventType.INTELLIGENCE_REQUESTED,
    "onextree_intelligence_received": EventType.INTELLIGENCE_RECEIVED,
    "fsm_state_changed": EventType.FSM_STATE_TRANSITION,
    "metadata_stamp_validated": EventType.STAMP_VALIDATED,
    "metadata_batch_processed": EventType.STAMP_BATCH_PROCESSED,
    # The adapter's event_type is `omninode.intelligence.event.code_analysis_completed.v1`; the
    # trailing `.v1` is dropped by normalize_event_type like a topic slug's.
    "omninode_intelligence_event_code_analysis_completed": EventType.CODE_ANALYSIS_COMPLETED,
    "omninode_intelligence_event_code_analysis_failed": EventType.CODE_ANALYSIS_FAILED,
}
_VERSION_SUFFIX = re.compile(r"_V\d+\Z")


def _fold(raw: str) -> str:
    return raw.strip().upper().replace(".", "_").replace("-", "_")


_ALIASES: dict[str, str] = {member.value: member.value for member in EventType} | {
    _fold(alias): member.value for alias, member in _PRODUCER_ALIASES.items()
}


def normalize_event_type(raw: str) -> str:
    """The canonical name of an event type given in any form the producers use.

    Case-insensitive; ``.`` and ``-`` count as ``_``, so the canonical names, the producers' enum
    values (``stamp_workflow_started``), the dotted legacy names (``metadata.stamp.created``,
    ``fsm.state.changed``) and the topic slugs (``stamp-workflow-started``, also with the topic's
    ``.v1`` suffix) all give the canonical name. An unknown type comes back folded the same way
    (``my.custom-event`` gives ``MY_CUSTOM_EVENT``): it is a valid event, kept in event_logs only.
    """
    folded = _fold(raw)
    canonical = _ALIASES.get(folded)
    if canonical is not None:
        return canonical
    stem = _VERSION_SUFFIX.sub("", folded)
    return _ALIASES.get(stem, folded)


# EventType's members by name, built once: ``EventType.__members__`` builds a new mapping proxy
# on every access, and the lookup runs for every record.
_TYPES: dict[str, EventType] = dict(EventType.__members__)


def is_known(event_type: str) -> bool:
    """Whether ``event_type`` (in any accepted form) is one of the canonical types."""
    return normalize_event_type(event_type) in _TYPES


def foreign_id_to_uuid(text: str) -> UUID:
    """The stable UUID standing for an id that arrived as free text."""
    return uuid5(FOREIGN_ID_NAMESPACE, text)


_UUID = TypeAdapter(UUID)
_FOREIGN_ID_FIELDS = (
    ("correlation_id", "original_correlation_id"),
    ("session_id", "original_session_id"),
)


def _is_uuid_text(text: str) -> bool:
    # The same parser as event_id's, so "is a UUID" means one thing in this module.
    try:
        _UUID.validate_python(text)
    except ValidationError:
        return False
    return True


class Envelope(BaseModel):
    """One event as the producers send it (contract section 2), validated.

    Build it from a decoded JSON object with :meth:`from_wire` (or from bytes with
    :func:`decode`): that is where the legacy ``timestamp`` and unknown fields are handled.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID
    event_type: str
    event_timestamp: datetime
    envelope_version: str | None = None
    event_version: str | None = None
    source_node_id: str | None = None
    source_service: str | None = None
    source_version: str | None = None
    source_instance: str | None = None
    environment: str | None = None
    region: str | None = None
    partition_key: str | None = None
    correlation_id: UUID | None = None
    causation_id: str | None = None
    session_id: UUID | None = None
    payload: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Unknown top-level fields, kept as sent.
    extra: dict[str, Any] = Field(default_factory=dict)
    # Set only when the wire id was not a UUID; the field above then holds its uuid5.
    original_correlation_id: str | None = None
    original_session_id: str | None = None
    # The wire's event_type when it is not the canonical name stored in event_type (an alias, a
    # folded form, a type the topic refined): what the producer sent, kept in event_logs.
    original_event_type: str | None = None

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Self:
        """Validate a decoded JSON object. Raises ``pydantic.ValidationError``."""
        fields: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in obj.items():
            if key in _WIRE_FIELDS:
                fields[key] = value
            else:
                extra[key] = value
        if fields.get("event_timestamp") is None and "timestamp" in extra:
            fields["event_timestamp"] = extra.pop("timestamp")
        fields["extra"] = extra
        return cls.model_validate(fields)

    @property
    def known_type(self) -> EventType | None:
        """The event's type as an :class:`EventType`, or None for a type the sink does not know."""
        return _TYPES.get(self.event_type)

    def with_type(self, event_type: str) -> Self:
        """This envelope as ``event_type`` (a refinement by topic), keeping the wire's name."""
        return self.model_copy(
            update={
                "event_type": event_type,
                "original_event_type": self.original_event_type or self.event_type,
            }
        )

    @model_validator(mode="before")
    @classmethod
    def _original_type(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "original_event_type" in data:
            return data
        raw = data.get("event_type")
        if not isinstance(raw, str) or normalize_event_type(raw) == raw:
            return data  # the canonical name itself, or a wrong type that validation reports
        return {**data, "original_event_type": raw}

    @model_validator(mode="before")
    @classmethod
    def _foreign_ids(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        mapped: dict[str, Any] | None = None
        for name, original_name in _FOREIGN_ID_FIELDS:
            value = data.get(name)
            if not isinstance(value, str) or _is_uuid_text(value):
                continue  # absent, a UUID, or a wrong type that field validation reports
            if mapped is None:
                mapped = dict(data)
            if value.strip():
                mapped[name] = foreign_id_to_uuid(value)
                mapped[original_name] = value
            else:
                mapped[name] = None
        return data if mapped is None else mapped

    @field_validator("event_type")
    @classmethod
    def _canonical_type(cls, value: str) -> str:
        canonical = normalize_event_type(value)
        if not canonical:
            raise PydanticCustomError("event_type_blank", "must not be blank")
        if len(canonical) > EVENT_TYPE_MAX_CHARS:
            raise PydanticCustomError(
                "event_type_too_long",
                "is {length} characters once normalised; event_logs.event_type holds at most "
                "{limit}",
                {"length": len(canonical), "limit": EVENT_TYPE_MAX_CHARS},
            )
        return canonical

    @field_validator("event_timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:
            # 0001-01-01T00:00+01:00 is a valid datetime whose UTC instant is not.
            raise PydanticCustomError(
                "datetime_utc_range", "is outside the range of dates once converted to UTC"
            ) from None

    @field_validator("metadata", mode="before")
    @classmethod
    def _null_metadata(cls, value: Any) -> Any:
        return {} if value is None else value


# The top-level fields the wire may carry (``timestamp`` is handled by Envelope.from_wire).
_DERIVED_FIELDS = frozenset(
    {"extra", "original_correlation_id", "original_session_id", "original_event_type"}
)
_WIRE_FIELDS = frozenset(Envelope.model_fields) - _DERIVED_FIELDS


class DecodeError(Exception):
    """A record value that is not a valid event. Permanent: the record is dead-lettered.

    ``kind`` is the contract's dead-letter kind; ``message`` says what was wrong and where,
    never quoting the value itself.
    """

    def __init__(self, kind: DecodeErrorKind, message: str) -> None:
        super().__init__(kind, message)
        self.kind: DecodeErrorKind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


def decode(value: bytes | None, *, max_bytes: int) -> Envelope:
    """Decode one record value. Returns an :class:`Envelope` or raises :class:`DecodeError`."""
    if value is None:
        raise DecodeError(
            "schema", "tombstone (null value): a record without a value is not an event"
        )
    size = len(value)
    if size > max_bytes:
        raise DecodeError(
            "oversize",
            f"value is {size} bytes, over the limit of {max_bytes} bytes "
            "(OMNISINK_MAX_MESSAGE_BYTES)",
        )
    if value.startswith(_UTF8_BOM):
        value = value[len(_UTF8_BOM) :]
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _not_json(value, exc) from exc
    if not isinstance(obj, dict):
        raise DecodeError(
            "schema", f"value is a JSON {_json_kind(obj)}, not an object: an event is an object"
        )
    if _NUL_ESCAPE in value:
        _reject_nul(obj)
    if _LONG_DIGIT_RUN in value.translate(_DIGIT_MASK):
        _reject_wide_ints(value, obj)
    if value.count(b"[") + value.count(b"{") > MAX_NESTING:
        _reject_deep(obj)
    try:
        return Envelope.from_wire(obj)
    except ValidationError as exc:
        raise DecodeError("schema", _schema_message(exc)) from exc


def _not_json(value: bytes, exc: orjson.JSONDecodeError) -> DecodeError:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as bad:
        return DecodeError(
            "decode", f"value is not valid UTF-8 (byte offset {bad.start}: {bad.reason})"
        )
    return DecodeError("decode", f"value is not valid JSON: {exc}")


def _json_kind(obj: object) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "boolean"
    if isinstance(obj, int | float):
        return "number"
    if isinstance(obj, str):
        return "string"
    if isinstance(obj, list):
        return "array"
    return "object"


def _path(parts: tuple[str | int, ...]) -> str:
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
            continue
        shown = part if len(part) <= _PATH_KEY_MAX_CHARS else part[:_PATH_KEY_MAX_CHARS] + "…"
        if _IDENTIFIER.fullmatch(part):
            out.append(f".{shown}")
        else:
            out.append(f"[{orjson.dumps(shown).decode()}]")
    return "".join(out)


def _reject_nul(obj: dict[str, Any]) -> None:
    # Iterative: orjson accepts nesting up to 1024 levels, deeper than Python's recursion limit.
    stack: list[tuple[object, tuple[str | int, ...]]] = [(obj, ())]
    while stack:
        node, parts = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                raise DecodeError(
                    "decode",
                    f"NUL character (\\u0000) in the string at {_path(parts)}: "
                    "PostgreSQL text and jsonb cannot store it",
                )
        elif isinstance(node, dict):
            for key, child in node.items():
                if "\x00" in key:
                    raise DecodeError(
                        "decode",
                        f"NUL character (\\u0000) in a key at {_path((*parts, key))}: "
                        "PostgreSQL text and jsonb cannot store it",
                    )
                stack.append((child, (*parts, key)))
        elif isinstance(node, list):
            stack.extend((child, (*parts, i)) for i, child in enumerate(node))


def _reject_deep(obj: dict[str, Any]) -> None:
    # Iterative, like _reject_nul; only called when the value has enough brackets to be deep.
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise DecodeError(
                "decode",
                f"JSON nested deeper than {MAX_NESTING} levels: the sink cannot store it "
                "(its JSON encoder stops at 254)",
            )
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)


def _reject_wide_ints(value: bytes, obj: dict[str, Any]) -> None:
    for match in _STRING_OR_LONG_INT.finditer(value):
        literal = match.group(1)
        if literal is None:
            continue  # a string
        digits = len(literal) - literal.startswith(b"-")
        # Over 20 digits is out of range for sure (and int() refuses over 4300 digits).
        if digits <= 20 and _INT_MIN <= int(literal) <= _INT_MAX:
            continue
        # orjson decoded the literal to this float; find where it sits, to name the field.
        rounded = float(literal)
        where = _find_float(obj, rounded)
        place = f"at {_path(where)}" if where is not None else f"at byte {match.start(1)}"
        raise DecodeError(
            "decode",
            f"integer of {digits} digits {place} is outside the 64-bit range the sink stores "
            "exactly; send it as a string (or a float) instead",
        )


def _find_float(obj: dict[str, Any], target: float) -> tuple[str | int, ...] | None:
    # Depth-first in document order (children pushed reversed), so the first hit is the first
    # occurrence, the one the byte scan found.
    stack: list[tuple[object, tuple[str | int, ...]]] = [(obj, ())]
    while stack:
        node, parts = stack.pop()
        if isinstance(node, float) and node == target:
            return parts
        if isinstance(node, dict):
            stack.extend((child, (*parts, key)) for key, child in reversed(node.items()))
        elif isinstance(node, list):
            stack.extend((node[i], (*parts, i)) for i in range(len(node) - 1, -1, -1))
    return None


def _schema_message(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(part) for part in error["loc"]) or "envelope"
        if loc == "event_timestamp":
            loc = "event_timestamp (or legacy timestamp)"
        msg = "missing (required)" if error["type"] == "missing" else error["msg"]
        problem = f"{loc}: {msg}"
        if len(problem) > _MESSAGE_MAX_CHARS:
            problem = problem[:_MESSAGE_MAX_CHARS] + "…"
        problems.append(problem)
    shown = "; ".join(problems[:_MESSAGE_MAX_ERRORS])
    if len(problems) > _MESSAGE_MAX_ERRORS:
        shown += f"; and {len(problems) - _MESSAGE_MAX_ERRORS} more"
    return f"not a valid event envelope: {shown}"
