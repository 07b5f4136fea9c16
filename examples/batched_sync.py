"""A batched sync: page through an HTTP API, one page per execution, each a new task.

The seeds' page-based pattern. Each execution fetches one page, stores its
items, and hands the next page to ``run_task``, which starts a fresh execution
with a fresh budget: about 6 of its 1,000 requests per page, however many pages
there are.

``make run`` serves the API this pages, a fake one (``examples/demo/paged_api.py``):
``GET /items?page=N`` answers 50 items and the next
page's number, null after page 20. An agent cannot read the host's environment,
so its address is written here; if you moved the API with CORRAL_DEMO_API_PORT,
change API to match.
"""

from corral import Agent

API = "http://127.0.0.1:8765"


class BatchedSync(Agent):
    # The only URLs this agent may fetch: exactly /items (with any query) on the API.
    network = [f"{API}/items"]

    async def activate(self, priority):
        await self.set("progress", {"pages": 0, "items": 0})
        print(f"starting a sync of {API}/items: one page per task")
        await self.run_task(await self.callback(self.sync_page, 1))

    async def sync_page(self, page):
        response = await self.fetch(f"{API}/items?page={page}")
        if response.status != 200:  # raising makes the task retry, with backoff
            raise RuntimeError(f"page {page}: the API answered {response.status}")
        body = response.json()
        await self.store.set_many({f"item:{item['id']}": item for item in body["items"]})
        progress = await self.get("progress")
        if page > progress["pages"]:  # a retried page is stored again, not counted again
            progress = {"pages": page, "items": progress["items"] + len(body["items"])}
            await self.set("progress", progress)
        print(
            f"page {page}/{body['pages']}: stored {len(body['items'])} items, "
            f"{progress['items']} so far ({self.budget.requests_left} requests left)"
        )
        if body["next_page"] is not None:
            await self.run_task(await self.callback(self.sync_page, body["next_page"]))
            print(f"page {body['next_page']} queued as a new task")
        else:
            print(f"sync complete: {progress['items']} items in {page} pages")
        return progress
