"""``corral state``: an instance's store read from the shell."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from decimal import Decimal

from corral.state import open_store
from tests.cli.invoke import corral


def test_state_ls_and_get_show_values_with_their_types(db: str, instance: str) -> None:
    store = open_store(db, instance)
    asyncio.run(store.set_many({"cfg:a": (1, 2), "cfg:b": Decimal("1.10"), "other": None}))

    code, out, _ = corral("--db", db, "state", "ls", instance, "--prefix", "cfg:", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"key": "cfg:a", "value": {"$tuple": [1, 2]}},
        {"key": "cfg:b", "value": {"$decimal": "1.10"}},
    ]

    code, out, _ = corral("--db", db, "state", "get", instance, "other", "--json")
    assert (code, json.loads(out)) == (0, None)  # a stored None is present, not missing

    code, out, _ = corral("--db", db, "state", "ls", instance, "--prefix", "cfg:")
    assert code == 0
    used = asyncio.run(store.usage())
    assert used[1] == 3
    assert f"2 key(s); the store holds 3, {used[0]:,} bytes" in out


def test_state_get_prints_a_value_as_state_ls_does(db: str, instance: str) -> None:
    when = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    asyncio.run(open_store(db, instance).set_many({"when": when, "pair": (1, "a")}))
    assert corral("--db", db, "state", "get", instance, "when") == (
        0,
        '{"$datetime": "2026-05-01T12:00:00+00:00"}\n',
        "",
    )
    assert corral("--db", db, "state", "get", instance, "pair") == (0, '{"$tuple": [1, "a"]}\n', "")
    _, listed, _ = corral("--db", db, "state", "ls", instance)
    assert '│ pair │ {"$tuple": [1, "a"]}' in listed


def test_an_integer_of_any_size_is_shown(db: str, instance: str) -> None:
    huge = 10**5000  # past the 4,300 digits Python converts to decimal text
    asyncio.run(open_store(db, instance).set("big", huge))
    code, out, _ = corral("--db", db, "state", "get", instance, "big", "--json")
    assert code == 0
    assert int(json.loads(out)["$int"], 0) == huge
    code, out, _ = corral("--db", db, "state", "ls", instance, "--json")
    assert code == 0
    assert int(json.loads(out)[0]["value"]["$int"], 0) == huge
    code, out, _ = corral("--db", db, "state", "ls", instance)
    assert (code, out.count('{"$int":')) == (0, 1)


def test_state_get_missing_key_exits_1_with_a_message(db: str, instance: str) -> None:
    code, out, err = corral("--db", db, "state", "get", instance, "nope")
    assert (code, out) == (1, "")
    assert err == f"Error: no key 'nope' in {instance} (never set, deleted, or expired)\n"


def test_state_get_bad_key_is_a_clear_error(db: str, instance: str) -> None:
    code, _, err = corral("--db", db, "state", "get", instance, "x" * 600)
    assert code == 1
    assert "the limit is 512" in err
