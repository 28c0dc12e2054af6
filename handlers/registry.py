"""Which handlers exist, in the order a batch is applied, and how a topic refines a type.

Order matters only within a family (parents before children), and each family is one handler
that orders its own statements; families touch disjoint tables, so their order here is free.
An event type may go to more than one handler: INTELLIGENCE_RECEIVED writes the workflow's
intelligence (workflows) and the stamp's (stamps).
"""

from __future__ import annotations

from typing import Any

from handlers.base import Handler
from handlers.bridge_states import BRIDGE_STATES
from handlers.envelope import Envelope, EventType
from handlers.intelligence_fsm import INTELLIGENCE_FSM
from handlers.intelligence_workflows import INTELLIGENCE_WORKFLOWS
from handlers.nodes import NODES
from handlers.stamps import STAMPS, StampsHandler
from handlers.workflows import WORKFLOWS

HANDLERS: tuple[Handler[Any], ...] = (
    WORKFLOWS,
    STAMPS,
    NODES,
    BRIDGE_STATES,
    INTELLIGENCE_FSM,
    INTELLIGENCE_WORKFLOWS,
)


def configured(*, default_namespace: str) -> tuple[Handler[Any], ...]:
    """HANDLERS as the daemon runs them: the stamps handler with the namespace of stamps that
    name none (``OMNISINK_DEFAULT_NAMESPACE``). Handlers read no settings; this is the one
    value of them a handler needs."""
    return tuple(StampsHandler(default_namespace) if h is STAMPS else h for h in HANDLERS)


# The intelligence service names its workflow events like the bridge's (`workflow.started`);
# on an intelligence topic they are the intelligence workflow types (contract section 3).
INTELLIGENCE_TENANT = "archon-intelligence"
# The segment that follows a topic's namespace: the bridge's, the stamping service's, the
# intelligence prefix (the default subscription of consumer/settings.py names the same three).
_TENANTS = frozenset({"omninode_bridge", "omninode-bridge", INTELLIGENCE_TENANT})
_ON_INTELLIGENCE_TOPIC = {
    EventType.WORKFLOW_STARTED: EventType.INTELLIGENCE_WORKFLOW_STARTED,
    EventType.STEP_COMPLETED: EventType.INTELLIGENCE_WORKFLOW_STEP_COMPLETED,
    EventType.WORKFLOW_COMPLETED: EventType.INTELLIGENCE_WORKFLOW_COMPLETED,
    EventType.WORKFLOW_FAILED: EventType.INTELLIGENCE_WORKFLOW_FAILED,
}
# Every table an event writes, parents before children (foreign keys).
DATA_TABLES: tuple[str, ...] = (
    "event_logs",
    "workflow_executions",
    "workflow_steps",
    "fsm_transitions",
    "metadata_stamps",
    "node_registrations",
    "bridge_states",
    "intelligence.fsm_state",
    "intelligence.fsm_state_history",
    "intelligence.workflow_executions",
)
# Types some handler writes beyond event_logs; the rest of EventType is kept in event_logs only.
HANDLED_TYPES: frozenset[str] = frozenset().union(*(h.event_types for h in HANDLERS))


def is_intelligence_topic(topic: str) -> bool:
    """``<namespace>.archon-intelligence.…`` (contract section 1), whatever the namespace's
    segments (``dev``, ``omninode.bridge``): the first tenant segment after the namespace is the
    intelligence prefix, so a bridge topic whose slug happens to be that word is not one."""
    parts = topic.split(".")
    for part in parts[1:-1]:
        if part in _TENANTS:
            return part == INTELLIGENCE_TENANT
    return False


def resolve(envelope: Envelope, topic: str) -> Envelope:
    """The envelope with its event type refined by the topic it was read from."""
    known = envelope.known_type
    if known is None or not is_intelligence_topic(topic):
        return envelope
    refined = _ON_INTELLIGENCE_TOPIC.get(known)
    if refined is None:
        return envelope
    return envelope.with_type(refined.value)
