"""The metrics are counted from a batch's one Outcome, what the handlers counted included."""

from __future__ import annotations

from consumer.metrics import Metrics
from consumer.store.batch import Outcome
from handlers.base import Counts


def _outcome(counts: Counts) -> Outcome:
    return Outcome(
        records=0,
        records_by_topic={},
        written=[],
        duplicates=[],
        dead_letters=[],
        next_offsets={},
        took_s=0.0,
        counts=counts,
    )


def test_restamps_are_counted_from_the_outcome() -> None:
    metrics = Metrics()
    metrics.observe(_outcome(Counts(restamps=2)))
    metrics.observe(_outcome(Counts()))
    metrics.observe(_outcome(Counts(restamps=1) + Counts(restamps=1)))
    assert metrics.registry.get_sample_value("omnisink_restamps_total") == 4
