"""The deployment files name only settings and commands that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from consumer.cli import _flatten, app
from consumer.settings import Settings, known_variables

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy").rglob("*.yaml"))


def _known_variables() -> set[str]:
    """Every setting (``omnisink config`` prints them) and each secret's ``_FILE``."""
    listed = {f"OMNISINK_{name}" for name in _flatten(Settings().model_dump(mode="json"))}
    assert listed <= known_variables()
    return known_variables()


def test_there_are_manifests() -> None:
    assert len(MANIFESTS) >= 3


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_uses_real_settings_and_commands(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert documents, f"{path} is empty"
    text = path.read_text()
    for variable in set(re.findall(r"\bOMNISINK_[A-Z0-9_]+", text)):
        assert variable in _known_variables(), f"{path.name}: unknown setting {variable}"
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    for doc in documents:
        for container in _containers(doc):
            args = container.get("args") or []
            if args:
                assert args[0] in commands, f"{path.name}: `omnisink {args[0]}` does not exist"


def _containers(doc: dict[str, object]) -> list[dict[str, list[str]]]:
    spec = doc.get("spec")
    while isinstance(spec, dict) and "template" in spec:
        spec = spec["template"].get("spec")
    if isinstance(spec, dict):
        return list(spec.get("containers", []))
    return []


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"OMNISINK_[A-Z0-9_]+", readme))
    missing = _known_variables() - listed
    assert not missing, f"README does not list {sorted(missing)}"


def test_the_image_ships_no_dev_tooling_nor_tests() -> None:
    copied: set[str] = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copied.update(w.rstrip("/") for w in words[1:-1])
    assert copied, "the Dockerfile copies nothing from the build context"
    assert not copied & {"dev", "tests", "."}, f"the image copies {sorted(copied)}"
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {"dev", "tests"} <= ignored, "the build context should leave out dev/ and tests/"
