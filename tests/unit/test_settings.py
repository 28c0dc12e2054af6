from __future__ import annotations

import pytest
from pydantic import ValidationError

from consumer.settings import DEFAULT_TOPIC_PATTERN, Settings, redact_url


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("OMNISINK_"):
            monkeypatch.delenv(name)


def test_flat_and_nested_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNISINK_DATABASE_URL", "postgresql://sink:s3cret@db:5432/events")
    monkeypatch.setenv("OMNISINK_KAFKA_BOOTSTRAP_SERVERS", "k1:9092,k2:9092")
    monkeypatch.setenv("OMNISINK_GROUP_ID", "sink-a")
    monkeypatch.setenv("OMNISINK_TOPICS", "a.v1, b.v1")
    monkeypatch.setenv("OMNISINK_BATCH_MAX_RECORDS", "50")
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.group_id == "sink-a"
    assert settings.topics == ["a.v1", "b.v1"]
    assert settings.batch_max_records == 50
    assert settings.database.dsn == "postgresql://sink:s3cret@db:5432/events"
    assert settings.database.sqlalchemy_url.startswith("postgresql+asyncpg://")


def test_secrets_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNISINK_DATABASE_URL", "postgresql://sink:s3cret@db:5432/events")
    monkeypatch.setenv("OMNISINK_KAFKA_SASL_PASSWORD", "hunter2")
    settings = Settings()
    shown = repr(settings) + str(settings.model_dump()) + settings.database.redacted_url
    assert "s3cret" not in shown
    assert "hunter2" not in shown
    assert settings.database.redacted_url == "postgresql://sink:***@db:5432/events"


def test_redact_keeps_urls_without_password() -> None:
    url = "postgresql://postgres:@/postgres?host=/tmp/x"
    assert "@/postgres?host=/tmp/x" in redact_url(url)
    assert redact_url("postgresql://u@h/d") == "postgresql://u@h/d"


def test_bad_values_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNISINK_DATABASE_URL", "mysql://x@y/z")
    with pytest.raises(ValidationError, match="postgresql:// URL"):
        Settings()
    monkeypatch.setenv("OMNISINK_DATABASE_URL", "postgresql://x@y/z")
    monkeypatch.setenv("OMNISINK_TOPIC_PATTERN", "([unclosed")
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        Settings()


@pytest.mark.parametrize(
    ("topic", "matches"),
    [
        ("dev.omninode_bridge.onex.evt.stamp-workflow-started.v1", True),
        ("prod.omninode_bridge.onex.evt.node-heartbeat.v12", True),
        ("dev.archon-intelligence.fsm.state.changed.v1", True),
        ("dev.archon-intelligence.lease.acquired.v2", True),
        ("dev.omninode_bridge.onex.evt.stamp-workflow-started.v1.dlq", False),
        ("dev.archon-intelligence.fsm.state.changed.v1.dlq", False),
        ("dev.omninode_bridge.onex.cmd.stamp-request.v1", False),
        ("dev.other_tenant.onex.evt.thing.v1", False),
        ("__consumer_offsets", False),
    ],
)
def test_default_pattern_matches_the_contract(topic: str, matches: bool) -> None:
    import re

    assert bool(re.match(DEFAULT_TOPIC_PATTERN, topic)) is matches


def test_a_static_member_gets_a_session_timeout_that_outlives_a_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMNISINK_GROUP_INSTANCE_ID", "omnisink-0")
    assert Settings().kafka.session_timeout_ms == 60_000
    monkeypatch.setenv("OMNISINK_KAFKA_SESSION_TIMEOUT_MS", "45000")
    assert Settings().kafka.session_timeout_ms == 45_000  # an explicit setting wins
    monkeypatch.delenv("OMNISINK_GROUP_INSTANCE_ID")
    monkeypatch.delenv("OMNISINK_KAFKA_SESSION_TIMEOUT_MS")
    assert Settings().kafka.session_timeout_ms == 10_000  # a dynamic member fails over fast


def test_the_default_namespace_reaches_the_stamps_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    from handlers import registry
    from handlers.stamps import DEFAULT_NAMESPACE, StampsHandler

    assert Settings().default_namespace == DEFAULT_NAMESPACE
    monkeypatch.setenv("OMNISINK_DEFAULT_NAMESPACE", "omninode.tenant-a")
    handlers = registry.configured(default_namespace=Settings().default_namespace)
    stamps = [h for h in handlers if isinstance(h, StampsHandler)]
    assert [s.default_namespace for s in stamps] == ["omninode.tenant-a"]
    # Every other handler is the registry's own, in the registry's order.
    assert [h.name for h in handlers] == [h.name for h in registry.HANDLERS]
    assert [h for h in handlers if h not in stamps] == [
        h for h in registry.HANDLERS if not isinstance(h, StampsHandler)
    ]
    monkeypatch.setenv("OMNISINK_DEFAULT_NAMESPACE", "")
    with pytest.raises(ValidationError):
        Settings()
