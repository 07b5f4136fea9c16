"""A batched sync: one page per execution, each page a fresh task with a fresh budget.

The seeds' page-based pattern. The "remote API" here is a deterministic data set
computed in the agent (outbound fetch is not built yet); swap ``_page`` for a
``self.fetch`` of a real paginated API once it is.
"""

from corral import Agent

PAGES = 20
PER_PAGE = 50


class BatchedSync(Agent):
    limits = {"requests": 1000}

    async def activate(self, priority):
        await self.set("synced", 0)
        await self.run_task(await self.callback(self.sync_page, 1))

    async def sync_page(self, page):
        items = _page(page)
        await self.store.set_many({f"item:{item['id']}": item for item in items})
        synced = (await self.get("synced") or 0) + len(items)
        await self.set("synced", synced)
        print(f"page {page}/{PAGES}: {len(items)} items, {synced} synced so far")
        if page < PAGES:
            await self.run_task(await self.callback(self.sync_page, page + 1))
        else:
            print(f"sync complete: {synced} items")
        return synced


def _page(page):
    first = (page - 1) * PER_PAGE
    return [
        {"id": n, "title": f"item {n}", "score": (n * 37) % 101}
        for n in range(first, first + PER_PAGE)
    ]
