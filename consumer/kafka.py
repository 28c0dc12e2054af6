"""The Kafka clients of the sink: the options every part uses (the daemon, dead letters,
redrive), the daemon's group member and its dead-letter producer."""

from __future__ import annotations

import re
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumer.settings import Settings
from handlers.contract import DLQ_SUFFIX


def kafka_options(settings: Settings) -> dict[str, Any]:
    k = settings.kafka
    options: dict[str, Any] = {
        "bootstrap_servers": k.bootstrap_servers,
        "client_id": k.client_id,
        "security_protocol": k.security_protocol,
        "request_timeout_ms": k.request_timeout_ms,
    }
    if k.security_protocol in {"SSL", "SASL_SSL"}:
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context()
    if k.sasl_mechanism is not None:
        options["sasl_mechanism"] = k.sasl_mechanism
        options["sasl_plain_username"] = k.sasl_username
        options["sasl_plain_password"] = (
            k.sasl_password.get_secret_value() if k.sasl_password else None
        )
    return options


def group_consumer(settings: Settings) -> AIOKafkaConsumer:
    """The daemon's group member. Offsets live in PostgreSQL: no auto-commit, ever."""
    s = settings
    return AIOKafkaConsumer(
        **kafka_options(s),
        group_id=s.group_id,
        group_instance_id=s.group_instance_id,
        enable_auto_commit=False,
        auto_offset_reset=s.auto_offset_reset,
        isolation_level="read_committed",
        session_timeout_ms=s.kafka.session_timeout_ms,
        heartbeat_interval_ms=s.kafka.heartbeat_interval_ms,
        max_poll_interval_ms=s.kafka.max_poll_interval_ms,
        metadata_max_age_ms=s.kafka.metadata_max_age_ms,
        max_partition_fetch_bytes=max(1024 * 1024, s.max_message_bytes + 64 * 1024),
    )


def dead_letter_producer(settings: Settings) -> AIOKafkaProducer:
    """acks=all: a dead letter is durable before its offset moves. Not idempotent: not every
    Kafka-compatible broker grants producer ids, and the dead-letter topic is at-least-once
    anyway (consumer/deadletters.py); the table is the exact record."""
    return AIOKafkaProducer(
        **kafka_options(settings), acks="all", max_request_size=settings.dlq_max_request_bytes
    )


def subscribe(consumer: AIOKafkaConsumer, settings: Settings, listener: Any) -> None:
    """The explicit topic list, else the pattern, made unable to match a dead-letter topic."""
    if settings.topics:
        consumer.subscribe(topics=settings.topics, listener=listener)
    else:
        consumer.subscribe(pattern=without_dlq(settings.topic_pattern), listener=listener)


def without_dlq(pattern: str) -> str:
    """The subscription pattern, made unable to match a dead-letter topic."""
    return rf"(?!.*{re.escape(DLQ_SUFFIX)}$)(?:{pattern})"
