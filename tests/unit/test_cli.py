"""The ``omnisink`` command line itself: --version, -h, what ``config`` prints, and how a
configuration problem is said (in-process; no command here reaches a service)."""

from __future__ import annotations

import os
import re

import pytest
from typer.testing import CliRunner, Result

from consumer import __version__
from consumer.cli import app

PASSWORD = "Zq7Vw3Lk9x"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OMNISINK_"):
            monkeypatch.delenv(name)


def omnisink(*args: str, **env: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def test_version_option_and_command() -> None:
    for args in (["--version"], ["version"]):
        result = omnisink(*args)
        assert result.exit_code == 0, result.output
        assert result.stdout == f"{__version__}\n"


@pytest.mark.parametrize(
    "command", [[], ["config"], ["migrate"], ["run"], ["dlq"], ["dlq", "list"], ["dlq", "redrive"]]
)
@pytest.mark.parametrize("option", ["-h", "--help"])
def test_help_short_and_long(command: list[str], option: str) -> None:
    result = omnisink(*command, option)
    assert result.exit_code == 0, result.output
    assert f"Usage: omnisink {' '.join(command)}".rstrip() in result.stdout
    assert re.search(r"--help\s+-h\s", result.stdout), result.stdout  # rich's table


def test_the_top_level_help_names_version_and_the_commands() -> None:
    text = omnisink("-h").stdout
    assert "--version" in text
    for command in ("version", "config", "migrate", "run", "dlq"):
        assert command in text


def test_config_prints_secrets_redacted(tmp_path: os.PathLike[str]) -> None:
    result = omnisink(
        "config",
        OMNISINK_DATABASE_URL=f"postgresql://sink:{PASSWORD}@db/events?sslmode=require",
        OMNISINK_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        OMNISINK_KAFKA_SASL_MECHANISM="PLAIN",
        OMNISINK_KAFKA_SASL_USERNAME="sink",
        OMNISINK_KAFKA_SASL_PASSWORD=f"{PASSWORD}-sasl",
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    lines = result.stdout.splitlines()
    assert "OMNISINK_DATABASE_URL=postgresql://sink:***@db/events?sslmode=require" in lines
    assert "OMNISINK_KAFKA_SASL_PASSWORD=**********" in lines


def test_an_invalid_setting_exits_2_naming_it_without_its_value() -> None:
    result = omnisink(
        "config",
        OMNISINK_DATABASE_URL=f"mysql://sink:{PASSWORD}@db/events",
        OMNISINK_KAFKA_SASL_MECHANISM="PLAIN",
        OMNISINK_KAFKA_SASL_PASSWORD=f"{PASSWORD}-sasl",
    )
    assert result.exit_code == 2
    assert PASSWORD not in result.output
    assert result.stderr == (
        "omnisink: invalid configuration:\n"
        "  OMNISINK_DATABASE_URL must be a postgresql:// URL\n"
        "  OMNISINK_KAFKA_SASL_MECHANISM=PLAIN needs OMNISINK_KAFKA_SASL_USERNAME\n"
    )


def test_a_secret_file_problem_exits_2() -> None:
    result = omnisink("config", OMNISINK_KAFKA_SASL_PASSWORD_FILE="/nonexistent/sasl")
    assert result.exit_code == 2
    assert result.stderr == (
        "omnisink: invalid configuration: OMNISINK_KAFKA_SASL_PASSWORD_FILE: cannot read "
        "/nonexistent/sasl: No such file or directory\n"
    )


def test_an_unknown_variable_is_a_warning_on_stderr() -> None:
    result = omnisink("config", OMNISINK_GROPU_ID="sink-a", OMNISINK_TEST_ANYTHING="x")
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "omnisink: warning: OMNISINK_GROPU_ID is not a setting; ignored "
        "(did you mean OMNISINK_GROUP_ID?)\n"
    )
    assert "OMNISINK_GROUP_ID=omnisink" in result.stdout.splitlines()
