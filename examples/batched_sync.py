"""A batched sync: page through an HTTP API, one page per execution, each a new task,
and mirror the items worth a look as activities, for triage.py to judge.

The seeds' page-based pattern. Each execution fetches one page, stores its
items, and hands the next page to ``run_task``, which starts a fresh execution
with a fresh budget: about 7 of its 1,000 requests per page, however many pages
there are.

Activities: the items rated WATCH_SCORE or more become actions of the instance's
priority, one ``create_activities`` call per page, each with the item's
description as a note. An activity's ``source`` (``demo:item:42``) is the item's
identity: a retried page or a second sync updates the activities it made before,
changing only what differs, instead of adding more. Each new activity is an event
for the other agents of the priority: triage.py answers with a note, which is an
event back here, and ``on_activity`` keeps the verdict beside the item. It writes
no activity in answer, so the exchange ends there.

Saving this file deploys a new version, whose ``upgrade`` syncs again: nothing
changed, nothing is announced; lower WATCH_SCORE and only the items it adds
become activities (and reach triage).

``make run`` serves the API this pages, a fake one (``examples/demo/paged_api.py``):
``GET /items?page=N`` answers 50 items and the next
page's number, null after page 20. An agent cannot read the host's environment,
so its address is written here; if you moved the API with CORRAL_DEMO_API_PORT,
change API to match.
"""

from corral import ActivityType, Agent

API = "http://127.0.0.1:8765"
#: Items rated this or more (of 100) are mirrored as activities.
WATCH_SCORE = 97
#: An item's activity's source: this and the item's id.
SOURCE = "demo:item:"
#: The key of triage.py's note on an activity.
TRIAGE_NOTE = "triage"


class BatchedSync(Agent):
    # The only URLs this agent may fetch: exactly /items (with any query) on the API.
    network = [f"{API}/items"]

    async def activate(self, priority):
        await self.start_sync()

    async def upgrade(self):
        print("new version: syncing again (activities made before are updated, not duplicated)")
        await self.start_sync()

    async def start_sync(self):
        await self.set("progress", {"pages": 0, "items": 0, "watched": 0})
        print(f"starting a sync of {API}/items: one page per task")
        await self.run_task(await self.callback(self.sync_page, 1))

    async def sync_page(self, page):
        response = await self.fetch(f"{API}/items?page={page}")
        if response.status != 200:  # raising makes the task retry, with backoff
            raise RuntimeError(f"page {page}: the API answered {response.status}")
        body = response.json()
        await self.store.set_many({f"item:{item['id']}": item for item in body["items"]})
        watched = [item for item in body["items"] if item["score"] >= WATCH_SCORE]
        if watched:  # one request for the whole page, written atomically
            await self.tools.plot.create_activities([activity(item) for item in watched])
        progress = await self.get("progress")
        if page > progress["pages"]:  # a retried page is stored again, not counted again
            progress = {
                "pages": page,
                "items": progress["items"] + len(body["items"]),
                "watched": progress["watched"] + len(watched),
            }
            await self.set("progress", progress)
        print(
            f"page {page}/{body['pages']}: stored {len(body['items'])} items, "
            f"{progress['items']} so far; {len(watched)} watched as activities "
            f"({self.budget.requests_left} requests left)"
        )
        if body["next_page"] is not None:
            await self.run_task(await self.callback(self.sync_page, body["next_page"]))
            print(f"page {body['next_page']} queued as a new task")
        else:
            print(
                f"sync complete: {progress['items']} items in {page} pages, "
                f"{progress['watched']} watched as activities"
            )
        return progress

    async def on_activity(self, activity, changes):
        """Another agent of the priority changed an activity (its own changes never
        come back here): keep triage's verdict on a mirrored item beside the item."""
        note = changes["note"] if changes else None
        source = activity.source or ""
        if note is None or note.key != TRIAGE_NOTE or not source.startswith(SOURCE):
            return
        await self.set(f"triage:{source.removeprefix(SOURCE)}", note.content)
        print(f"{activity.title}: triage noted {note.content!r}, kept beside the item")


def activity(item):
    """The activity that mirrors ``item``: given again, it changes only what differs."""
    return {
        "type": ActivityType.ACTION,
        "source": f"{SOURCE}{item['id']}",
        "title": item["title"],
        "meta": {"score": item["score"]},
        "notes": [{"key": "description", "content": item["description"]}],
    }
