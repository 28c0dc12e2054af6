"""An error nobody classified, raised while one record is judged (decoding it, a handler's
parse, building its dead letter), becomes that record's ``internal`` dead letter, with the
error's class, message and traceback; the other records of the batch go on."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from consumer.deadletters import from_exception
from consumer.store import batch
from consumer.store.batch import Batch, Internal, route
from handlers.base import Event, Item


def _record(offset: int, node_id: str) -> ConsumerRecord[bytes, bytes]:
    value = orjson.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "event_type": "NODE_HEARTBEAT",
            "event_timestamp": "2026-01-01T00:00:00Z",
            "payload": {"node_id": node_id, "node_type": "reducer", "health_status": "healthy"},
        }
    )
    return ConsumerRecord("t.v1", 0, offset, 0, 0, b"k", value, None, 1, len(value), [])


def _batch(*node_ids: str) -> Batch:
    records = [_record(offset, node_id) for offset, node_id in enumerate(node_ids)]
    return Batch.decode({TopicPartition("t.v1", 0): records}, max_bytes=1 << 20, keep_unknown=True)


def test_an_error_while_decoding_one_record_is_its_internal_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = batch.resolve

    def resolve_with_a_bug(envelope: Any, topic: str) -> Any:
        if envelope.payload["node_id"] == "boom":
            raise RuntimeError("a bug in resolve")
        return real(envelope, topic)

    monkeypatch.setattr(batch, "resolve", resolve_with_a_bug)
    decoded = _batch("a", "boom", "c")
    assert [e.offset for e in decoded.events] == [0, 2]
    [letter] = decoded.refused
    assert (letter.kind, letter.source) == ("internal", ("t.v1", 0, 1))
    assert letter.error_class == "builtins.RuntimeError"
    assert letter.message == "a bug in resolve"
    assert letter.stacktrace is not None
    assert "resolve_with_a_bug" in letter.stacktrace


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise ValueError("no text")


def _raise_unprintable() -> None:
    raise _UnprintableError


def test_a_dead_letter_is_built_even_for_an_error_that_cannot_be_printed() -> None:
    with pytest.raises(_UnprintableError) as caught:
        _raise_unprintable()
    letter = from_exception(_record(0, "a"), "internal", caught.value)
    assert letter.error_class.endswith("_UnprintableError")
    assert letter.message == "<_UnprintableError that cannot be printed: ValueError>"
    assert letter.stacktrace is not None


def test_an_error_building_a_records_dead_letter_is_its_internal_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []
    real = batch.from_exception

    def from_exception_with_a_bug(record: Any, kind: Any, exc: BaseException, **kw: Any) -> Any:
        built.append(kind)
        if kind != "internal":
            raise RuntimeError("a bug building the letter")
        return real(record, kind, exc, **kw)

    monkeypatch.setattr(batch, "from_exception", from_exception_with_a_bug)
    not_json = ConsumerRecord("t.v1", 0, 0, 0, 0, b"k", b"{not json", None, 1, 9, [])
    decoded = Batch.decode(
        {TopicPartition("t.v1", 0): [not_json]}, max_bytes=1 << 20, keep_unknown=True
    )
    [letter] = decoded.refused
    assert built == ["decode", "internal"]
    assert (letter.kind, letter.message) == ("internal", "a bug building the letter")


class _ParseWithABug:
    """A handler whose parse trips on one node's events."""

    name = "parse_with_a_bug"
    event_types = frozenset({"NODE_HEARTBEAT"})

    def parse(self, event: Event) -> dict[str, Any]:
        if event.payload["node_id"] == "boom":
            return {"missing": event.payload["no_such_field"]}
        return event.payload

    async def apply(self, conn: Any, items: Sequence[Item[dict[str, Any]]]) -> None:
        raise AssertionError("not called here")


def test_an_error_in_a_handlers_parse_is_the_events_internal_dead_letter() -> None:
    decoded = _batch("a", "boom", "c")
    _, rejected, kept, _ = route(decoded.events, [_ParseWithABug()])
    assert [e.offset for e in kept] == [0, 2]
    [(event, reason)] = rejected
    assert event.offset == 1
    assert isinstance(reason, Internal)
    letter = decoded.letter(event, reason)
    assert (letter.kind, letter.source) == ("internal", ("t.v1", 0, 1))
    assert (letter.event_id, letter.event_type) == (event.event_id, "NODE_HEARTBEAT")
    assert letter.error_class == "builtins.KeyError"
    assert letter.stacktrace is not None
    assert "no_such_field" in letter.stacktrace
    assert "in parse" in letter.stacktrace
    # A retried attempt reuses the letter it already made (the same failed_at).
    assert decoded.letter(event, reason) is letter
