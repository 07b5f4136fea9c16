"""What every command shares: a user's error is one clear line on stderr, never a
traceback, and never an empty success."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from corral.state import close_backends
from tests.cli.invoke import corral
from tests.support import closed_port

GREETER = Path(__file__).parents[2] / "examples" / "greeter.py"


@pytest.mark.parametrize("command", [["worker", "--until-idle"], ["dev", "."], ["exec", "x", "f"]])
def test_a_bad_quota_in_the_environment_is_one_clear_line(
    db: str, command: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "x").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORRAL_QUOTAS_STORE_BYTES", "lots")
    code, out, err = corral("--db", db, *command)
    assert (code, out) == (1, "")
    assert err == (
        "Error: CORRAL_QUOTAS_STORE_BYTES must be a whole number of bytes, or of KiB, MiB or "
        "GiB (such as 64MiB), from 1 to 4,611,686,018,427,387,904, got 'lots'\n"
    )


@pytest.mark.parametrize(
    "command",
    [
        ["executions", "nobody-1"],
        ["logs", "nobody-1"],
        ["logs", "nobody-1", "--follow"],
        ["tasks", "nobody-1"],
        ["state", "ls", "nobody-1"],
        ["state", "get", "nobody-1", "key"],
        ["exec", str(GREETER), "visitors", "--instance", "nobody-1"],
        ["uninstall", "nobody-1"],
    ],
    ids=lambda command: " ".join(word for word in command if "/" not in word),
)
def test_an_unknown_instance_is_an_error_not_an_empty_listing(db: str, command: list[str]) -> None:
    assert corral("--db", db, *command) == (
        1,
        "",
        "Error: there is no instance 'nobody-1' (see corral instances)\n",
    )


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (
            ["worker", "--until-idle", "--concurrency", "0"],
            "Invalid value for '--concurrency': 0 is not in the range x>=1 "
            "(see corral worker --help)",
        ),
        (
            ["worker", "--until-idle", "--cpu", "-1"],
            "Invalid value for '--cpu': -1 is not in the range x>=0 (see corral worker --help)",
        ),
        (
            ["executions", "--limit", "0"],
            "Invalid value for '--limit': 0 is not in the range x>=1 "
            "(see corral executions --help)",
        ),
        (
            ["tasks", "retry", "x"],
            "usage: corral tasks retry ID (a task id, a number) (see corral tasks --help)",
        ),
        (["nope"], "No such command 'nope' (see corral --help)"),
        (["--db"], "Option '--db' requires an argument (see corral --help)"),
    ],
)
def test_a_bad_argument_or_option_is_one_line(db: str, command: list[str], message: str) -> None:
    args = command if command[0].startswith("--") else ["--db", db, *command]
    assert corral(*args) == (2, "", f"Error: {message}\n")


def test_a_postgresql_database_that_does_not_exist_is_one_line(postgres_server: str) -> None:
    name = f"corral_missing_{uuid.uuid4().hex[:8]}"
    url = sa.make_url(postgres_server).set(database=name).render_as_string(False)
    assert corral("--db", url, "instances") == (
        1,
        "",
        f'Error: cannot use the database {url}: database "{name}" does not exist\n',
    )


def test_a_postgresql_port_nothing_listens_on_is_one_line(postgres_server: str) -> None:
    with closed_port() as port:
        url = sa.make_url(postgres_server).set(port=port).render_as_string(False)
        code, out, err = corral("--db", url, "instances")
    assert (code, out) == (1, "")
    assert err.startswith(f"Error: cannot reach the database {url}: connection failed: ")
    assert err.endswith("Connection refused\n")
    assert err.count("\n") == 1


def test_a_password_in_the_url_is_not_printed(postgres_server: str) -> None:
    with closed_port() as port:
        url = sa.make_url(postgres_server).set(port=port, password="s3cret")
        code, _, err = corral("--db", url.render_as_string(False), "instances")
    assert code == 1
    assert "s3cret" not in err
    assert err.startswith(f"Error: cannot reach the database {url.render_as_string()}: ")


def test_a_file_that_is_no_database_is_one_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(bytes(range(256)) * 20)
    assert corral("--db", f"sqlite:///{garbage}", "instances") == (
        1,
        "",
        f"Error: cannot use the database sqlite:///{garbage}: file is not a database\n",
    )


def test_a_truncated_database_file_is_one_line(db: str, tmp_path: Path) -> None:
    assert corral("--db", db, "deploy", str(GREETER))[0] == 0
    assert corral("--db", db, "install", "greeter")[0] == 0
    close_backends()  # its write-ahead log is folded into the file
    truncated = tmp_path / "truncated.db"
    shutil.copy(db.removeprefix("sqlite:///"), truncated)
    with truncated.open("r+b") as file:
        file.truncate(2 * 4096)  # the schema's page and one more: the tables' pages are gone
    assert corral("--db", f"sqlite:///{truncated}", "instances") == (
        1,
        "",
        f"Error: cannot use the database sqlite:///{truncated}: database disk image is malformed\n",
    )


def test_a_sqlite_file_in_a_missing_folder_is_refused_not_made(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nonexistent/dir/x.db"
    assert corral("--db", url, "instances") == (
        1,
        "",
        f"Error: cannot open the SQLite database '{url}': the folder "
        f"{tmp_path}/nonexistent/dir does not exist (create it first, or check the path)\n",
    )
    assert not (tmp_path / "nonexistent").exists()


def test_the_default_database_folder_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CORRAL_DATABASE_URL", raising=False)
    assert corral("instances", "--json") == (0, "[]\n", "")
    assert (tmp_path / ".corral" / "corral.db").exists()
