"""The sink's own bookkeeping, in schema omnisink: consumer offsets and dead letters.

consumer_offsets holds the next offset to read per (consumer group, topic, partition). It
is written in the same transaction as the rows that came from those offsets, which is what
makes delivery effectively once: after a crash the sink seeks to what PostgreSQL committed,
never to what Kafka was told.

dead_letters keeps every record the sink could never write, with its original key, value
and headers, the reason, and where its copy on the dead-letter topic landed; redrive marks
rows instead of deleting them.


Revision ID: 013
Revises: 012
"""

from alembic import op

revision = "013"
down_revision = "012"
branch_labels = None
depends_on = None

ERROR_KINDS = (
    "decode",
    "schema",
    "unknown_type",
    "invalid_transition",
    "conflict",
    "constraint",
    "oversize",
)


def upgrade() -> None:
    op.execute("CREATE SCHEMA omnisink")
    op.execute(
        """
        CREATE TABLE omnisink.consumer_offsets (
            consumer_group TEXT NOT NULL,
            topic TEXT NOT NULL,
            kafka_partition INTEGER NOT NULL CHECK (kafka_partition >= 0),
            next_offset BIGINT NOT NULL CHECK (next_offset >= 0),
            updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
            PRIMARY KEY (consumer_group, topic, kafka_partition)
        )
        """
    )
    kinds = ", ".join(f"'{kind}'" for kind in ERROR_KINDS)
    op.execute(
        f"""
        CREATE TABLE omnisink.dead_letters (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            consumer_group TEXT NOT NULL,
            topic TEXT NOT NULL,
            kafka_partition INTEGER NOT NULL CHECK (kafka_partition >= 0),
            kafka_offset BIGINT NOT NULL CHECK (kafka_offset >= 0),
            record_timestamp TIMESTAMP WITH TIME ZONE,
            record_key BYTEA,
            record_value BYTEA,
            header_keys TEXT[] NOT NULL DEFAULT '{{}}',
            header_values BYTEA[] NOT NULL DEFAULT '{{}}',
            event_id UUID,
            event_type VARCHAR(100),
            error_kind VARCHAR(32) NOT NULL CHECK (error_kind IN ({kinds})),
            error_class TEXT NOT NULL,
            error_message TEXT NOT NULL,
            error_stacktrace TEXT,
            attempts INTEGER NOT NULL DEFAULT 1 CHECK (attempts >= 1),
            dlq_topic TEXT NOT NULL,
            dlq_partition INTEGER,
            dlq_offset BIGINT,
            status VARCHAR(16) NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'redriven', 'discarded')),
            failed_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
            redriven_at TIMESTAMP WITH TIME ZONE,
            CONSTRAINT uq_dead_letters_source
                UNIQUE (consumer_group, topic, kafka_partition, kafka_offset),
            CONSTRAINT ck_dead_letters_headers_paired
                CHECK (cardinality(header_keys) = cardinality(header_values))
        )
        """
    )
    op.execute(
        "CREATE INDEX idx_dead_letters_status_failed ON omnisink.dead_letters(status, failed_at)"
    )
    op.execute(
        "CREATE INDEX idx_dead_letters_kind_failed ON omnisink.dead_letters(error_kind, failed_at)"
    )
    op.execute(
        "CREATE INDEX idx_dead_letters_topic_failed ON omnisink.dead_letters(topic, failed_at)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE omnisink.dead_letters")
    op.execute("DROP TABLE omnisink.consumer_offsets")
    op.execute("DROP SCHEMA omnisink")
