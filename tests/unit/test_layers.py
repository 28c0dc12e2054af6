"""The layers of docs/architecture.md, held against the code: the domain (``handlers/``)
imports nothing of the daemon (``consumer/``) and no driver exception class, so every error a
driver raises is classified in one place (consumer/errors.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HANDLER_FILES = sorted((ROOT / "handlers").rglob("*.py"))


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) for every import in the file."""
    out: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [alias.name for alias in node.names]))
    return out


def _attributes(path: Path) -> set[str]:
    """Dotted names used in the file (``asyncpg.exceptions.X`` -> that string)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute):
            parts: list[str] = []
            current: ast.expr = node
            while isinstance(current, ast.Attribute):
                parts.append(current.attr)
                current = current.value
            if isinstance(current, ast.Name):
                parts.append(current.id)
                names.add(".".join(reversed(parts)))
    return names


@pytest.mark.parametrize("path", HANDLER_FILES, ids=lambda p: p.name)
def test_handlers_import_nothing_of_the_consumer_nor_of_kafka(path: Path) -> None:
    for module, _ in _imports(path):
        assert not module.startswith(("consumer", "aiokafka")), f"{path.name} imports {module}"


@pytest.mark.parametrize("path", HANDLER_FILES, ids=lambda p: p.name)
def test_handlers_use_no_driver_exception_class(path: Path) -> None:
    for module, names in _imports(path):
        assert not module.startswith("asyncpg.exceptions"), f"{path.name} imports {module}"
        if module == "asyncpg":
            errors = [n for n in names if n.endswith(("Error", "Exception", "Warning"))]
            assert not errors, f"{path.name} imports {errors} from asyncpg"
    used = {
        name
        for name in _attributes(path)
        if name.startswith("asyncpg.")
        and (
            name.startswith("asyncpg.exceptions")
            or name.rsplit(".", 1)[-1].endswith(("Error", "Exception", "Warning"))
        )
    }
    assert not used, f"{path.name} uses {sorted(used)}"


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncpg\nraise asyncpg.exceptions.SerializationError('x')\n")
    assert "asyncpg.exceptions.SerializationError" in _attributes(bad)
    bad.write_text("from consumer.worker import Worker\n")
    assert _imports(bad) == [("consumer.worker", ["Worker"])]
