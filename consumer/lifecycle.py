"""How the daemon stops: gracefully on SIGTERM/SIGINT or a cancel, within a grace period.

A stop asks the loop to finish and commit the batch in hand and leave the group. If that takes
longer than the grace period (``OMNISINK_SHUTDOWN_GRACE_S``) the loop is cancelled: the
batch's transaction rolls back and its records are read again by the next owner, so nothing
is lost; the caller exits 3.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import structlog

from consumer.errors import FatalError, is_transient

log = structlog.get_logger("omnisink.worker")


@contextlib.contextmanager
def crashes_reported(
    stopping: asyncio.Event, in_hand: Callable[[], dict[str, Any]]
) -> Iterator[None]:
    """Around the loop: a transient error met while stopping ends it quietly (nothing is
    lost); an error nobody classified (a bug) is said once, with the traceback and the batch
    in hand (its transaction rolled back; the next start reads it again), and raised. A
    FatalError goes on untouched: the caller says what to fix (exit 2), without a traceback."""
    try:
        yield
    except FatalError:
        raise
    except Exception as exc:
        if stopping.is_set() and is_transient(exc):
            log.warning("worker.stopped_while_retrying", error=str(exc))
            return
        log.exception(
            "worker.crashed",
            error_class=f"{type(exc).__module__}.{type(exc).__qualname__}",
            error=str(exc),
            **in_hand(),
        )
        raise


async def run_gracefully(
    main: Coroutine[Any, Any, None],
    stopping: asyncio.Event,
    *,
    stop: Callable[[], None],
    grace_s: float,
    signals: bool,
) -> bool:
    """Run ``main`` until it returns or ``stopping`` is set, then give it ``grace_s`` to
    finish. Returns whether the grace period expired (the loop was cancelled). A cancel of
    this coroutine is a graceful stop that then goes on as a cancel."""
    loop = asyncio.get_running_loop()
    if signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
    task = asyncio.create_task(main, name="omnisink-worker")
    waiter = asyncio.create_task(stopping.wait(), name="omnisink-stop-signal")
    abandoned = False
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            abandoned = await _with_grace(task, grace_s)
        if not abandoned:
            task.result()  # the loop's own failure, if any (an abandoned loop was cancelled)
    except asyncio.CancelledError:
        stop()
        await _with_grace(task, grace_s)
        raise
    finally:
        waiter.cancel()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    return abandoned


async def _with_grace(task: asyncio.Task[None], grace_s: float) -> bool:
    try:
        await asyncio.wait_for(asyncio.shield(task), grace_s)
    except TimeoutError:
        log.warning("worker.grace_expired", grace_s=grace_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True
    return False


# The garbage collector's thresholds for a sink process (Python's: 700, 10, 10). A batch
# allocates tens of thousands of short-lived objects (records, envelopes, rows), so with the
# defaults the collector runs young collections constantly and full ones often, each scanning
# every object alive (measured: decoding took twice as long). Reference counting frees almost
# all of them anyway; the collector is only for cycles, so it may run far less often.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """For a process that runs the sink (``omnisink run``, ``replay``, the benchmark): what is
    alive at start-up (modules, settings) is frozen out of the collector's scans, and the
    thresholds above apply."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
