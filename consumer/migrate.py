"""Schema migrations: the one Alembic history under ``migrations/``, run from Python.

``omnisink migrate`` and plain ``alembic upgrade head`` (with ``alembic.ini``) run the same
scripts against the same ``OMNISINK_DATABASE_URL``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import migrations


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for our history; ``url`` overrides ``OMNISINK_DATABASE_URL``."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if url is not None:
        config.attributes["url"] = url
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | None = None, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def resolve(revision: str) -> str | None:
    """The revision id that ``revision`` names (``head``, ``024``, a unique prefix), or None
    when it names none or several (``heads``, ``+1``: Alembic decides)."""
    script = ScriptDirectory.from_config(alembic_config())
    try:
        found = script.get_revision(revision)
    except Exception:  # noqa: BLE001 - Alembic's own errors for names it cannot resolve alone
        return None
    return None if found is None else found.revision


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the history is never empty
        raise RuntimeError("the migration history has no head")
    return head
