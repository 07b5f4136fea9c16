"""``open_store``: the host-side entry point (SPEC §2) for stores on any backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.state import MemoryBackend, SqlBackend, close_backends, open_backend, open_store
from tests.support import FakeClock, unique_scope


@pytest.fixture(autouse=True)
def _close_shared_backends() -> Iterator[None]:
    yield
    close_backends()


async def test_none_opens_a_private_in_memory_store() -> None:
    first, second = open_store(None, "scope"), open_store(None, "scope")
    await first.set("k", 1)
    assert await first.get("k") == 1
    assert await second.get("k") is None  # each None store is its own throwaway memory
    assert isinstance(open_backend(None), MemoryBackend)


async def test_a_fresh_sqlite_file_in_a_missing_folder_just_works(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new/folder/corral.db"
    store = open_store(url, unique_scope())
    await store.set("k", "v")
    assert await store.get("k") == "v"
    assert (tmp_path / "new" / "folder" / "corral.db").exists()


async def test_stores_on_one_url_share_one_database_and_keep_their_scopes(sql_url: str) -> None:
    scope = unique_scope()
    assert open_backend(sql_url).database is open_backend(sql_url).database  # type: ignore[attr-defined]
    writer, reader, stranger = (
        open_store(sql_url, scope),
        open_store(sql_url, scope),
        open_store(sql_url, unique_scope()),
    )
    await writer.set("k", [1, 2])
    assert await reader.get("k") == [1, 2]
    assert await stranger.get("k") is None
    assert isinstance(open_backend(sql_url), SqlBackend)


async def test_data_outlives_the_backend(sql_url: str) -> None:
    scope = unique_scope()
    await open_store(sql_url, scope).set("k", "persisted")
    close_backends()
    assert await open_store(sql_url, scope).get("k") == "persisted"


async def test_open_store_takes_a_clock_and_a_value_limit(sql_url: str) -> None:
    clock = FakeClock()
    store = open_store(sql_url, unique_scope(), clock=clock, max_value_bytes=10)
    await store.set_with_ttl("k", "v", 5)
    clock.advance(5)
    assert await store.get("k") is None
    with pytest.raises(ValueError, match="the limit is 10"):
        await store.set("big", "x" * 20)
