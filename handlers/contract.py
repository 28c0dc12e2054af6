"""Names the event contract fixes (docs/contract.md), declared once for the whole product.

The dead-letter kinds are also the CHECK of ``omnisink.dead_letters.error_kind`` (migration
013, and 021 since, each keeping its own copy as migrations must;
tests/unit/test_contract_names.py ties the latest to this list), the values of
``omnisink dlq list --kind`` and the ``kind`` label of ``omnisink_dead_letters_total``.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

# Contract section 5. Decoding decides decode, schema and oversize; the consumer decides
# unknown_type (OMNISINK_UNKNOWN_EVENTS=dlq) and internal (an error nobody classified, raised
# while judging the record); a handler decides the rest.
DeadLetterKind = Literal[
    "decode",
    "schema",
    "unknown_type",
    "invalid_transition",
    "conflict",
    "constraint",
    "oversize",
    "internal",
]
DEAD_LETTER_KINDS: Final[tuple[DeadLetterKind, ...]] = get_args(DeadLetterKind)

# The kinds a handler may give a Reject (the others are decided before any handler runs).
RejectKind = Literal["schema", "unknown_type", "invalid_transition", "conflict", "constraint"]

# Dead-letter topic of a source topic: ``<topic>.dlq`` (section 5).
DLQ_SUFFIX: Final = ".dlq"

# Headers of a dead letter on <topic>.dlq, after the record's own: Kafka Connect's error
# headers (so existing tools show them), then the sink's.
CONNECT_TOPIC_HEADER: Final = "__connect.errors.topic"
CONNECT_PARTITION_HEADER: Final = "__connect.errors.partition"
CONNECT_OFFSET_HEADER: Final = "__connect.errors.offset"
CONNECT_CLASS_HEADER: Final = "__connect.errors.exception.class.name"
CONNECT_MESSAGE_HEADER: Final = "__connect.errors.exception.message"
CONNECT_STACKTRACE_HEADER: Final = "__connect.errors.exception.stacktrace"
KIND_HEADER: Final = "omnisink.error.kind"
ATTEMPTS_HEADER: Final = "omnisink.error.attempts"
GROUP_HEADER: Final = "omnisink.consumer.group"
FAILED_AT_HEADER: Final = "omnisink.failed_at"
# Added by `omnisink dlq redrive` to the record it sends back: the dead letter's id.
REDRIVE_HEADER: Final = "omnisink.redrive.of"

# Keys of event_logs.metadata the sink writes over the producer's (section 3): where the
# record was read, the envelope's unknown top-level fields, and the event_type as sent when it
# is not the canonical name the row's event_type holds.
KAFKA_METADATA_KEYS: Final = ("kafka_topic", "kafka_partition", "kafka_offset")
ENVELOPE_EXTRA_KEY: Final = "envelope_extra"
ORIGINAL_EVENT_TYPE_KEY: Final = "original_event_type"
