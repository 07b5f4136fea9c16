"""``corral state``: an instance's store read from the shell."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

from corral.state import open_store
from tests.cli.invoke import corral


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

    code, out, _ = corral("--db", db, "state", "ls", "inst-1", "--prefix", "cfg:")
    assert code == 0
    used = asyncio.run(store.usage())
    assert used[1] == 3
    assert f"2 key(s); the store holds 3, {used[0]:,} bytes" in out


def test_state_get_missing_key_exits_1_with_a_message(db: str) -> None:
    code, out, err = corral("--db", db, "state", "get", "inst-1", "nope")
    assert code == 1
    assert out == ""
    assert "no key 'nope' in inst-1" in err


def test_state_get_bad_key_is_a_clear_error(db: str) -> None:
    code, _, err = corral("--db", db, "state", "get", "inst-1", "x" * 600)
    assert code == 1
    assert "the limit is 512" in err
