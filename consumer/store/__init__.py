"""The sink's PostgreSQL: everything the daemon (and the tools beside it) write or check there.

- ``batch.py``: ONE function writes a batch (decode, event_logs, handlers in savepoints,
  bisection, dead-letter rows, fenced offsets) and returns one ``Outcome``;
- ``offsets.py``: the consumed offsets, fenced;
- ``dead_letters.py``: the dead-letter rows;
- ``database.py``: the connection pool and the schema check.
"""
