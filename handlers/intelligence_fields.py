"""What the two intelligence handlers share (seed 003, schema ``intelligence``).

``handlers/intelligence_fsm.py`` writes ``fsm_state`` and ``fsm_state_history``;
``handlers/intelligence_workflows.py`` writes ``workflow_executions``. Both read their payloads
alike, so the rules they share are here, once:

- **correlation text**: the envelope's correlation id as sent (the original text when it was
  not a UUID); a text longer than the 255-character columns is stored as its stable UUID (what
  event_logs holds), not rejected: it is tracing, not the event's content.
- **Payloads**: producers we do not control add fields: extra keys are allowed and ignored. Ids
  sent as numbers are their decimal text. A schema reject names at most 3 problems.
- **Event time, not write time**: every time column comes from events; updated_at is the
  seed's trigger's (NOW()).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from handlers import fields
from handlers.envelope import Envelope

# Column limits (migrations 014-016): entity_id and correlation_id of every intelligence table.
ENTITY_ID_MAX_CHARS: Final = 255
CORRELATION_ID_MAX_CHARS: Final = 255

_SCHEMA_MESSAGE_MAX_ERRORS: Final = 3

EntityId = Annotated[
    fields.NumberText,
    StringConstraints(max_length=ENTITY_ID_MAX_CHARS),
    AfterValidator(fields.not_blank),
]


class Payload(BaseModel):
    """An intelligence event's payload: extra keys allowed and ignored."""

    model_config = ConfigDict(extra="allow", frozen=True)


_M = TypeVar("_M", bound=Payload)


def validate(model: type[_M], payload: dict[str, Any]) -> _M:
    """``model`` validated from ``payload``; a ``schema`` reject naming 3 problems at most."""
    return fields.validate(model, payload, max_errors=_SCHEMA_MESSAGE_MAX_ERRORS)


def correlation_text(envelope: Envelope) -> str | None:
    """The envelope's correlation id as text: as sent, or its UUID when too long to store."""
    original = envelope.original_correlation_id
    if original is not None and len(original) <= CORRELATION_ID_MAX_CHARS:
        return original
    return None if envelope.correlation_id is None else str(envelope.correlation_id)
