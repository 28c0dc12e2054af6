"""Log lines never carry a secret the CLI handed to ``logs.hide``: the sink's own lines, a
traceback, a library's record and its exception, in either format."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import orjson
import pytest
import structlog

from consumer import logs

SECRET = "Zq7Vw3Lk9x"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        logs.hide(())
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


def _connect() -> None:
    raise RuntimeError(f"connect to postgresql://sink:{SECRET}@db/x failed")


def _log_everything() -> None:
    log = structlog.get_logger("test.logs")
    log.warning("transient_error", error=f"password {SECRET} rejected", nested={"k": [SECRET]})
    try:
        _connect()
    except RuntimeError:
        log.exception("worker.crashed")
        logging.getLogger("asyncpg.test").exception("library saw %s", SECRET)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_line_carries_a_hidden_secret(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    logs.configure("INFO", fmt)  # type: ignore[arg-type]
    logs.hide([SECRET, "", f"postgresql://sink:{SECRET}@db/x"])
    _log_everything()
    err = capsys.readouterr().err
    assert SECRET not in err
    assert err.count("***") >= 5
    assert "transient_error" in err
    assert "worker.crashed" in err
    assert "library saw ***" in err
    assert "Traceback" in err  # the tracebacks are still there, scrubbed
    if fmt == "json":
        lines = [orjson.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert lines[0]["error"] == "password *** rejected"
        assert lines[0]["nested"] == {"k": ["***"]}


def test_nothing_is_hidden_until_told(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    structlog.get_logger("test.logs").warning("plain", value=SECRET)
    assert SECRET in capsys.readouterr().err
