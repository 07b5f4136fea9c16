"""``GroupCommit``: writes submitted while one commit is on its way share the next.

What a submitter relies on: its own result, in order, once the commit that holds
its item is done; its item written with the others' (one transaction, so one
commit), on both backends; and another item's failure never failing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from corral.db import group_commit
from corral.db.group_commit import GroupCommit
from corral.db.raw import Database, open_database
from corral.errors import DatabaseUnavailable

_INSERT = "INSERT INTO state (scope, key, value) VALUES ('g', :key, :value)"


@pytest.fixture
def database(sql_url: str) -> Database:
    return open_database(sql_url)


class Writer:
    """Stores each item as a key, one transaction a batch; remembers the batches."""

    def __init__(self, database: Database, *, refuse: str | None = None) -> None:
        self.database = database
        self.batches: list[list[str]] = []
        self.refuse = refuse

    def __call__(self, items: Sequence[str]) -> list[str]:
        self.batches.append(list(items))
        with self.database.transaction(write=True) as cur:
            for item in items:
                if item == self.refuse:
                    raise ValueError(f"{item} cannot be stored")
                self.database.execute(cur, _INSERT, {"key": item, "value": b"\x00"})
        return [f"stored {item}" for item in items]


def stored(database: Database) -> list[str]:
    rows = database.fetch_all("SELECT key FROM state WHERE scope = 'g' ORDER BY key")
    return [key for (key,) in rows]


async def test_items_submitted_together_share_one_commit_and_get_their_own_results(
    database: Database,
) -> None:
    writer = Writer(database)
    commits = GroupCommit(database, writer)
    items = [f"k{n:02}" for n in range(10)]
    results = await asyncio.gather(*(commits.submit(item) for item in items))
    assert results == [f"stored {item}" for item in items]
    assert writer.batches == [items]
    assert stored(database) == items


async def test_a_lone_item_is_written_at_once_and_the_next_starts_a_new_batch(
    database: Database,
) -> None:
    writer = Writer(database)
    commits = GroupCommit(database, writer)
    assert await commits.submit("a") == "stored a"
    assert await commits.submit("b") == "stored b"
    assert writer.batches == [["a"], ["b"]]


async def test_a_batch_is_at_most_max_batch_items(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_commit, "MAX_BATCH", 4)
    writer = Writer(database)
    commits = GroupCommit(database, writer)
    items = [f"k{n:02}" for n in range(10)]
    await asyncio.gather(*(commits.submit(item) for item in items))
    assert [len(batch) for batch in writer.batches] == [4, 4, 2]
    assert stored(database) == items


async def test_one_item_that_fails_fails_only_itself(database: Database) -> None:
    """Items of one batch may be other tenants' deliveries: the batch is written again
    an item at a time, and only the item at fault hears the error."""
    writer = Writer(database, refuse="k03")
    commits = GroupCommit(database, writer)
    items = [f"k{n:02}" for n in range(6)]
    results = await asyncio.gather(
        *(commits.submit(item) for item in items), return_exceptions=True
    )
    failed = results.pop(3)
    assert isinstance(failed, ValueError)
    assert str(failed) == "k03 cannot be stored"
    assert results == [f"stored {item}" for item in items if item != "k03"]
    assert stored(database) == [item for item in items if item != "k03"]


async def test_an_outage_fails_the_whole_batch_without_writing_each_alone(
    database: Database,
) -> None:
    calls: list[int] = []

    def unavailable(items: Sequence[str]) -> list[str]:
        calls.append(len(items))
        raise DatabaseUnavailable("the database cannot be reached now")

    commits = GroupCommit(database, unavailable)
    results = await asyncio.gather(
        *(commits.submit(f"k{n}") for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(result, DatabaseUnavailable) for result in results)
    assert calls == [3]  # an outage is nobody's item: trying each alone would only wait longer
