"""The names the contract fixes are declared once (handlers/contract.py); the migrations'
CHECK, which must keep its own copy, lists the same dead-letter kinds."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from handlers.contract import DEAD_LETTER_KINDS, RejectKind

VERSIONS = Path(__file__).resolve().parents[2] / "migrations/versions"


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"migration_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_as_migrated() -> tuple[str, tuple[str, ...]]:
    """The last step, in revision order, that defines the dead-letter CHECK (ERROR_KINDS)."""
    steps = {module.revision: module for module in map(_load, VERSIONS.glob("[0-9]*.py"))}
    order: list[ModuleType] = []
    head = set(steps) - {m.down_revision for m in steps.values()}
    assert len(head) == 1, f"one head, not {sorted(head)}"
    revision: str | None = head.pop()
    while revision is not None:
        order.append(steps[revision])
        revision = steps[revision].down_revision
    defining = [m for m in order if hasattr(m, "ERROR_KINDS")]
    assert defining, "no migration defines the dead-letter kinds"
    return defining[0].revision, tuple(defining[0].ERROR_KINDS)


def test_the_dead_letter_check_lists_the_contracts_kinds() -> None:
    revision, kinds = _check_as_migrated()
    assert kinds == DEAD_LETTER_KINDS, f"migration {revision}'s CHECK"


def test_every_reject_kind_is_a_dead_letter_kind() -> None:
    assert set(RejectKind.__args__) <= set(DEAD_LETTER_KINDS)
