"""``omnisink replay``: read a range of offsets again, outside the consumer group, through the
daemon's own batch write (docs/replay.md). ``plan`` says what a replay reads, ``store`` keeps
it in PostgreSQL, ``run`` reads and writes it, ``commands`` is what the operator runs."""
