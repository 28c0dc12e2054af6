"""The sink as it is deployed, for the benchmark: ``omnisink run`` in a process of its own.

A daemon is ``python -m consumer.cli run`` with ``OMNISINK_*`` variables (and no others of the
caller's: a stray setting would change what is measured), its structured JSON log written to
a file and read back once it exits. Its peak RSS is the kernel's account of that process
(``wait4``'s ``ru_maxrss``, KiB on Linux), not a sample, taken by a small launcher that forks
it and waits for it: Linux carries ``ru_maxrss`` across ``exec`` from the image that called
it, so a daemon started straight from the benchmark (a gigabyte of sample stream and send
results by then) would report the benchmark's peak, not its own. Forked from the launcher
(a bare interpreter, ~10 MB), it starts from that instead.

What the figures are read from: the summary the worker logs when it caught up and when it
stops (``worker.caught_up``, ``worker.stopped``: consumer/stats.py), whose ``events_per_s`` is
the written events over first record to last commit; and the UTC timestamp of its last
``batch.committed`` line, which places that span on the wall clock (two members' spans are
put together that way).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson

# Throughout the benchmark: a short session, so that a member leaving or joining is noticed
# in seconds (as the in-process measurements' settings do, dev/bench.py).
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 500

# `-c LAUNCHER MARK COMMAND...`: forks COMMAND, passes SIGTERM on to it, and once it exits
# writes MARK=its peak RSS on stdout and exits as it did. Run with -S -I: no site, no paths
# from the environment, the least memory.
LAUNCHER = """
import os, signal, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
signal.signal(signal.SIGINT, signal.SIG_IGN)
_, status, usage = os.wait4(pid, 0)
print(f"{sys.argv[1]}={usage.ru_maxrss}", flush=True)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""
RSS_MARK = "omnisink-bench-peak-rss-kib"


@dataclass
class Summary:
    """What one daemon did, from its log."""

    written: int = 0
    batches: int = 0
    events_per_s: float = 0.0
    # Seconds from the worker's start to the summary (the group join and the drain's last
    # check included).
    elapsed_s: float = 0.0
    # When its last batch committed (UTC, seconds since the epoch); None if none did.
    last_commit_at: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def active_s(self) -> float:
        """First record to last commit, as the worker measured it."""
        return self.written / self.events_per_s if self.events_per_s else 0.0

    @property
    def first_record_at(self) -> float | None:
        """When its first record arrived (UTC), from the last commit and the active span."""
        if self.last_commit_at is None:
            return None
        return self.last_commit_at - self.active_s


def environment(db_url: str, servers: str, group: str, topics: list[str]) -> dict[str, str]:
    """The daemon's environment: the caller's, without any OMNISINK_* of its own, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("OMNISINK_")}
    env.update(
        {
            "OMNISINK_DATABASE_URL": db_url,
            "OMNISINK_KAFKA_BOOTSTRAP_SERVERS": servers,
            "OMNISINK_KAFKA_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
            "OMNISINK_KAFKA_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_INTERVAL_MS),
            "OMNISINK_GROUP_ID": group,
            "OMNISINK_TOPICS": ",".join(topics),
            "OMNISINK_HTTP_ENABLED": "false",
            "OMNISINK_LOG_LEVEL": "INFO",
            "OMNISINK_LOG_FORMAT": "json",
        }
    )
    return env


class Daemon:
    """One ``omnisink run`` process. ``start()``, then ``await wait()`` (or ``stop()`` first)."""

    def __init__(
        self,
        db_url: str,
        servers: str,
        group: str,
        topics: list[str],
        *,
        until_caught_up: bool,
        timeout_s: float = 600.0,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.env = environment(db_url, servers, group, topics) | (settings or {})
        self.args = [sys.executable, "-m", "consumer.cli", "run"]
        if until_caught_up:
            self.args += ["--until-caught-up", "--timeout-s", f"{timeout_s:g}"]
        self.timeout_s = timeout_s
        self._log: IO[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.peak_rss_kib = 0

    def start(self) -> None:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by wait()
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 - closed by wait()
        launcher = [sys.executable, "-S", "-I", "-c", LAUNCHER, RSS_MARK]
        self._process = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
            launcher + self.args,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._log,
            cwd=_checkout(),
            start_new_session=True,  # its own process group, the daemon in it
        )

    def stop(self) -> None:
        """A graceful stop (SIGTERM): the batch in hand is committed, the member leaves."""
        if self._process is not None and self.exit_code is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)

    async def wait(self) -> Summary:
        """Wait for the process to exit (killed after its timeout and 30 s more); its summary.
        Raises if it exited with an error."""
        process = self._process
        if process is None:
            raise RuntimeError("the daemon is not started")
        try:
            await asyncio.to_thread(process.wait, self.timeout_s + 30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the group of the launcher we started
            await asyncio.to_thread(process.wait)
        self.exit_code = process.returncode
        self.peak_rss_kib = self._read_peak_rss()
        summary = self._read_log()
        if self.exit_code != 0:
            raise RuntimeError(
                f"omnisink run exited {self.exit_code}: " + "; ".join(summary.errors[-3:])
            )
        return summary

    def _read_peak_rss(self) -> int:
        out, self._out = self._out, None
        if out is None:
            return 0
        out.seek(0)
        lines = out.read().decode(errors="replace").splitlines()
        out.close()
        for line in reversed(lines):
            mark, _, value = line.partition("=")
            if mark == RSS_MARK and value.isdigit():
                return int(value)
        return 0

    def _read_log(self) -> Summary:
        summary = Summary()
        log = self._log
        if log is None:
            return summary
        log.seek(0)
        for line in log:
            try:
                entry: dict[str, Any] = orjson.loads(line)
            except orjson.JSONDecodeError:
                summary.errors.append(line.decode(errors="replace").strip())
                continue
            if not isinstance(entry, dict):
                continue
            event = entry.get("event")
            if event == "batch.committed":
                summary.last_commit_at = _epoch(entry.get("timestamp"))
            elif event in {"worker.caught_up", "worker.stopped"}:
                # caught_up first; stopped repeats it, with the close in elapsed_s.
                if event == "worker.caught_up" or not summary.elapsed_s:
                    summary.elapsed_s = float(entry.get("elapsed_s", 0.0))
                summary.written = int(entry.get("written", 0))
                summary.batches = int(entry.get("batches", 0))
                summary.events_per_s = float(entry.get("events_per_s", 0.0))
            elif entry.get("level") in {"error", "critical"}:
                summary.errors.append(str(event))
        log.close()
        self._log = None
        return summary


def _epoch(stamp: object) -> float | None:
    if not isinstance(stamp, str):
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def drain(
    db_url: str, servers: str, group: str, topics: list[str], *, members: int = 1
) -> tuple[list[Summary], list[int]]:
    """``members`` daemons of one group, each ``--until-caught-up``: their summaries and peak
    RSS (KiB)."""
    daemons = [Daemon(db_url, servers, group, topics, until_caught_up=True) for _ in range(members)]
    for daemon in daemons:
        daemon.start()
    waits = [asyncio.create_task(d.wait()) for d in daemons]
    await asyncio.wait(waits, return_when=asyncio.FIRST_EXCEPTION)
    if any(w.done() and w.exception() for w in waits):
        for daemon in daemons:
            daemon.stop()  # the others would wait for the failed member's partitions
    await asyncio.wait(waits)
    summaries = [w.result() for w in waits]  # the first failure, if any, is raised
    return summaries, [d.peak_rss_kib for d in daemons]


def _checkout() -> Path:
    """The checkout: where ``python -m consumer.cli`` finds the package (editable install or
    not)."""
    return Path(__file__).resolve().parent.parent
