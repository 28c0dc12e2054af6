"""Development tooling, kept out of the daemon's package and out of the image: the OmniNode
producers' events in their wire shapes (``dev.producers``), sample streams (``dev.sample``),
embedded or external services for tests and the demo (``dev.services``),
``make demo`` (``dev.demo``) and ``make bench`` (``dev.bench``).

Not installed (pyproject.toml packages only consumer, handlers and migrations): it is imported
from the repository root, where ``make`` and pytest run.
"""
