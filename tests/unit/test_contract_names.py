"""The names the contract fixes are declared once (handlers/contract.py); the migration's
CHECK, which must keep its own copy, lists the same dead-letter kinds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from handlers.contract import DEAD_LETTER_KINDS, RejectKind

MIGRATION = Path(__file__).resolve().parents[2] / "migrations/versions/013_sink_bookkeeping.py"


def test_the_dead_letter_check_lists_the_contracts_kinds() -> None:
    spec = importlib.util.spec_from_file_location("m013", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert tuple(module.ERROR_KINDS) == DEAD_LETTER_KINDS


def test_every_reject_kind_is_a_dead_letter_kind() -> None:
    assert set(RejectKind.__args__) <= set(DEAD_LETTER_KINDS)
