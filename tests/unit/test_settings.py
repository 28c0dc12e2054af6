from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from consumer.kafka import without_dlq
from consumer.settings import (
    DEFAULT_TOPIC_PATTERN,
    ConfigurationError,
    Settings,
    describe,
    known_variables,
    redact_url,
    secret_settings,
    unknown_variables,
)
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


# -- secrets: never in a message, readable from files -----------------------------------------

PASSWORD = "Zq7Vw3Lk9x"


def test_a_validation_error_is_described_without_the_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMNISINK_DATABASE_URL", f"mysql://sink:{PASSWORD}@db/events")
    monkeypatch.setenv("OMNISINK_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("OMNISINK_KAFKA_SASL_PASSWORD", f"{PASSWORD}-sasl")
    monkeypatch.setenv("OMNISINK_BATCH_MAX_RECORDS", "many")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert PASSWORD in str(caught.value)  # pydantic's own text repeats every value given
    described = describe(caught.value)
    assert PASSWORD not in described
    assert described.splitlines() == [
        "  OMNISINK_DATABASE_URL must be a postgresql:// URL",
        "  OMNISINK_KAFKA_SASL_MECHANISM=PLAIN needs OMNISINK_KAFKA_SASL_USERNAME",
        "  OMNISINK_BATCH_MAX_RECORDS: Input should be a valid integer, unable to parse "
        "string as an integer",
    ]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"postgresql://sink:{PASSWORD}@db:port/events", "port of OMNISINK_DATABASE_URL"),
        (f"postgresql://sink:{PASSWORD}@db:70000/events", "port of OMNISINK_DATABASE_URL"),
        # An unencoded '/' in the password: urllib reads "sink" as the host, the rest as path.
        (f"postgresql://sink:{PASSWORD}/x@db/events", "port of OMNISINK_DATABASE_URL"),
        (f"postgresql://sink:1234/{PASSWORD}@db/events", "an '@' after its host"),
        (f"postgresql://sink:{PASSWORD}@db/events?ssl=true", "`ssl` is not a libpq parameter"),
        (f"postgresql://sink:{PASSWORD}@db/events?sslmode=on", "sslmode must be one of"),
        (f"postgresql://sink:{PASSWORD}@db/events?sslmode", "name=value pairs"),
    ],
)
def test_a_malformed_url_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, url: str, says: str
) -> None:
    monkeypatch.setenv("OMNISINK_DATABASE_URL", url)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert says in describe(caught.value)
    assert PASSWORD not in describe(caught.value)


def test_libpq_tls_parameters_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    url = (
        "postgresql://sink:pw@db:5432/events?sslmode=verify-full&sslrootcert=/certs/ca.crt"
        "&sslcert=/certs/client.crt&sslkey=/certs/client.key"
    )
    monkeypatch.setenv("OMNISINK_DATABASE_URL", url)
    assert Settings().database.dsn == url
    monkeypatch.setenv("OMNISINK_DATABASE_URL", "postgresql://postgres:@/postgres?host=/tmp/x")
    assert Settings().database.dsn == "postgresql://postgres:@/postgres?host=/tmp/x"


def test_every_form_of_a_secret_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OMNISINK_DATABASE_URL",
        f"postgresql://sink:{PASSWORD}%40x@db/events?sslpassword={PASSWORD}%2Fkey",
    )
    monkeypatch.setenv("OMNISINK_KAFKA_SASL_PASSWORD", f"{PASSWORD}-sasl")
    settings = Settings()
    text = (
        f"{settings.database.url.get_secret_value()} / {PASSWORD}%40x / {PASSWORD}@x / "
        f"{PASSWORD}%2Fkey / {PASSWORD}/key / {PASSWORD}-sasl"
    )
    assert PASSWORD not in settings.scrub(text)
    assert settings.scrub("nothing secret here") == "nothing secret here"
    assert PASSWORD not in settings.database.redacted_url
    assert settings.database.redacted_url == ("postgresql://sink:***@db/events?sslpassword=***")


def test_redact_url_hides_password_parameters_and_odd_user_names() -> None:
    assert redact_url("postgresql://db/x?user=u&password=pw&sslmode=require") == (
        "postgresql://db/x?user=u&password=***&sslmode=require"
    )
    assert redact_url("postgresql://u:p@ss@db/x") == "postgresql://u:***@db/x"
    assert redact_url("postgresql://user@tenant:pw@db/x") == "postgresql://user@tenant:***@db/x"


def test_a_secret_can_be_read_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text("postgresql://sink:from-a-file@db/events\n")
    password_file = tmp_path / "sasl"
    password_file.write_text("sasl from a file\r\n")
    monkeypatch.setenv("OMNISINK_DATABASE_URL_FILE", str(url_file))
    monkeypatch.setenv("OMNISINK_KAFKA_SASL_PASSWORD_FILE", str(password_file))
    monkeypatch.setenv("OMNISINK_DATABASE_POOL_MAX_SIZE", "4")  # merged with the file's
    settings = Settings()
    assert settings.database.url.get_secret_value() == "postgresql://sink:from-a-file@db/events"
    assert settings.database.pool_max_size == 4
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "sasl from a file"
    # A file with an invalid value is validated like the variable.
    url_file.write_text("mysql://sink:from-a-file@db/events")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "from-a-file" not in describe(caught.value)


def test_a_secret_file_that_cannot_be_used_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OMNISINK_DATABASE_URL_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="OMNISINK_DATABASE_URL_FILE: cannot read"):
        Settings()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    monkeypatch.setenv("OMNISINK_DATABASE_URL_FILE", str(empty))
    with pytest.raises(ConfigurationError, match="is empty"):
        Settings()
    (tmp_path / "url").write_text("postgresql://sink:pw@db/events")
    monkeypatch.setenv("OMNISINK_DATABASE_URL_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("OMNISINK_DATABASE_URL", "postgresql://sink:pw@db/events")
    with pytest.raises(ConfigurationError, match="both set"):
        Settings()


def test_the_secret_settings_are_the_secretstr_fields() -> None:
    assert secret_settings() == {
        "DATABASE_URL": ("database", "url"),
        "KAFKA_SASL_PASSWORD": ("kafka", "sasl_password"),
    }
    assert {"OMNISINK_DATABASE_URL_FILE", "OMNISINK_KAFKA_SASL_PASSWORD_FILE"} <= (
        known_variables()
    )


def test_sasl_settings_must_be_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNISINK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ValidationError, match="needs OMNISINK_KAFKA_SASL_MECHANISM"):
        Settings()
    monkeypatch.setenv("OMNISINK_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    with pytest.raises(
        ValidationError,
        match="needs OMNISINK_KAFKA_SASL_USERNAME and OMNISINK_KAFKA_SASL_PASSWORD",
    ):
        Settings()
    monkeypatch.setenv("OMNISINK_KAFKA_SASL_USERNAME", "sink")
    monkeypatch.setenv("OMNISINK_KAFKA_SASL_PASSWORD", "pw")
    assert Settings().kafka.sasl_mechanism == "SCRAM-SHA-512"


def test_unknown_variables_are_named_with_the_closest_setting() -> None:
    environ = {
        "OMNISINK_DATABSE_URL": "x",  # a typo
        "OMNISINK_KAFKA_BOOTSTRAP_SERVER": "x",  # a missing S
        "OMNISINK_WHATEVER": "x",  # nothing close
        "omnisink_group_id": "x",  # settings are case-insensitive
        "OMNISINK_DATABASE_URL_FILE": "x",
        "OMNISINK_KAFKA": "{}",  # a whole sub-model as JSON
        "OMNISINK_TEST_DATABASE_URL": "x",  # the test suite's
        "PATH": "/bin",
    }
    assert unknown_variables(environ) == [
        ("OMNISINK_DATABSE_URL", "OMNISINK_DATABASE_URL"),
        ("OMNISINK_KAFKA_BOOTSTRAP_SERVER", "OMNISINK_KAFKA_BOOTSTRAP_SERVERS"),
        ("OMNISINK_WHATEVER", None),
    ]
