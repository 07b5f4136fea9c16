"""examples/batched_sync.py and examples/triage.py together, as `make run` installs them
(one priority): the sync's activities reach triage, triage's notes reach the sync, and
syncing again updates what the first sync made instead of duplicating it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from examples.demo import paged_api
from examples.demo.paged_api import PagedApi

from corral import Activity
from tests.runtime.conftest import Runtime

EXAMPLES = Path(__file__).parents[2] / "examples"
PRIORITY = "examples"


def sync_code(port: int, watch_score: int = 97) -> str:
    """batched_sync.py on the test's API port, watching items rated ``watch_score`` or more."""
    code = (EXAMPLES / "batched_sync.py").read_text()
    assert code.count(f"127.0.0.1:{paged_api.DEFAULT_PORT}") == 1
    assert code.count("\nWATCH_SCORE = 97\n") == 1
    return code.replace(f":{paged_api.DEFAULT_PORT}", f":{port}").replace(
        "\nWATCH_SCORE = 97\n", f"\nWATCH_SCORE = {watch_score}\n"
    )


def every_item() -> list[dict[str, Any]]:
    return [item for n in range(1, paged_api.PAGES + 1) for item in paged_api.items(n)]


def verdict(score: int) -> str:
    """Triage's note, as the reader of `corral activities show` sees it."""
    return (
        f"urgent: rated {score}, look at it today" if score >= 99 else f"this week: rated {score}"
    )


def by_source(runtime: Runtime) -> dict[str, Activity]:
    found = runtime.services.plot.activities(PRIORITY, limit=10_000)
    mirrored = {a.source: a for a in found if a.source is not None}
    assert len(mirrored) == len(found)  # every activity is an item's, and once
    return mirrored


async def test_the_sync_and_triage_answer_each_other_once_per_item(runtime: Runtime) -> None:
    api = PagedApi(port=0)  # not the fixed port: a `make run` may hold it
    try:
        await runtime.deploy("batched-sync", sync_code(api.port))
        await runtime.deploy("triage", (EXAMPLES / "triage.py").read_text())
        sync = runtime.install("batched-sync", priority=PRIORITY).id
        triage = runtime.install("triage", priority=PRIORITY).id
        await runtime.idle()

        watched = [item for item in every_item() if item["score"] >= 97]
        first = by_source(runtime)
        assert sorted(first) == sorted(f"demo:item:{item['id']}" for item in watched)
        for item in watched:
            activity = first[f"demo:item:{item['id']}"]
            assert activity.author == sync
            assert [(n.key, n.content, n.author) for n in activity.notes] == [
                ("description", item["description"], sync),
                ("triage", verdict(item["score"]), triage),
            ]
        # Each new activity reached triage once; each triage note reached the sync once,
        # which kept the verdict and answered nothing: no more events, no loop.
        heard = runtime.executions(triage, "on_activity")
        answered = runtime.executions(sync, "on_activity")
        assert len(heard) == len(answered) == len(watched)
        assert {r["outcome"] for r in heard + answered} == {"ok"}
        kept = dict(await runtime.store(sync).list_entries("triage:"))
        assert kept == {f"triage:{item['id']}": verdict(item["score"]) for item in watched}
        item = watched[0]
        assert f"item {item['id']} (new) -> {verdict(item['score'])}" in runtime.logs(triage)
        assert (
            f"item {item['id']}: triage noted {verdict(item['score'])!r}, kept beside the item"
            in runtime.logs(sync)
        )

        # A new version, watching more items: its upgrade syncs every page again.
        runtime.clock.advance(60_000)
        await runtime.deploy("batched-sync", sync_code(api.port, watch_score=95))
        await runtime.idle()
    finally:
        api.close()

    assert len(runtime.executions(sync, "sync_page")) == 2 * paged_api.PAGES
    assert "new version: syncing again (activities made before are updated, not duplicated)" in (
        runtime.logs(sync)
    )
    more = [item for item in every_item() if item["score"] >= 95]
    second = by_source(runtime)
    assert sorted(second) == sorted(f"demo:item:{item['id']}" for item in more)
    # What the first sync made is the same activity, untouched (no update, no event);
    # only the newly watched items were created, and only they reached triage.
    assert {source: second[source] for source in first} == first
    assert len(runtime.executions(triage, "on_activity")) == len(more)
    assert len(runtime.executions(sync, "on_activity")) == len(more)
    assert not [line for line in runtime.logs(sync) if "activity event loop" in line]
