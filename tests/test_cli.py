"""The `corral` command as an operator uses it: migrate, then read state."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from corral.cli import main
from corral.state import close_backends, open_store


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path}/cli.db"
    close_backends()


def corral(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_migrate_creates_then_reports_current(db: str) -> None:
    code, out, _ = corral("--db", db, "migrate")
    assert code == 0
    assert "upgraded from empty to revision" in out
    code, out, _ = corral("--db", db, "migrate")
    assert code == 0
    assert "already at revision" in out


def test_migrate_rejects_unsupported_database() -> None:
    code, _, err = corral("--db", "mysql://root@localhost/test", "migrate")
    assert code == 1
    assert "unsupported database 'mysql'" in err


def test_state_ls_and_get_show_values_with_their_types(db: str) -> None:
    store = open_store(db, "inst-1")
    asyncio.run(store.set_many({"cfg:a": (1, 2), "cfg:b": Decimal("1.10"), "other": None}))

    code, out, _ = corral("--db", db, "state", "ls", "inst-1", "--prefix", "cfg:", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"key": "cfg:a", "value": {"$tuple": [1, 2]}},
        {"key": "cfg:b", "value": {"$decimal": "1.10"}},
    ]

    code, out, _ = corral("--db", db, "state", "get", "inst-1", "other", "--json")
    assert (code, json.loads(out)) == (0, None)  # a stored None is present, not missing

    code, out, _ = corral("--db", db, "state", "ls", "inst-1")
    assert code == 0
    assert "3 key(s)" in out


def test_state_get_missing_key_exits_1_with_a_message(db: str) -> None:
    code, out, err = corral("--db", db, "state", "get", "inst-1", "nope")
    assert code == 1
    assert out == ""
    assert "no key 'nope' in inst-1" in err


def test_state_get_bad_key_is_a_clear_error(db: str) -> None:
    code, _, err = corral("--db", db, "state", "get", "inst-1", "x" * 600)
    assert code == 1
    assert "the limit is 512" in err
