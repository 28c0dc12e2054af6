"""The default subscription covers every topic the OmniNode producers publish on.

The list below is written out from the producers' own topic rules (the design note on the
producers), not derived from dev/producers.py, so the fixtures cannot agree with the pattern
by sharing a mistake with it; the last test checks that the fixtures stay inside this list.
"""

from __future__ import annotations

import re

import pytest

from consumer.kafka import without_dlq
from consumer.settings import DEFAULT_TOPIC_PATTERN
from dev import producers

ORCHESTRATOR_SLUGS = (
    "workflow-state-transition",
    "stamp-workflow-started",
    "onextree-intelligence-requested",
    "onextree-intelligence-received",
    "blake3-hash-generated",
    "metadata-stamp-created",
    "workflow-step-completed",
    "stamp-workflow-completed",
    "stamp-workflow-failed",
)
REDUCER_SLUGS = (
    "aggregation-started",
    "batch-processed",
    "state-persisted",
    "aggregation-completed",
    "aggregation-failed",
)
BRIDGE = "omninode_bridge.onex.evt"

PRODUCER_TOPICS = (
    # the bridge orchestrator and reducer, in the dev configuration
    *(f"dev.{BRIDGE}.{slug}.v1" for slug in ORCHESTRATOR_SLUGS + REDUCER_SLUGS),
    # ... and under their shipped default namespaces
    *(f"omninode.bridge.{BRIDGE}.{slug}.v1" for slug in ORCHESTRATOR_SLUGS),
    *(f"omninode.bridge.reducer.{BRIDGE}.{slug}.v1" for slug in REDUCER_SLUGS),
    # the event-driven workflow's ACTION, through the EventBus
    f"dev.{BRIDGE}.action.v1",
    # the registry's rebroadcast, and the nodes' own events the registry consumes
    f"dev.{BRIDGE}.registry-request-introspection.v1",
    f"dev.{BRIDGE}.node-introspection.v1",
    f"dev.{BRIDGE}.node-heartbeat.v1",
    # the metadata-stamping service
    "dev.omninode-bridge.metadata.metadata-stamp-created.v1",
    "dev.omninode-bridge.metadata.metadata-stamp-validated.v1",
    "dev.omninode-bridge.metadata.metadata-batch-processed.v1",
    # omniintelligence: the reducer FSMs through kafka_event_effect (declared and wired)
    "dev.archon-intelligence.fsm.state.changed.v1",
    *(
        f"dev.archon-intelligence.{fsm}.{outcome}.v1"
        for fsm in ("ingestion", "pattern_learning", "quality_assessment")
        for outcome in ("completed", "failed")
    ),
    # omniintelligence: the intelligence adapter
    "dev.archon-intelligence.intelligence.code-analysis-completed.v1",
    "dev.archon-intelligence.intelligence.code-analysis-failed.v1",
)

# What the consumer subscribes with by default; the client matches it from the start.
SUBSCRIPTION = re.compile(without_dlq(DEFAULT_TOPIC_PATTERN))


@pytest.mark.parametrize("topic", PRODUCER_TOPICS)
def test_default_pattern_matches_the_producer_topic(topic: str) -> None:
    assert SUBSCRIPTION.match(topic), f"the default subscription misses {topic}"


@pytest.mark.parametrize("topic", PRODUCER_TOPICS)
def test_default_pattern_never_matches_its_dead_letter_twin(topic: str) -> None:
    assert not SUBSCRIPTION.match(f"{topic}.dlq")


def test_the_fixtures_publish_only_on_producer_topics() -> None:
    p = producers.Producers(seed=5)
    built = {r.topic for r in producers.stream(600, seed=5).records}
    built |= {r.topic for r in p.aggregation(producers.BASE_TIME, failed=True).records}
    assert built <= set(PRODUCER_TOPICS), sorted(built - set(PRODUCER_TOPICS))
    # the demo's stream reaches nearly every one of them
    assert len(set(PRODUCER_TOPICS) - built) <= 2, sorted(set(PRODUCER_TOPICS) - built)
