"""The ``omnisink dlq`` commands, from parsed arguments to what the operator reads.

consumer/cli.py parses the arguments and turns a :class:`DlqError` into the exit status its
``exit_code`` says (README, "Dead letters"); everything in between is here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import asyncpg
import typer

from consumer.dlq import queries, render
from consumer.dlq.model import DlqError, Filters
from consumer.dlq.redrive import RedriveResult, open_producer, redrive
from consumer.settings import Settings


async def list_dead_letters(
    settings: Settings, filters: Filters, status: str | None, limit: int, *, as_json: bool
) -> None:
    """Dead letters matching ``filters`` and ``status`` (None for any), newest first."""
    async with queries.connect(settings) as conn:
        rows = await queries.fetch_list(conn, filters, status, limit)
    if as_json:
        typer.echo(render.dumps([row.to_json() for row in rows]))
        return
    if not rows:
        typer.echo(f"no {'' if status is None else status + ' '}dead letters match")
        return
    render.console().print(render.table(rows))
    if len(rows) == limit:
        typer.echo(f"(the newest {limit} shown; --limit for more)", err=True)


async def show_dead_letter(settings: Settings, dead_letter_id: int, *, as_json: bool) -> None:
    """Every fact of one dead letter; an unknown id is a :class:`DlqError` (exit 1)."""
    async with queries.connect(settings) as conn:
        detail = await queries.fetch_one(conn, dead_letter_id)
    if detail is None:
        raise DlqError(f"no dead letter with id {dead_letter_id}")
    if as_json:
        typer.echo(render.dumps(detail.to_json()))
        return
    typer.echo("\n".join(render.detail_lines(detail)))


async def redrive_dead_letters(settings: Settings, filters: Filters, *, dry_run: bool) -> None:
    """Redrive the pending dead letters matching ``filters`` (or, with ``dry_run``, list them).

    An unknown id stops it before anything is published; ids that are not pending are
    skipped, and said so. A record that could not be published is a :class:`DlqError`
    (exit 1) once what was published is reported.
    """
    async with queries.connect(settings) as conn:
        if filters.ids:
            await _check_ids(conn, filters.ids, "redrive", "redriven")
        todo = await queries.pending(conn, filters)
        if not todo:
            typer.echo("omnisink dlq redrive: no pending dead letter matches; nothing to do")
            return
        if dry_run:
            render.console().print(render.table(todo, title="would be redriven, in this order"))
            topics = render.topics_summary(Counter(row.topic for row in todo))
            typer.echo(
                f"omnisink dlq redrive: dry run: {len(todo)} would be redriven to {topics}; "
                "nothing was published or changed"
            )
            return
        producer = await open_producer(settings)
        try:
            result = await redrive(conn, producer, filters)
        finally:
            await producer.stop()
    _report(result)


async def discard_dead_letters(settings: Settings, filters: Filters, *, dry_run: bool) -> None:
    """Mark the pending dead letters matching ``filters`` discarded (or, with ``dry_run``,
    list them): kept in the table, never redriven, nothing published or deleted.

    An unknown id stops it before anything changes; ids that are not pending are skipped,
    and said so.
    """
    async with queries.connect(settings) as conn:
        if filters.ids:
            await _check_ids(conn, filters.ids, "discard", "discarded")
        if dry_run:
            todo = await queries.pending(conn, filters)
            if not todo:
                typer.echo("omnisink dlq discard: no pending dead letter matches; nothing to do")
                return
            render.console().print(render.table(todo, title="would be discarded"))
            topics = render.topics_summary(Counter(row.topic for row in todo))
            typer.echo(
                f"omnisink dlq discard: dry run: {len(todo)} would be discarded from {topics}; "
                "nothing was changed"
            )
            return
        marked = await queries.mark_discarded(conn, filters)
    if not marked:
        typer.echo("omnisink dlq discard: no pending dead letter matches; nothing to do")
        return
    topics = render.topics_summary(Counter(topic for _, topic in marked))
    typer.echo(f"omnisink dlq discard: {len(marked)} discarded from {topics}")


async def _check_ids(
    conn: asyncpg.Connection, ids: Sequence[int], command: str, done_word: str
) -> None:
    """Every id exists (else a :class:`DlqError`, exit 1, before anything changes); those
    that are not pending are said to be skipped."""
    statuses = await queries.fetch_statuses(conn, ids)
    missing = sorted(set(ids) - set(statuses))
    if missing:
        raise DlqError(
            f"no dead letter with id {', '.join(map(str, missing))}; nothing was {done_word}"
        )
    done = sorted((i, s) for i, s in statuses.items() if s != "pending")
    if done:
        shown = ", ".join(f"{i} ({s})" for i, s in done)
        typer.echo(f"omnisink dlq {command}: not pending, skipped: {shown}", err=True)


def _report(result: RedriveResult) -> None:
    topics = render.topics_summary(result.topics)
    typer.echo(
        f"omnisink dlq redrive: {len(result.redriven)} redriven"
        + (f" to {topics}" if topics else "")
    )
    if result.not_marked:
        shown = ", ".join(map(str, result.not_marked))
        typer.echo(
            f"omnisink dlq redrive: published but no longer pending when marked (another "
            f"redrive marked them): {shown}",
            err=True,
        )
    if result.error is not None:
        raise DlqError(
            f"dead letter {result.failed_id} could not be published to {result.failed_topic}: "
            f"{type(result.error).__name__}: {result.error}. Stopped there: "
            f"{len(result.redriven)} redriven, the rest are still pending."
        ) from result.error
