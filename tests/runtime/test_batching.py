"""The seeds' batching patterns (SPEC §1.2, §1.6) run to completion through the worker.

Each agent has a budget of 100 requests per execution and 3,000 items to get
through, so the work only finishes if the pattern hands the rest to ``run_task``
before the budget runs out. Every item leaves a ``done:`` key whose value is
derived from the item, so the totals check both that each item was processed
once and that nothing was skipped.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.runtime.conftest import Runtime

ITEMS = 3_000
REQUESTS = 100

# Page-based: the items live in the store, written in one request by activate;
# each execution reads one page of 100 with get_many and writes its results with
# set_many, then queues the next page.
PAGES = """
from corral.sdk import Agent

class Pages(Agent):
    limits = {"requests": 100}
    PAGE = 100

    async def activate(self, priority):
        await self.store.set_many({f"item:{i:05d}": i * 3 for i in range(3000)})
        await self.set("sync_state", {"page": 0, "processed": 0, "total": 0})
        await self.run_task(await self.callback(self.sync_page))

    async def sync_page(self):
        state = await self.get("sync_state")
        start = state["page"] * self.PAGE
        keys = [f"item:{i:05d}" for i in range(start, start + self.PAGE)]
        values = [v for v in await self.store.get_many(keys) if v is not None]
        await self.store.set_many({f"done:{start + n:05d}": v + 1 for n, v in enumerate(values)})
        state = {
            "page": state["page"] + 1,
            "processed": state["processed"] + len(values),
            "total": state["total"] + sum(values),
        }
        if len(values) == self.PAGE:
            await self.set("sync_state", state)
            await self.run_task(await self.callback(self.sync_page))
        else:
            await self.set("result", state)
            await self.clear("sync_state")
        return {"progress": state["page"]}
"""

# Token-based: a paginated "API" computed from an opaque continuation token; the
# token lives in the store between executions. Each item costs one request.
TOKENS = """
from corral.sdk import Agent

def fetch_page(token):
    offset = 0 if token is None else int(token.removeprefix("cursor-"))
    items = list(range(offset, min(offset + 80, 3000)))
    nxt = f"cursor-{offset + 80}" if offset + 80 < 3000 else None
    return items, nxt

class Tokens(Agent):
    limits = {"requests": 100}

    async def activate(self, priority):
        await self.set("sync_state", {"next_token": None, "processed": 0, "total": 0})
        await self.run_task(self.sync_batch)

    async def sync_batch(self):
        state = await self.get("sync_state")
        items, nxt = fetch_page(state["next_token"])
        for item in items:
            await self.set(f"done:{item:05d}", item * 7)
        state = {
            "next_token": nxt,
            "processed": state["processed"] + len(items),
            "total": state["total"] + sum(i * 7 for i in items),
        }
        if nxt is not None:
            await self.set("sync_state", state)
            await self.run_task(self.sync_batch)
        else:
            await self.set("result", state)
            await self.clear("sync_state")
        return {"progress": state["processed"]}
"""

# Item-based: process one item per request for as long as the budget allows,
# keeping enough requests back to save progress and queue the rest.
ITEMS_CODE = """
from corral.sdk import Agent

RESERVE = 3  # save progress, queue the rest, and one spare

class Items(Agent):
    limits = {"requests": 100}

    async def activate(self, priority):
        await self.set("progress", {"index": 0, "total": 0})
        await self.run_task(self.process)

    async def process(self):
        progress = await self.get("progress")
        index, total = progress["index"], progress["total"]
        while index < 3000 and self.budget.requests_left > RESERVE:
            await self.set(f"done:{index:05d}", index * index)
            total += index * index
            index += 1
        if index < 3000:
            await self.set("progress", {"index": index, "total": total})
            await self.run_task(self.process)
        else:
            await self.set("result", {"processed": index, "total": total})
            await self.clear("progress")
        return {"progress": index, "left": self.budget.requests_left}
"""

ITEMS_PER_BATCH = REQUESTS - 1 - 3  # one read of the progress, three kept back


class Case:
    def __init__(
        self, code: str, method: str, done: Any, batches: int, full_batch_requests: int
    ) -> None:
        self.code = code
        self.method = method
        self.done = done  # the value each item's done: key must hold
        self.batches = batches
        self.full_batch_requests = full_batch_requests


CASES = [
    # 30 full pages, then one that finds the list exhausted; each page makes six
    # requests: get, get_many, set_many, set, callback, run_task.
    pytest.param(Case(PAGES, "sync_page", lambda i: i * 3 + 1, 31, 6), id="pages"),
    # 37 pages of 80 and one of 40; a full page is get + 80 sets + set + run_task.
    pytest.param(Case(TOKENS, "sync_batch", lambda i: i * 7, 38, 83), id="tokens"),
    # 96 items per execution until the budget is down to its reserve of three, two of
    # which save progress and queue the rest: get + 96 sets + set + run_task.
    pytest.param(
        Case(ITEMS_CODE, "process", lambda i: i * i, -(-ITEMS // ITEMS_PER_BATCH), 99),
        id="items",
    ),
]


@pytest.mark.parametrize("case", CASES)
async def test_batching_pattern_processes_every_item_once(runtime: Runtime, case: Case) -> None:
    await runtime.deploy("batcher", case.code)
    instance = runtime.install("batcher")
    await runtime.idle()

    records = runtime.executions(instance.id)
    failed = [(r["method"], r["outcome"], r["error"]) for r in records if r["outcome"] != "ok"]
    assert failed == []  # in particular, no execution hit request_limit
    assert sorted(r["method"] for r in records) == sorted(
        ["activate"] + [case.method] * case.batches
    )
    # In the order they ran (the progress each saved grows), one after the other.
    batches = sorted(
        (r for r in records if r["method"] == case.method), key=lambda r: r["result"]["progress"]
    )
    assert len({r["result"]["progress"] for r in batches}) == case.batches
    assert all(r["requests_used"] <= REQUESTS for r in records)
    # Every batch but the last used the same number of requests from its own budget.
    assert [r["requests_used"] for r in batches[:-1]] == [case.full_batch_requests] * (
        case.batches - 1
    )
    if case.method == "process":
        assert all(r["result"]["left"] == 1 for r in batches[:-1])  # the spare
        assert batches[-1]["result"]["progress"] == ITEMS

    store = runtime.store(instance.id)
    done = await store.list_entries("done:")
    assert [key for key, _ in done] == [f"done:{i:05d}" for i in range(ITEMS)]
    assert [value for _, value in done] == [case.done(i) for i in range(ITEMS)]
    result = await store.get("result")
    assert result["processed"] == ITEMS
    if case.method == "sync_page":  # the page total is over the stored items, i * 3
        assert result["total"] == sum(i * 3 for i in range(ITEMS))
    else:
        assert result["total"] == sum(case.done(i) for i in range(ITEMS))
    assert not await store.has("sync_state")
    assert not await store.has("progress")
    assert runtime.tasks(instance.id) == []
    assert runtime.tasks(instance.id, dead=True) == []
