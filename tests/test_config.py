"""The configuration as an operator writes it: a ``corral.toml``, ``CORRAL_*`` variables,
``--db``; what wins, what ``corral config`` shows, and what a mistake is told."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli import main
from corral.config import KEYS, RuntimeConfig
from corral.db import DEFAULT_URL
from corral.db.raw import close_databases
from corral.errors import ConfigError
from corral.quotas import MAX_QUOTA, Quotas
from corral.sandbox.limits import Limits
from corral.state import close_backends

DOCS = Path(__file__).parent.parent / "docs" / "configuration.md"

FILE = """\
database_url = "sqlite:///from-file.db"

[limits]
timeout_s = 120
memory_mb = 512

[ceilings]
timeout_s = 600

[retries]
attempts = 7

[quotas]
store_bytes = "16MiB"

[server]
port = 9000
"""


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "corral.toml"
    path.write_text(FILE)
    return path


def load(environ: dict[str, str] | None = None, **kwargs: object) -> RuntimeConfig:
    return RuntimeConfig.load(environ=environ or {}, **kwargs)  # type: ignore[arg-type]


def refused(environ: dict[str, str] | None = None, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as raised:
        load(environ, **kwargs)
    return str(raised.value)


# -- where a value comes from -------------------------------------------------------------


def test_without_a_file_or_variables_every_setting_is_its_default() -> None:
    config = load()
    assert config == RuntimeConfig()
    assert config.file is None
    assert {source for _, _, source in config.settings()} == {"default"}
    assert (config.limits, config.quotas) == (Limits(), Quotas())
    assert (config.retries.attempts, config.retries.backoff_s) == (3, 1.0)
    assert config.server.effective_public_url == "http://127.0.0.1:8000"


def test_the_environment_wins_over_the_file_and_the_file_over_the_defaults(toml: Path) -> None:
    environ = {"CORRAL_LIMITS_TIMEOUT_S": "90", "CORRAL_RATE_LIMITS_PER_5MIN": "1000"}
    config = load(environ, config_file=toml)
    path = str(toml)
    assert config.file == path
    assert (config.limits.timeout_s, config.source("limits.timeout_s")) == (
        90.0,
        "CORRAL_LIMITS_TIMEOUT_S",
    )
    assert (config.limits.memory_mb, config.source("limits.memory_mb")) == (512, path)
    assert (config.limits.cpu_s, config.source("limits.cpu_s")) == (30.0, "default")
    assert (config.ceilings.timeout_s, config.source("ceilings.timeout_s")) == (600.0, path)
    assert config.rate_limits.per_5min == 1000
    assert config.rate_limits.windows[0].executions == 1000
    assert (config.retries.attempts, config.source("retries.attempts")) == (7, path)
    assert config.quotas.store_bytes == 16 * 1024 * 1024
    assert (config.database_url, config.source("database_url")) == ("sqlite:///from-file.db", path)
    # The public URL follows the port unless it is set.
    assert config.server.effective_public_url == "http://127.0.0.1:9000"


def test_db_wins_over_the_environment_which_wins_over_the_file(toml: Path) -> None:
    environ = {"CORRAL_DATABASE_URL": "sqlite:///from-env.db"}
    config = load(environ, config_file=toml)
    assert (config.database_url, config.source("database_url")) == (
        "sqlite:///from-env.db",
        "CORRAL_DATABASE_URL",
    )
    config = load(environ, config_file=toml, database_url="sqlite:///from-option.db")
    assert (config.database_url, config.source("database_url")) == (
        "sqlite:///from-option.db",
        "--db",
    )


def test_the_database_url_comes_from_the_argument_then_the_environment_then_the_default() -> None:
    assert load({}).database_url == DEFAULT_URL == "sqlite:///./.corral/corral.db"
    environ = {"CORRAL_DATABASE_URL": "postgresql://from-env/db"}
    assert load(environ).database_url == "postgresql://from-env/db"
    assert load(environ, database_url="sqlite:///explicit.db").database_url == (
        "sqlite:///explicit.db"
    )


def test_corral_config_names_the_file_unless_config_does(toml: Path, tmp_path: Path) -> None:
    assert load({"CORRAL_CONFIG": str(toml)}).retries.attempts == 7
    other = tmp_path / "other.toml"
    other.write_text("[retries]\nattempts = 2\n")
    config = load({"CORRAL_CONFIG": str(toml)}, config_file=other)
    assert (config.retries.attempts, config.file) == (2, str(other))


def test_a_variable_set_empty_is_unset_and_amounts_read_as_people_write_them() -> None:
    config = load(
        {
            "CORRAL_QUOTAS_STORE_BYTES": "2gib",
            "CORRAL_QUOTAS_STORE_KEYS": "5_000",
            "CORRAL_QUOTAS_PENDING_TASKS": " 20 ",
            "CORRAL_QUOTAS_CALLBACKS": "",
            "CORRAL_RETRIES_BACKOFF_S": "0.25",
        }
    )
    assert config.quotas == Quotas(store_bytes=2**31, store_keys=5_000, pending_tasks=20)
    assert config.source("quotas.callbacks") == "default"
    assert config.retries.backoff.base_ms == 250


# -- what a mistake is told ----------------------------------------------------------------

WHOLE_BYTES = (
    f"a whole number of bytes, or of KiB, MiB or GiB (such as 64MiB), from 1 to {MAX_QUOTA:,}"
)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"CORRAL_LIMITS_TIMEOUT_S": "soon"},
            "CORRAL_LIMITS_TIMEOUT_S must be a number of seconds from 0.001 to 86,400, got 'soon'",
        ),
        (
            {"CORRAL_LIMITS_MEMORY_MB": "1.5"},
            "CORRAL_LIMITS_MEMORY_MB must be a whole number of MiB from 16 to 1,048,576, got '1.5'",
        ),
        (
            {"CORRAL_CEILINGS_CPU_S": "nan"},
            "CORRAL_CEILINGS_CPU_S must be a number of seconds from 0.001 to 86,400, got 'nan'",
        ),
        (
            {"CORRAL_QUOTAS_STORE_BYTES": "64 MB"},
            f"CORRAL_QUOTAS_STORE_BYTES must be {WHOLE_BYTES}, got '64 MB'",
        ),
        (
            {"CORRAL_QUOTAS_PENDING_TASKS": "1KiB"},
            f"CORRAL_QUOTAS_PENDING_TASKS must be a whole number from 1 to {MAX_QUOTA:,}, "
            "got '1KiB'",
        ),
        (
            {"CORRAL_QUOTAS_STORE_KEYS": "0"},
            f"CORRAL_QUOTAS_STORE_KEYS must be a whole number from 1 to {MAX_QUOTA:,}, got '0'",
        ),
        (
            {"CORRAL_RETRIES_ATTEMPTS": "-1"},
            "CORRAL_RETRIES_ATTEMPTS must be a whole number from 1 to 1,000, got '-1'",
        ),
        (
            {"CORRAL_SERVER_PORT": "70000"},
            "CORRAL_SERVER_PORT must be a whole number (0: any free port) from 0 to 65,535, "
            "got '70000'",
        ),
        (
            {"CORRAL_SERVER_PUBLIC_URL": "corral.example.com"},
            "CORRAL_SERVER_PUBLIC_URL must be an http:// or https:// URL without a query, "
            "got 'corral.example.com'",
        ),
    ],
)
def test_a_bad_variable_names_itself_its_value_and_what_it_takes(
    environ: dict[str, str], message: str
) -> None:
    assert refused(environ) == message


def test_a_misspelt_variable_is_refused_naming_the_sections_settings() -> None:
    assert refused({"CORRAL_QUOTAS_STORE_BYTE": "1MiB"}) == (
        "CORRAL_QUOTAS_STORE_BYTE names no setting: the [quotas] settings are "
        "CORRAL_QUOTAS_STORE_BYTES, CORRAL_QUOTAS_STORE_KEYS, CORRAL_QUOTAS_PENDING_TASKS, "
        "CORRAL_QUOTAS_CALLBACKS, CORRAL_QUOTAS_WEBHOOKS, CORRAL_QUOTAS_ACTIVITIES"
    )
    # Variables outside the sections are other programs' business (and the tests').
    assert load({"CORRAL_REQUIRE_POSTGRES": "1", "CORRAL_DEMO_API_PORT": "1"}) == RuntimeConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[limits]\nmemory_mb = 256.5\n",
            "[limits] memory_mb in {path} must be a whole number of MiB from 16 to 1,048,576, "
            "got 256.5",
        ),
        (
            "[limits]\ntimeout_s = true\n",
            "[limits] timeout_s in {path} must be a number of seconds from 0.001 to 86,400, "
            "got True",
        ),
        (
            "[retries]\nattempts = '5'\n",
            "[retries] attempts in {path} must be a whole number from 1 to 1,000, got '5'",
        ),
        (
            "database_url = 5\n",
            "database_url in {path} must be a database URL (sqlite:///path or "
            "postgresql://…), got 5",
        ),
        (
            "[limits]\ntimeout = 120\n",
            "[limits] in {path} has no key 'timeout': its keys are requests, timeout_s, cpu_s, "
            "memory_mb",
        ),
        (
            "[limit]\ntimeout_s = 120\n",
            "{path} has 'limit', which is no setting: the sections are [limits], [ceilings], "
            "[rate_limits], [retries], [quotas], [webhooks], [server], [retention], and the "
            "top-level key database_url",
        ),
        ("limits = 5\n", "limits in {path} must be a section, [limits], got 5"),
        (
            "[limits]\ntimeout_s = \n",
            "{path} is not valid TOML: Invalid value (at line 2, column 13)",
        ),
    ],
)
def test_a_bad_file_is_refused_naming_the_file_the_key_and_what_it_takes(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "corral.toml"
    path.write_text(text)
    assert refused(config_file=path) == message.format(path=path)


def test_a_file_that_is_not_there_is_refused_naming_what_named_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    assert refused(config_file=missing) == f"--config names {missing}, which does not exist"
    assert refused({"CORRAL_CONFIG": str(missing)}) == (
        f"CORRAL_CONFIG names {missing}, which does not exist"
    )
    assert refused(config_file=tmp_path) == (
        f"--config names {tmp_path}, which cannot be read: Is a directory"
    )


def test_a_default_above_its_ceiling_is_refused_naming_both_and_their_sources(
    toml: Path,
) -> None:
    assert refused({"CORRAL_LIMITS_TIMEOUT_S": "700"}, config_file=toml) == (
        f"limits.timeout_s = 700 (from CORRAL_LIMITS_TIMEOUT_S) is above its ceiling, "
        f"ceilings.timeout_s = 600 (from {toml}): lower the default or raise the ceiling"
    )
    assert refused({"CORRAL_CEILINGS_MEMORY_MB": "128"}) == (
        "limits.memory_mb = 256 (the default) is above its ceiling, ceilings.memory_mb = 128 "
        "(from CORRAL_CEILINGS_MEMORY_MB): lower the default or raise the ceiling"
    )


# -- corral config ---------------------------------------------------------------------------


def corral(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_corral_config_json_gives_each_value_and_its_source(toml: Path) -> None:
    env = {"CORRAL_LIMITS_TIMEOUT_S": "90", "CORRAL_DATABASE_URL": "postgresql://u:pw@h/db"}
    code, out, _ = corral("--config", str(toml), "config", "--json", env=env)
    assert code == 0
    shown = json.loads(out)
    assert shown["limits"]["timeout_s"] == {"value": 90.0, "source": "CORRAL_LIMITS_TIMEOUT_S"}
    assert shown["limits"]["memory_mb"] == {"value": 512, "source": str(toml)}
    assert shown["limits"]["cpu_s"] == {"value": 30.0, "source": "default"}
    assert shown["retention"]["logs_days"] == {"value": 30, "source": "default"}
    # A password is never shown.
    assert shown["database_url"] == {
        "value": "postgresql://u:***@h/db",
        "source": "CORRAL_DATABASE_URL",
    }
    assert sorted(f"{s}.{k}" for s, keys in shown.items() if s != "database_url" for k in keys) == (
        sorted(key.dotted for key in KEYS if key.section)
    )


def test_corral_config_prints_toml_that_configures_the_same(toml: Path, tmp_path: Path) -> None:
    code, out, _ = corral(
        "--config", str(toml), "config", env={"CORRAL_RATE_LIMITS_PER_24H": "800"}
    )
    assert code == 0
    assert out.startswith(f"# configuration file: {toml}\n")
    assert re.search(r"^per_24h = 800 +# CORRAL_RATE_LIMITS_PER_24H$", out, re.MULTILINE)
    assert re.search(rf"^attempts = 7 +# {re.escape(str(toml))}$", out, re.MULTILINE)
    copy = tmp_path / "copy.toml"
    copy.write_text(out)
    assert tomllib.loads(out)["rate_limits"]["per_24h"] == 800
    shown = load({"CORRAL_RATE_LIMITS_PER_24H": "800"}, config_file=toml)
    copied = load(config_file=copy)
    assert [value for _, value, _ in copied.settings()] == [v for _, v, _ in shown.settings()]


def test_a_bad_configuration_is_one_line_for_any_command_that_needs_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    for command in (["config"], ["instances"], ["migrate"]):
        code, out, err = corral("--config", str(missing), *command)
        assert (code, out, err) == (
            1,
            "",
            f"Error: --config names {missing}, which does not exist\n",
        )


def test_the_docs_name_every_setting_and_its_variable() -> None:
    docs = DOCS.read_text()
    for key in KEYS:
        assert f"`{key.variable}`" in docs, key.variable
        assert f"`{key.name}`" in docs, key.name


@pytest.fixture(autouse=True)
def _closed() -> Iterator[None]:
    """Whatever a command opened is closed after each test."""
    yield
    close_backends()
    close_databases()
