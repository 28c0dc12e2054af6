"""Replays (``omnisink replay``): what each named replay reads, and how far it got.

A replay reads a range of offsets per partition outside the consumer group and writes it
through the daemon's batch write (consumer/store/batch.py). Its position per partition is a
row of ``omnisink.consumer_offsets`` under its own owner, ``omnisink-replay:<name>``, written
in each batch's transaction as the group's are, so ``omnisink replay --resume NAME`` goes on
after a crash with nothing lost or doubled. This step adds the replay itself and its ranges.

``reapply`` names the handler families that are handed events ``event_logs`` already holds
(``--reapply [--only FAMILY ...]``); empty: events already applied are skipped.

Downgrade: drops both tables and the replays' positions (their dead letters stay, under the
replay's owner name).

Revision ID: 025
Revises: 024
"""

from alembic import op

revision = "025"
down_revision = "024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE omnisink.replays (
            name TEXT PRIMARY KEY,
            reapply TEXT[] NOT NULL DEFAULT '{}',
            status TEXT NOT NULL DEFAULT 'running'
                CONSTRAINT replays_status_check CHECK (status IN ('running', 'done')),
            started_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
            finished_at TIMESTAMP WITH TIME ZONE
        )
        """
    )
    op.execute(
        """
        CREATE TABLE omnisink.replay_ranges (
            name TEXT NOT NULL REFERENCES omnisink.replays(name) ON DELETE CASCADE,
            topic TEXT NOT NULL,
            kafka_partition INTEGER NOT NULL CHECK (kafka_partition >= 0),
            from_offset BIGINT NOT NULL CHECK (from_offset >= 0),
            -- Exclusive: the first offset the replay does not read.
            to_offset BIGINT NOT NULL CHECK (to_offset >= from_offset),
            PRIMARY KEY (name, topic, kafka_partition)
        )
        """
    )


def downgrade() -> None:
    op.execute(
        "DELETE FROM omnisink.consumer_offsets WHERE consumer_group LIKE 'omnisink-replay:%'"
    )
    op.execute("DROP TABLE omnisink.replay_ranges")
    op.execute("DROP TABLE omnisink.replays")
