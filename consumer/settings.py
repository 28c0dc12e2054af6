"""Every setting of the sink, read from ``OMNISINK_*`` environment variables.

Flat names for the top level (``OMNISINK_GROUP_ID``); the Kafka and PostgreSQL
sub-models take one more word (``OMNISINK_KAFKA_BOOTSTRAP_SERVERS``,
``OMNISINK_DATABASE_URL``) because the nested delimiter is ``_`` with a single split.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from handlers import stamps

ENV_PREFIX = "OMNISINK_"

# The contract's default subscription (section 1): after a namespace of one or more segments
# (`dev`, the orchestrator's `omninode.bridge`, the reducer's `omninode.bridge.reducer`), every
# versioned event topic of the bridge tenant, of the stamping service and of the intelligence
# prefix. `.v{N}$` cannot end in `.dlq`, and consumer/kafka.py:without_dlq wraps any pattern so
# that it never matches a dead-letter topic: a subscription to its own dead letters would loop.
# The session timeout of a static member unless OMNISINK_KAFKA_SESSION_TIMEOUT_MS is set.
STATIC_MEMBER_SESSION_TIMEOUT_MS = 60_000

DEFAULT_TOPIC_PATTERN = (
    r"^(?:[^.]+\.)+?"
    r"(?:omninode_bridge\.onex\.evt\.[^.]+"
    r"|omninode-bridge\.metadata\.[^.]+"
    r"|archon-intelligence\..+)"
    r"\.v\d+$"
)


class KafkaSettings(BaseModel):
    """How to reach the broker. ``OMNISINK_KAFKA_<FIELD>``."""

    bootstrap_servers: str = "localhost:9092"
    client_id: str = "omnisink"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    request_timeout_ms: int = Field(default=40_000, gt=0)
    session_timeout_ms: int = Field(default=10_000, gt=0)
    heartbeat_interval_ms: int = Field(default=3_000, gt=0)
    max_poll_interval_ms: int = Field(default=300_000, gt=0)
    # How soon a new topic matching OMNISINK_TOPIC_PATTERN is picked up.
    metadata_max_age_ms: int = Field(default=60_000, gt=0)


class DatabaseSettings(BaseModel):
    """How to reach PostgreSQL. ``OMNISINK_DATABASE_<FIELD>``."""

    url: SecretStr = SecretStr("postgresql://postgres@localhost:5432/omnisink")
    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    command_timeout_s: float = Field(default=60.0, gt=0)
    statement_cache_size: int = Field(default=1024, ge=0)
    # The server ends a sink transaction left idle this long (its client is gone).
    idle_in_transaction_timeout_s: float = Field(default=60.0, gt=0)

    @field_validator("url")
    @classmethod
    def _postgres_scheme(cls, value: SecretStr) -> SecretStr:
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in {"postgresql", "postgres", "postgresql+asyncpg"}:
            raise ValueError(
                f"OMNISINK_DATABASE_URL must be a postgresql:// URL (got scheme {scheme!r})"
            )
        return value

    @property
    def dsn(self) -> str:
        """The libpq/asyncpg form of the URL (``postgresql://``)."""
        parts = urlsplit(self.url.get_secret_value())
        return urlunsplit(parts._replace(scheme="postgresql"))

    @property
    def sqlalchemy_url(self) -> str:
        """The SQLAlchemy form of the URL, for Alembic only."""
        parts = urlsplit(self.url.get_secret_value())
        return urlunsplit(parts._replace(scheme="postgresql+asyncpg"))

    @property
    def redacted_url(self) -> str:
        """The URL with its password replaced, safe for logs and errors."""
        return redact_url(self.url.get_secret_value())


class Settings(BaseSettings):
    """The sink's configuration. Every field is an ``OMNISINK_*`` environment variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
        case_sensitive=False,
    )

    database: DatabaseSettings = DatabaseSettings()
    kafka: KafkaSettings = KafkaSettings()

    group_id: str = "omnisink"
    group_instance_id: str | None = None
    topic_pattern: str = DEFAULT_TOPIC_PATTERN
    topics: Annotated[list[str], NoDecode] = Field(default_factory=list)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # The offset PostgreSQL holds is no longer in the log (retention deleted it, the topic was
    # recreated, a broker lost its data): start again at the log's start, skip to its end, or
    # stop. Logged and counted whichever it is (consumer/partitions.py).
    offset_reset_policy: Literal["earliest", "latest", "fail"] = "earliest"

    batch_max_records: int = Field(default=2000, gt=0)
    batch_max_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    batch_max_wait_ms: int = Field(default=200, ge=0)
    max_message_bytes: int = Field(default=1024 * 1024, gt=0)
    unknown_events: Literal["keep", "dlq"] = "keep"
    # The namespace of a stamp that neither its payload, its workflow nor its envelope's
    # metadata names (contract rule 4.6).
    default_namespace: str = Field(
        default=stamps.DEFAULT_NAMESPACE, min_length=1, max_length=stamps.NAMESPACE_MAX_CHARS
    )
    # The largest dead letter the producer sends (an oversize record is dead-lettered whole);
    # the broker's own limit for the .dlq topic still applies.
    dlq_max_request_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    shutdown_grace_s: float = Field(default=30.0, gt=0)
    # How long the start-up retries PostgreSQL (connect, schema check) before it exits 2: a
    # server restarting, or a migration still running, while the sink starts is waited out.
    startup_timeout_s: float = Field(default=60.0, gt=0)

    # The circuit breaker in front of PostgreSQL (seed 000's CIRCUIT_BREAKER_CONFIG).
    breaker_failure_threshold: int = Field(default=5, gt=0)
    breaker_recovery_s: float = Field(default=60.0, ge=0)
    breaker_half_open_calls: int = Field(default=3, gt=0)

    # /metrics (Prometheus) and /health/live, /health/ready. Port 0: any free port.
    http_enabled: bool = True
    http_host: str = "0.0.0.0"  # noqa: S104 - a container's probe and scrape endpoint
    http_port: int = Field(default=8080, ge=0, le=65535)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @model_validator(mode="after")
    def _static_members_outlive_a_restart(self) -> Settings:
        # A static member (OMNISINK_GROUP_INSTANCE_ID) that restarts within the session
        # timeout gets its partitions back without a rebalance; 10 s is shorter than a pod's
        # restart, which would cancel static membership out. Unless set explicitly, a static
        # member's session timeout is 60 s (brokers allow up to 300 s to 30 min by default).
        if self.group_instance_id and "session_timeout_ms" not in self.kafka.model_fields_set:
            self.kafka = self.kafka.model_copy(
                update={"session_timeout_ms": STATIC_MEMBER_SESSION_TIMEOUT_MS}
            )
        return self

    @field_validator("topic_pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(
                f"OMNISINK_TOPIC_PATTERN is not a valid regular expression: {exc}"
            ) from exc
        return value

    @field_validator("topics", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # Operators write OMNISINK_TOPICS=a,b (NoDecode turns off the JSON-list parsing).
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value


def redact_url(url: str) -> str:
    """Replace the password of a URL by ``***`` (no secret in a log line)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[1]}"))
