"""What a worker did since it started: the closing summary of ``omnisink run`` and the demo.

Added up from each committed batch's ``Outcome`` (consumer/store/batch.py), the value the
Prometheus metrics are counted from too.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from consumer.store.batch import Outcome
from handlers.registry import HANDLED_TYPES


@dataclass
class Stats:
    started_at: float = field(default_factory=time.monotonic)
    batches: int = 0
    records: int = 0
    written: int = 0
    duplicates: int = 0
    # Duplicates whose domain rows were written again (a replay's --reapply).
    reapplied: int = 0
    dead_letters: int = 0
    unknown_types: int = 0
    retries: int = 0
    fenced: int = 0
    assignments: int = 0
    # The grace period expired and the batch in hand was rolled back.
    abandoned: bool = False
    by_type: Counter[str] = field(default_factory=Counter)
    by_topic: Counter[str] = field(default_factory=Counter)

    # When the first record arrived and the last batch committed (monotonic clock): the rate
    # excludes the group join and the final wait for the end of the stream.
    first_record_at: float | None = None
    last_commit_at: float | None = None

    def add(self, outcome: Outcome) -> None:
        """Count one committed batch."""
        self.last_commit_at = time.monotonic()
        self.batches += 1
        self.records += outcome.records
        self.written += len(outcome.written)
        self.duplicates += len(outcome.duplicates)
        self.reapplied += len(outcome.reapplied)
        self.dead_letters += len(outcome.dead_letters)
        self.by_type.update(e.event_type for e in outcome.written)
        self.by_topic.update(outcome.records_by_topic)
        self.unknown_types += sum(1 for e in outcome.written if e.event_type not in HANDLED_TYPES)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at

    @property
    def events_per_s(self) -> float:
        """Events written per second between the first record and the last commit."""
        if self.first_record_at is None or self.last_commit_at is None:
            return 0.0
        return self.written / max(self.last_commit_at - self.first_record_at, 1e-6)

    def summary(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "records": self.records,
            "written": self.written,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
            "elapsed_s": round(self.elapsed_s, 2),
            "events_per_s": round(self.events_per_s),
        }
