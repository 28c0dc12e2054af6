"""Every setting of the sink, read from ``OMNISINK_*`` environment variables.

Flat names for the top level (``OMNISINK_GROUP_ID``); the Kafka and PostgreSQL
sub-models take one more word (``OMNISINK_KAFKA_BOOTSTRAP_SERVERS``,
``OMNISINK_DATABASE_URL``) because the nested delimiter is ``_`` with a single split.

A secret (a ``SecretStr`` field: the database URL, the SASL password) can instead be read
from a file, ``OMNISINK_<NAME>_FILE`` (a mounted Kubernetes or Docker secret). No secret is
ever part of a message: :func:`describe` renders a ValidationError without the values it was
given (pydantic's own text repeats them), and :meth:`Settings.scrub` hides the secrets in text
written by others (a driver's error message).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from handlers import stamps

ENV_PREFIX = "OMNISINK_"
# OMNISINK_<SECRET>_FILE: the secret is the file's content (one trailing newline dropped).
FILE_SUFFIX = "_FILE"
# Variables of the test suite and the dev tooling (dev/services.py), not of the sink.
TOOLING_PREFIX = "OMNISINK_TEST_"
# The libpq parameters of a URL's query string that hold a secret.
_SECRET_QUERY_PARAMETERS = ("password", "sslpassword")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

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

    @model_validator(mode="after")
    def _sasl_is_complete(self) -> KafkaSettings:
        # aiokafka would only fail once it connects, on an assertion that names no setting.
        if self.security_protocol.startswith("SASL_") and self.sasl_mechanism is None:
            raise ValueError(
                f"OMNISINK_KAFKA_SECURITY_PROTOCOL={self.security_protocol} needs "
                "OMNISINK_KAFKA_SASL_MECHANISM"
            )
        if self.sasl_mechanism is not None:
            missing = [
                f"OMNISINK_KAFKA_SASL_{name.upper()}"
                for name, value in (
                    ("username", self.sasl_username),
                    ("password", self.sasl_password),
                )
                if not value
            ]
            if missing:
                raise ValueError(
                    f"OMNISINK_KAFKA_SASL_MECHANISM={self.sasl_mechanism} needs "
                    f"{' and '.join(missing)}"
                )
        return self


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
    def _postgres_url(cls, value: SecretStr) -> SecretStr:
        # Every message names what is wrong, never the URL's text: it holds the password.
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in {"postgresql", "postgres", "postgresql+asyncpg"}:
            raise ValueError("OMNISINK_DATABASE_URL must be a postgresql:// URL")
        encode = (
            "(percent-encode '@', ':', '/', '?' and '#' in a user name or password: "
            "%40, %3A, %2F, %3F, %23)"
        )
        try:
            parts.port  # noqa: B018 - urllib parses the port only when asked
        except ValueError:
            raise ValueError(
                f"the port of OMNISINK_DATABASE_URL is not a number from 0 to 65535 {encode}"
            ) from None
        if "@" in parts.path or "@" in parts.fragment:
            raise ValueError(f"OMNISINK_DATABASE_URL has an '@' after its host {encode}")
        try:
            query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ValueError(
                "the query string of OMNISINK_DATABASE_URL is not name=value pairs joined by &"
            ) from None
        for name, setting in query:
            if name == "ssl":
                raise ValueError(
                    "OMNISINK_DATABASE_URL: `ssl` is not a libpq parameter; TLS is set with "
                    "sslmode (require, verify-ca, verify-full) and sslrootcert, sslcert, sslkey"
                )
            if name == "sslmode" and setting not in _SSLMODES:
                raise ValueError(
                    f"OMNISINK_DATABASE_URL: sslmode must be one of {', '.join(_SSLMODES)}"
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

    def secret_texts(self) -> set[str]:
        """What of the URL is secret: the URL, and its password (as written and decoded)
        however a parser splits it: urllib (the last '@') and asyncpg (the first '@')."""
        url = self.url.get_secret_value()
        parts = urlsplit(url)
        found = {url, parts.password or ""}
        found.add(parts.netloc.partition("@")[0].partition(":")[2] if "@" in parts.netloc else "")
        names = "|".join(_SECRET_QUERY_PARAMETERS)
        found.update(re.findall(rf"(?:^|&)(?:{names})=([^&]*)", parts.query, re.IGNORECASE))
        found |= {unquote(text) for text in found} | {unquote_plus(text) for text in found}
        return {text for text in found if text}


class Settings(BaseSettings):
    """The sink's configuration. Every field is an ``OMNISINK_*`` environment variable."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
        case_sensitive=False,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            SecretFilesSource(settings_cls),
            env_settings,
            dotenv_settings,
            file_secret_settings,
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
    # /health/ready says 503 once records have waited this long with no batch committed (a
    # batch blocked by a lock, a stuck write): the member is in the group but not consuming.
    ready_stall_s: float = Field(default=120.0, gt=0)

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

    def secret_texts(self) -> set[str]:
        """Every secret's text (and the parts of the URL that are secret)."""
        found = self.database.secret_texts()
        for path in secret_settings().values():
            value: Any = self
            for name in path:
                value = getattr(value, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                found.add(value.get_secret_value())
        return found

    def scrub(self, text: str) -> str:
        """``text`` (a driver's or a library's message) with every secret replaced by ***."""
        for secret in sorted(self.secret_texts(), key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

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
    """Replace the password of a URL by ``***`` (no secret in a log line): the one after the
    user name, and a ``password=`` or ``sslpassword=`` parameter."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    if at and colon:
        parts = parts._replace(netloc=f"{user}:***@{host}")
    names = "|".join(_SECRET_QUERY_PARAMETERS)
    query = re.sub(rf"(^|&)({names})=[^&]*", r"\1\2=***", parts.query, flags=re.IGNORECASE)
    return urlunsplit(parts._replace(query=query))


# -- where settings come from, and what is said about them ------------------------------------


class ConfigurationError(ValueError):
    """A setting that cannot be read (a secret's file); the message names the variable,
    never a value."""


def _is_secret(field: FieldInfo) -> bool:
    return field.annotation is SecretStr or SecretStr in get_args(field.annotation)


def _submodel(field: FieldInfo) -> type[BaseModel] | None:
    kind = field.annotation
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def _fields(
    model: type[BaseModel], prefix: str = ""
) -> Iterator[tuple[str, tuple[str, ...], FieldInfo]]:
    """(variable name without the prefix, path of attributes, field) of every leaf setting."""
    for name, field in model.model_fields.items():
        sub = _submodel(field)
        if sub is None:
            yield f"{prefix}{name.upper()}", (name,), field
            continue
        for variable, path, leaf in _fields(sub, f"{prefix}{name.upper()}_"):
            yield variable, (name, *path), leaf


def secret_settings() -> dict[str, tuple[str, ...]]:
    """Every secret setting (a ``SecretStr`` field), by variable name without the prefix
    (``DATABASE_URL``), with its path of attributes (``("database", "url")``)."""
    return {variable: path for variable, path, field in _fields(Settings) if _is_secret(field)}


def known_variables() -> set[str]:
    """Every ``OMNISINK_*`` variable the sink reads (README lists each)."""
    names = {ENV_PREFIX + variable for variable, _, _ in _fields(Settings)}
    return names | {ENV_PREFIX + name + FILE_SUFFIX for name in secret_settings()}


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """The ``OMNISINK_*`` variables of ``environ`` that no setting reads (a typo, most
    likely), each with the known name closest to it, if any is close."""
    known = known_variables()
    # A whole sub-model as JSON (OMNISINK_DATABASE='{"url": ...}') is read too.
    accepted = known | {
        ENV_PREFIX + name.upper()
        for name, field in Settings.model_fields.items()
        if _submodel(field) is not None
    }
    unknown: list[tuple[str, str | None]] = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(TOOLING_PREFIX):
            continue
        if upper not in accepted:
            close = difflib.get_close_matches(upper, sorted(known), n=1, cutoff=0.8)
            unknown.append((name, close[0] if close else None))
    return unknown


def describe(exc: ValidationError) -> str:
    """A ValidationError as lines ``OMNISINK_<NAME>: what is wrong``, without the values it
    was given: pydantic's own text repeats them (``input_value=``), secrets included."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = [str(part) for part in error["loc"]]
        name = ENV_PREFIX + "_".join(loc).upper() if loc else ""
        message = error["msg"].removeprefix("Value error, ")
        # The sink's own messages name their variable already.
        lines.append(f"  {message}" if not name or name in message else f"  {name}: {message}")
    return "\n".join(lines)


class SecretFilesSource(PydanticBaseSettingsSource):
    """``OMNISINK_<SECRET>_FILE``: each secret setting read from the file it names, for
    secrets mounted as files. Setting both a secret and its ``_FILE`` is an error."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads every secret at once

    def __call__(self) -> dict[str, Any]:
        environ = {name.upper(): value for name, value in os.environ.items()}
        values: dict[str, Any] = {}
        for name, path in secret_settings().items():
            variable = ENV_PREFIX + name
            file_variable = variable + FILE_SUFFIX
            file_name = environ.get(file_variable)
            if file_name is None:
                continue
            if variable in environ:
                raise ConfigurationError(
                    f"{variable} and {file_variable} are both set; set only one of them"
                )
            node = values
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = read_secret_file(file_variable, file_name)
        return values


def read_secret_file(variable: str, file_name: str) -> str:
    """The secret in ``file_name`` (without the newline an editor or ``echo`` ends it with)."""
    try:
        text = Path(file_name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"{variable}: cannot read {file_name}: {exc.strerror or type(exc).__name__}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{variable}: {file_name} is not UTF-8 text") from None
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise ConfigurationError(f"{variable}: {file_name} is empty")
    return secret
