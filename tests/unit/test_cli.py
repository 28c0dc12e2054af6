"""The ``omnisink`` command line itself: --version, -h, what ``config`` prints, and how a
configuration problem is said (in-process; no command here reaches a service)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from dotenv import dotenv_values
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from consumer import __version__
from consumer.cli import app
from consumer.settings import ENV_PREFIX, FILE_SUFFIX, Settings, known_variables, secret_settings

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


# -- config --env: a .env file that loads back -------------------------------------------------

# Values a .env file must quote: blanks, '#', quotes, backslashes (a doubled one, one at the
# end), '$', '&' and '?' in a URL, a regular expression.
TRICKY = {
    "OMNISINK_DATABASE_URL": f"postgresql://sink:{PASSWORD}@db:6432/events?sslmode=require"
    "&application_name=omni%20sink",
    "OMNISINK_KAFKA_BOOTSTRAP_SERVERS": "kafka-0:9092,kafka-1:9092",
    "OMNISINK_KAFKA_CLIENT_ID": "sink #1 'blue' \\\\ \"x\" $HOME end\\",
    "OMNISINK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "OMNISINK_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "OMNISINK_KAFKA_SASL_USERNAME": "sink",
    "OMNISINK_KAFKA_SASL_PASSWORD": f"{PASSWORD}-sasl",
    "OMNISINK_GROUP_INSTANCE_ID": "sink-0",
    "OMNISINK_TOPIC_PATTERN": r"^dev\.(?:a|b)\\x\.v\d+$",
    "OMNISINK_TOPICS": "dev.a.v1, dev.b.v2",
    "OMNISINK_BATCH_MAX_WAIT_MS": "0",
    "OMNISINK_SHUTDOWN_GRACE_S": "12.5",
    "OMNISINK_HTTP_ENABLED": "false",
    "OMNISINK_LOG_FORMAT": "console",
}


def _printed_env(tmp_path: Path, **env: str) -> tuple[Path, str]:
    result = omnisink("config", "--env", **env)
    assert result.exit_code == 0, result.output
    path = tmp_path / "omnisink.env"
    path.write_text(result.stdout)
    return path, result.stdout


def _settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    with monkeypatch.context() as patched:
        for name, value in env.items():
            patched.setenv(name, value)
        return Settings()


def test_config_env_loads_back_as_the_same_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, text = _printed_env(tmp_path, **TRICKY)
    assert PASSWORD not in text
    lines = text.splitlines()
    # Each secret is redacted, a comment line right above it saying so.
    url = "OMNISINK_DATABASE_URL='postgresql://sink:***@db:6432/events?sslmode=require"
    [at] = [i for i, line in enumerate(lines) if line.startswith(url)]
    assert lines[at - 1].startswith("# redacted: the password in OMNISINK_DATABASE_URL")
    at = lines.index("OMNISINK_KAFKA_SASL_PASSWORD=***")
    assert lines[at - 1].startswith("# redacted: the value of OMNISINK_KAFKA_SASL_PASSWORD")
    assert "OMNISINK_TOPICS=dev.a.v1,dev.b.v2" in lines  # the form OMNISINK_TOPICS is read in
    assert "OMNISINK_HTTP_ENABLED=false" in lines
    # Every setting is there, an unset one commented out.
    for name in known_variables() - {ENV_PREFIX + n + FILE_SUFFIX for n in secret_settings()}:
        assert any(line in (f"# {name}=",) or line.startswith(f"{name}=") for line in lines), name
    assert "# OMNISINK_DATABASE_URL_FILE=" not in lines  # a _FILE is no setting of its own

    original = _settings(monkeypatch, TRICKY)
    expected = original.model_copy(
        update={
            "database": original.database.model_copy(
                update={"url": SecretStr(original.database.redacted_url)}
            ),
            "kafka": original.kafka.model_copy(update={"sasl_password": SecretStr("***")}),
        }
    )
    # Read back by pydantic-settings from the file...
    loaded = Settings(_env_file=path)  # type: ignore[call-arg]
    assert loaded.model_dump() == expected.model_dump()
    assert loaded == expected
    assert loaded.kafka.client_id == TRICKY["OMNISINK_KAFKA_CLIENT_ID"]
    assert loaded.topic_pattern == TRICKY["OMNISINK_TOPIC_PATTERN"]
    assert loaded.topics == ["dev.a.v1", "dev.b.v2"]
    # ...and from the environment, the file's lines exported.
    exported = {k: v for k, v in dotenv_values(path).items() if v is not None}
    assert _settings(monkeypatch, exported) == expected


def test_config_env_of_the_defaults_loads_back_identical(tmp_path: Path) -> None:
    path, text = _printed_env(tmp_path)
    assert "redacted:" not in text  # the default URL holds no password
    assert "# OMNISINK_GROUP_INSTANCE_ID=" in text.splitlines()
    assert Settings(_env_file=path) == Settings()  # type: ignore[call-arg]


def test_config_env_says_where_a_secret_file_is(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text(f"postgresql://sink:{PASSWORD}@db/events\n")
    _, text = _printed_env(tmp_path, OMNISINK_DATABASE_URL_FILE=str(secret))
    assert PASSWORD not in text
    assert f"read from OMNISINK_DATABASE_URL_FILE={secret}" in text
    assert "OMNISINK_DATABASE_URL=postgresql://sink:***@db/events" in text.splitlines()


def test_plain_config_is_not_a_dotenv_file() -> None:
    result = omnisink("config", OMNISINK_TOPICS="a.v1,b.v1")
    assert result.exit_code == 0, result.output
    assert "OMNISINK_TOPICS=['a.v1', 'b.v1']" in result.stdout.splitlines()
    assert not result.stdout.startswith("#")


# -- check: a configuration that does not load --------------------------------------------------


def test_check_with_an_invalid_configuration_exits_2_checking_nothing_else() -> None:
    result = omnisink(
        "check",
        OMNISINK_DATABASE_URL=f"mysql://sink:{PASSWORD}@db/events",
        OMNISINK_GROPU_ID="x",
    )
    assert result.exit_code == 2, result.output
    assert PASSWORD not in result.output
    assert result.stdout.splitlines() == [
        "✗ configuration: invalid: OMNISINK_DATABASE_URL must be a postgresql:// URL",
        "! configuration: OMNISINK_GROPU_ID is not a setting; ignored "
        "(did you mean OMNISINK_GROUP_ID?)",
        "omnisink check: the configuration does not load; nothing else was checked",
    ]


# -- the new commands' help, shell completion ---------------------------------------------------


@pytest.mark.parametrize("command", [["check"], ["dlq", "discard"], ["config"]])
def test_help_of_check_discard_and_config(command: list[str]) -> None:
    result = omnisink(*command, "-h")
    assert result.exit_code == 0, result.output
    assert f"Usage: omnisink {' '.join(command)}" in result.stdout
    expected = {"check": "--timeout-s", "discard": "--dry-run", "config": "--env"}[command[-1]]
    assert expected in result.stdout


def test_shell_completion_is_offered_and_completes_commands_and_choices() -> None:
    text = omnisink("-h").stdout
    assert "--install-completion" in text
    assert "--show-completion" in text
    for words, cword, expected in (
        ("omnisink dlq di", "2", "discard"),
        ("omnisink ch", "1", "check"),
        ("omnisink dlq list --status ", "4", "discarded"),
    ):
        result = CliRunner().invoke(
            app,
            [],
            env={"_OMNISINK_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword},
            prog_name="omnisink",
        )
        assert result.exit_code == 0, result.output
        assert expected in result.stdout.split(), (words, result.stdout)
