"""examples/batched_sync.py over the demo paginated API, as `make run` runs it."""

from __future__ import annotations

from pathlib import Path

from examples.demo import paged_api
from examples.demo.paged_api import PagedApi

from corral import ActivityType
from tests.runtime.conftest import Runtime

EXAMPLE = Path(__file__).parents[2] / "examples" / "batched_sync.py"


async def test_the_example_syncs_every_page_one_task_each(runtime: Runtime) -> None:
    api = PagedApi(port=0)  # not the fixed port: a `make run` may hold it
    try:
        code = EXAMPLE.read_text()
        assert code.count(f"127.0.0.1:{paged_api.DEFAULT_PORT}") == 1
        await runtime.deploy(
            "batched-sync", code.replace(f":{paged_api.DEFAULT_PORT}", f":{api.port}")
        )
        instance = runtime.install("batched-sync").id
        await runtime.idle()
    finally:
        api.close()

    pages = runtime.executions(instance, "sync_page")
    assert len(pages) == paged_api.PAGES
    assert {r["outcome"] for r in pages} == {"ok"}
    assert max(r["requests_used"] for r in pages) <= 7  # of a budget of 1,000
    store = runtime.store(instance)
    expected = [item for n in range(1, paged_api.PAGES + 1) for item in paged_api.items(n)]
    stored = [value for _, value in await store.list_entries("item:")]
    assert sorted(stored, key=lambda item: item["id"]) == expected
    watched = [item for item in expected if item["score"] >= 97]
    assert await store.get("progress") == {
        "pages": paged_api.PAGES,
        "items": len(expected),
        "watched": len(watched),
    }
    logs = runtime.logs(instance)
    first = sum(item["score"] >= 97 for item in paged_api.items(1))
    assert (
        f"page 1/20: stored 50 items, 50 so far; {first} watched as activities (995 requests left)"
        in logs
    )
    assert (
        logs[-1] == f"sync complete: 1000 items in 20 pages, {len(watched)} watched as activities"
    )

    # The watched items, one activity each, as the sync made them.
    activities = runtime.services.plot.activities("default", limit=1_000)
    assert sorted(a.source or "" for a in activities) == sorted(
        f"demo:item:{item['id']}" for item in watched
    )
    item = watched[0]
    [mirrored] = [a for a in activities if a.source == f"demo:item:{item['id']}"]
    assert (mirrored.type, mirrored.title, mirrored.done) == (
        ActivityType.ACTION,
        item["title"],
        False,
    )
    assert (mirrored.meta, mirrored.author) == ({"score": item["score"]}, instance)
    assert [(n.key, n.content) for n in mirrored.notes] == [("description", item["description"])]
