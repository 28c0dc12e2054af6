from __future__ import annotations

import pytest
from pydantic import ValidationError

from consumer.kafka import without_dlq
from consumer.settings import DEFAULT_TOPIC_PATTERN, Settings, redact_url
from handlers.registry import is_intelligence_topic


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


# Every topic name the producers publish to (/work/shared/design/producers.md), and what the
# default subscription must leave alone.
PRODUCER_TOPICS = [
    # the bridge's nodes, in the dev configuration
    "dev.omninode_bridge.onex.evt.stamp-workflow-started.v1",
    "dev.omninode_bridge.onex.evt.workflow-state-transition.v1",
    "dev.omninode_bridge.onex.evt.action.v1",
    "dev.omninode_bridge.onex.evt.node-introspection.v1",
    "dev.omninode_bridge.onex.evt.node-heartbeat.v1",
    "dev.omninode_bridge.onex.evt.registry-request-introspection.v1",
    "prod.omninode_bridge.onex.evt.node-heartbeat.v12",
    # the orchestrator's and the reducer's shipped namespaces, with dots
    "omninode.bridge.omninode_bridge.onex.evt.stamp-workflow-completed.v1",
    "omninode.bridge.omninode_bridge.onex.evt.blake3-hash-generated.v1",
    "omninode.bridge.reducer.omninode_bridge.onex.evt.batch-processed.v1",
    "omninode.bridge.reducer.omninode_bridge.onex.evt.aggregation-completed.v1",
    # the metadata-stamping service
    "dev.omninode-bridge.metadata.metadata-stamp-created.v1",
    "dev.omninode-bridge.metadata.metadata-stamp-validated.v1",
    "dev.omninode-bridge.metadata.metadata-batch-processed.v1",
    # the intelligence prefix: the reducer FSMs' effect and the intelligence adapter
    "dev.archon-intelligence.fsm.state.changed.v1",
    "dev.archon-intelligence.lease.acquired.v2",
    "dev.archon-intelligence.pattern_learning.completed.v1",
    "dev.archon-intelligence.ingestion.failed.v1",
    "dev.archon-intelligence.intelligence.code-analysis-completed.v1",
    "dev.archon-intelligence.intelligence.code-analysis-failed.v1",
]
NOT_SUBSCRIBED = [
    *(f"{topic}.dlq" for topic in PRODUCER_TOPICS),
    "dev.omninode_bridge.onex.cmd.stamp-request.v1",
    "omninode.bridge.omninode_bridge.onex.cmd.stamp-request.v1",
    "dev.other_tenant.onex.evt.thing.v1",
    "dev.omninode-bridge.other.metadata-stamp-created.v1",
    "dev.omninode_bridge.onex.evt.stamp-workflow-started",
    "omninode_bridge.onex.evt.stamp-workflow-started.v1",
    "archon-intelligence.fsm.state.changed.v1",
    "__consumer_offsets",
]


@pytest.mark.parametrize(
    ("topic", "matches"),
    [(t, True) for t in PRODUCER_TOPICS] + [(t, False) for t in NOT_SUBSCRIBED],
)
def test_default_pattern_matches_the_contract(topic: str, matches: bool) -> None:
    import re

    assert bool(re.match(DEFAULT_TOPIC_PATTERN, topic)) is matches
    # What the consumer subscribes with: the pattern, unable to match a dead-letter topic.
    assert bool(re.fullmatch(without_dlq(DEFAULT_TOPIC_PATTERN), topic)) is matches


@pytest.mark.parametrize(
    ("topic", "intelligence"),
    [
        ("dev.archon-intelligence.fsm.state.changed.v1", True),
        ("dev.archon-intelligence.intelligence.code-analysis-completed.v1", True),
        ("omninode.bridge.archon-intelligence.workflow.events.v1", True),
        ("prod.eu.archon-intelligence.pattern_learning.completed.v1", True),
        ("dev.omninode_bridge.onex.evt.stamp-workflow-started.v1", False),
        ("omninode.bridge.reducer.omninode_bridge.onex.evt.batch-processed.v1", False),
        ("dev.omninode-bridge.metadata.metadata-stamp-created.v1", False),
        # a bridge topic whose slug is the intelligence prefix's name
        ("dev.omninode_bridge.onex.evt.archon-intelligence.v1", False),
        ("archon-intelligence.fsm.state.changed.v1", False),
    ],
)
def test_an_intelligence_topic_under_any_namespace(topic: str, intelligence: bool) -> None:
    assert is_intelligence_topic(topic) is intelligence


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
