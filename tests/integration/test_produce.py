"""``omnisink produce FILE.jsonl``: both line forms reach the broker as written, keyed as the
producers key theirs where a line gives no key; a bad line stops it before anything is sent."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from dev.services import Service
from tests.conftest import TopicFactory
from tests.support import run_omnisink, sink_env

pytestmark = pytest.mark.integration


async def _all(
    servers: str, topic: str
) -> list[tuple[bytes | None, bytes, list[tuple[str, bytes | None]]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 0)
        got = []
        for _ in range(20):
            batch = await consumer.getmany(tp, timeout_ms=300)
            got.extend(batch.get(tp, []))
        return [(r.key, r.value, list(r.headers)) for r in got]
    finally:
        await consumer.stop()


async def test_both_line_forms_are_published_as_written(
    kafka_server: Service, db_url: str, topic_factory: TopicFactory, tmp_path: Path
) -> None:
    topic = await topic_factory("produce", partitions=1)
    event_id = str(uuid.uuid4())
    envelope = {
        "event_id": event_id,
        "event_type": "STAMP_VALIDATED",
        "correlation_id": "corr-1",
        "event_timestamp": "2026-01-01T00:00:00Z",
        "payload": {"n": 1},
    }
    lines = [
        orjson.dumps(envelope).decode(),  # an envelope: keyed by its correlation_id
        orjson.dumps(
            {
                "topic": topic,
                "key": "k-2",
                "value": "raw text",
                "headers": [["h", "v"], ["n", None]],
            }
        ).decode(),
        orjson.dumps({"topic": topic, "value": {**envelope, "correlation_id": None}}).decode(),
        "",
    ]
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines))
    env = sink_env(db_url, kafka_server.url, "unused")
    code, out, err = await run_omnisink(env, "produce", str(path), "--topic", topic, timeout_s=120)
    assert code == 0, err
    assert "3 records" in out
    got = await _all(kafka_server.url, topic)
    assert got[0] == (b"corr-1", orjson.dumps(envelope), [])
    assert got[1] == (b"k-2", b"raw text", [("h", b"v"), ("n", None)])
    assert got[2][0] == event_id.encode()  # no correlation id: keyed by event_id
    assert orjson.loads(got[2][1])["event_id"] == event_id
    assert len(got) == 3

    bad = tmp_path / "bad.jsonl"
    bad.write_text(orjson.dumps(envelope).decode() + "\n{not json\n")
    code, _, err = await run_omnisink(env, "produce", str(bad), "--topic", topic, timeout_s=120)
    assert code == 2
    assert "line 2" in err
    assert len(await _all(kafka_server.url, topic)) == 3, "nothing of a bad file is sent"
