"""The dead letters in PostgreSQL, for an operator: list them, show one, send them back (redrive),
or give up on them (discard).

Contract section 5. ``omnisink.dead_letters`` (migration 013) keeps every record the sink could
never write, with its original key, value and headers; the ``omnisink dlq`` commands
(consumer/cli.py) read it through this package:

- ``model``: what the commands select and show (filters, rows, bytes as an operator reads them)
  and the one error they raise, :class:`~consumer.dlq.model.DlqError`;
- ``queries``: the connection and every statement, written out whole;
- ``redrive``: the redrive protocol (publish, acknowledge, mark);
- ``render``: tables, plain lines and JSON;
- ``commands``: ``list``, ``show``, ``redrive`` and ``discard``, from parsed arguments to output.

Redrive publishes each selected record again to its ORIGINAL topic, with its original key,
value and headers plus ``omnisink.redrive.of: <dead letter id>``, with acks=all, in id order,
and marks exactly the acknowledged rows ``redriven``. The sink then consumes the copy as a new
record (new offset): written if the cause is gone, else dead-lettered again as a new row.

Decisions:

- **Rows are locked while their records are published** (``FOR UPDATE SKIP LOCKED``, one
  transaction per chunk of ``REDRIVE_CHUNK`` rows), so two redrives running at once never
  publish the same dead letter twice; the mark also keeps its ``status = 'pending'`` guard.
  Chunks bound memory (a value is up to ``OMNISINK_MAX_MESSAGE_BYTES``) and the length of a
  transaction.
- **The selection is fixed when the command starts** (``id <= max(id)`` then): the copies it
  publishes may fail again and come back as new pending rows while it runs; they are not
  picked up by the same command, so a redrive always ends.
- **The partition is the producer's choice** (the default partitioner, by key), not the
  original partition: a keyed record lands with the other records of its key even if the
  topic gained partitions since.
- **A failure stops the redrive**: nothing after the first record that could not be
  published is sent; every record the broker acknowledged is marked (so running the command
  again does not publish it twice), the rest stays pending.
- **Discard is a mark, in one statement**: pending rows matching the filters become
  ``discarded`` (``status = 'pending'`` guard; a row a redrive holds locked is waited for, then
  skipped as redriven). Nothing is published or deleted, and a discarded row is never selected
  by a redrive. The table has no column for who discarded a row or when (migration 013).
- **Bytes are shown as UTF-8 text when they decode to printable text**, else as hex, always
  saying which (``utf-8`` or ``hex``): a value with terminal escapes is never printed raw.
"""
