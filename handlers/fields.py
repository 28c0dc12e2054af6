"""What the handlers' payload models share: field types, validators and the schema reject.

Every handler validates its payloads with pydantic and turns a :class:`~pydantic.ValidationError`
into a ``schema`` :class:`~handlers.base.Reject` (contract section 5). The rules that do not
depend on a table live here, once, so that the families cannot drift apart:

- :func:`schema_reject` / :func:`validate`: the reject message (field paths and pydantic's
  reasons, never the value);
- text rules: :func:`not_blank`, :func:`present`, :func:`upper` (names stored upper case),
  :func:`int_as_text` / :func:`number_as_text` (an id sent as a JSON number);
- numbers and times: the INTEGER / BIGINT bounds, :data:`Int4`, durations in milliseconds
  (:data:`Millis`, :data:`NonNegativeMillis`), :data:`UtcDatetime`;
- :data:`INTELLIGENCE_NOT_DATA`: the payload keys of an INTELLIGENCE_RECEIVED that are not its
  intelligence data, which the workflows and the stamps handler must read alike.

Column lengths (``VARCHAR(n)``) stay with the handler of their table: the same name can have
another limit in another table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Final, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, ValidationError

from handlers.base import Reject

# PostgreSQL INTEGER and BIGINT.
INT4_MIN: Final = -(2**31)
INT4_MAX: Final = 2**31 - 1
INT8_MAX: Final = 2**63 - 1

# How many of a payload's problems a schema reject names by default (stamps, nodes,
# bridge_states). The workflows and intelligence handlers name 3: a parameter, so that every
# family's dead-letter messages stay what they were.
SCHEMA_MESSAGE_MAX_ERRORS: Final = 5

# Keys of an INTELLIGENCE_RECEIVED payload that are not its intelligence data when it has no
# ``intelligence_data`` / ``intelligence`` key: its ids (handlers/workflows.py reads the payload
# in Python, handlers/stamps.py in SQL, passing this tuple to omnisink.newest_intelligence; both
# use this tuple, so a workflow and its stamp show the same data).
INTELLIGENCE_NOT_DATA: Final = (
    "workflow_id",
    "namespace",
    "correlation_id",
    "session_id",
    "timestamp",
    "stamp_id",
    "file_hash",
)


# --- the schema reject ---------------------------------------------------------------------------


def schema_reject(exc: ValidationError, *, max_errors: int = SCHEMA_MESSAGE_MAX_ERRORS) -> Reject:
    """A ``schema`` reject naming the first ``max_errors`` problems of a payload.

    Field paths and pydantic's reasons only: never the value (it may be large or secret).
    """
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in error["loc"]) or "payload"
        reason = "missing (required)" if error["type"] == "missing" else error["msg"]
        problems.append(f"{where}: {reason}")
    shown = "; ".join(problems[:max_errors])
    if len(problems) > max_errors:
        shown += f"; and {len(problems) - max_errors} more"
    return Reject("schema", shown)


M = TypeVar("M", bound=BaseModel)


def validate(
    model: type[M], payload: dict[str, Any], *, max_errors: int = SCHEMA_MESSAGE_MAX_ERRORS
) -> M:
    """``model`` validated from ``payload``; a :func:`schema_reject` when it is not valid."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise schema_reject(exc, max_errors=max_errors) from None


# --- text ----------------------------------------------------------------------------------------


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def present(text: str | None) -> str | None:
    """The text, or None when it is missing or blank: a blank id is no id (mapping "" would
    merge every producer that sends it)."""
    return text if text is not None and text.strip() else None


def upper(limit: int | None = None) -> Callable[[str], str]:
    """A validator: the text stripped and upper-cased, not blank, at most ``limit`` characters
    (no limit: None)."""

    def check(value: str) -> str:
        text = value.strip().upper()
        if not text:
            raise ValueError("must not be blank")
        # Checked after upper-casing: it can lengthen a string ('ß' -> 'SS').
        if limit is not None and len(text) > limit:
            raise ValueError(f"longer than {limit} characters")
        return text

    return check


# Two rules for ids sent as JSON numbers, kept apart on purpose because they accept different
# payloads: workflows and bridge_states take an integer as its decimal text and reject a float;
# the intelligence handlers take a float too ("1.5"). (stamps and nodes take any number through
# pydantic's ``coerce_numbers_to_str``.) One rule for all would change which events are
# dead-lettered.


def int_as_text(value: Any) -> Any:
    """An integer (not a boolean) as its decimal text: an id sent as a JSON number is the same
    id as its decimal text. Anything else as given."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def number_as_text(value: Any) -> Any:
    """An integer or a float (not a boolean) as its text; anything else as given."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


# Text that may arrive as an integer (int_as_text).
IdText = Annotated[str, BeforeValidator(int_as_text)]
# Text that may arrive as any number (number_as_text).
NumberText = Annotated[str, BeforeValidator(number_as_text)]


# --- numbers and times ---------------------------------------------------------------------------


def rounded_ms(value: Any) -> Any:
    """Durations computed from perf_counter arrive as fractional milliseconds (also as
    strings): rounded to the nearest integer, a half away from zero (``2.5`` is 3, as
    PostgreSQL rounds a numeric, not to even as Python's ``round`` does). The half is judged
    on the decimal text the producer sent (a float's shortest form), so ``1.005`` is not
    taken for the binary number just below it. Anything else as given."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, float) and math.isfinite(value):
        return int(Decimal(repr(value)).to_integral_value(rounding=ROUND_HALF_UP))
    return value


def utc(value: datetime) -> datetime:
    """The time in UTC; a time without a zone is taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside the range of dates once converted to UTC") from None


Int4 = Annotated[int, Field(ge=INT4_MIN, le=INT4_MAX)]
# Milliseconds in an INTEGER column, rounded (rounded_ms).
Millis = Annotated[int, BeforeValidator(rounded_ms), Field(ge=INT4_MIN, le=INT4_MAX)]
NonNegativeMillis = Annotated[int, BeforeValidator(rounded_ms), Field(ge=0, le=INT4_MAX)]
UtcDatetime = Annotated[datetime, AfterValidator(utc)]
