"""Prometheus metrics of the sink (served by consumer/health.py on ``/metrics``).

Every count of a committed batch comes from its one ``Outcome`` (consumer/store/batch.py),
the same value the worker's ``Stats`` are added up from, so the two can never disagree.
"""

from __future__ import annotations

import time
from collections import Counter as Tally

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from consumer import __version__
from consumer.store.batch import Outcome
from handlers.envelope import EventType
from handlers.registry import HANDLED_TYPES

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
# The event_type label of a type the sink does not know (kept in event_logs with
# OMNISINK_UNKNOWN_EVENTS=keep): producers choose those names, so they share one label value.
OTHER_TYPE = "other"
_KNOWN_TYPES = frozenset(t.value for t in EventType) | HANDLED_TYPES
# Pool utilisation above which the sink warns that the pool is nearly exhausted (seed 000).
POOL_WARN_RATIO = 0.9


class Metrics:
    """The sink's metrics, in a registry of their own (tests run several workers)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # The process's own (CPU, memory, file descriptors), the garbage collector's, Python's.
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        PlatformCollector(registry=r)
        Info("omnisink_build", "The sink's version.", registry=r).info({"version": __version__})
        self.up = Gauge(
            "omnisink_up",
            "Whether the last call to the service succeeded (1) or failed (0).",
            ["service"],
            registry=r,
        )
        self.pool_connections = Gauge(
            "omnisink_db_pool_connections",
            "The PostgreSQL pool's sessions: size (open), free (idle), used, max.",
            ["state"],
            registry=r,
        )
        self.pool_utilisation = Gauge(
            "omnisink_db_pool_utilisation", "Used sessions over the pool's maximum.", registry=r
        )
        self.pool_exhaustion = Counter(
            "omnisink_db_pool_exhaustion_warnings",
            f"Checks that found the pool over {POOL_WARN_RATIO:.0%} used.",
            registry=r,
        )
        self.records = Counter(
            "omnisink_records",
            "Records consumed, by outcome (written, duplicate, dead_letter).",
            ["outcome"],
            registry=r,
        )
        self.events = Counter(
            "omnisink_events_written",
            "Events written, by canonical type.",
            ["event_type"],
            registry=r,
        )
        self.dead_letters = Counter(
            "omnisink_dead_letters", "Dead letters, by kind.", ["kind"], registry=r
        )
        self.restamps = Counter(
            "omnisink_restamps",
            "STAMP_CREATED events of content already stamped: kept in event_logs, the "
            "earliest stamp of a file_hash holds its row.",
            registry=r,
        )
        self.batches = Counter("omnisink_batches", "Batches committed.", registry=r)
        self.batch_seconds = Histogram(
            "omnisink_batch_duration_seconds",
            "Time to write and commit one batch.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.transient_errors = Counter(
            "omnisink_transient_errors",
            "Transient errors retried, by operation.",
            ["operation"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "omnisink_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["breaker"],
            registry=r,
        )
        self.lag = Gauge(
            "omnisink_consumer_lag",
            "Records between the end of the partition's log and the offset PostgreSQL holds, "
            "refreshed on a timer (consumer/lag.py).",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "omnisink_consumer_lag_seconds",
            "Age of the oldest record fetched and not yet committed (Kafka timestamp); 0 when "
            "nothing waits.",
            ["group"],
            registry=r,
        )
        self.offset_resets = Counter(
            "omnisink_offset_resets",
            "Partitions whose stored offset had left the log and were moved per "
            "OMNISINK_OFFSET_RESET_POLICY.",
            ["topic", "policy"],
            registry=r,
        )
        self.assigned = Gauge(
            "omnisink_assigned_partitions", "Partitions assigned to this member.", registry=r
        )
        self.last_commit = Gauge(
            "omnisink_last_commit_timestamp_seconds",
            "Unix time of the last committed batch.",
            registry=r,
        )

    def observe(self, outcome: Outcome) -> None:
        """Count one committed batch."""
        self.batches.inc()
        self.batch_seconds.observe(outcome.took_s)
        self.last_commit.set(time.time())
        self.records.labels("written").inc(len(outcome.written))
        self.records.labels("duplicate").inc(len(outcome.duplicates))
        self.records.labels("dead_letter").inc(len(outcome.dead_letters))
        self.restamps.inc(outcome.counts.restamps)
        for event_type, n in Tally(_label(e.event_type) for e in outcome.written).items():
            self.events.labels(event_type).inc(n)
        for kind, n in Tally(d.kind for d in outcome.dead_letters).items():
            self.dead_letters.labels(kind).inc(n)


def _label(event_type: str) -> str:
    return event_type if event_type in _KNOWN_TYPES else OTHER_TYPE
