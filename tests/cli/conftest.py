"""Fixtures of the CLI's tests: a fresh SQLite database per test, an instance in it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.state import close_backends
from tests.cli.invoke import corral

GREETER = Path(__file__).parents[2] / "examples" / "greeter.py"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path}/cli.db"
    close_backends()


@pytest.fixture
def instance(db: str) -> str:
    """The id of an installed instance of examples/greeter.py in ``db``."""
    assert corral("--db", db, "deploy", str(GREETER))[0] == 0
    code, out, err = corral("--db", db, "install", "greeter", "--json")
    assert code == 0, err
    return str(json.loads(out)["id"])
