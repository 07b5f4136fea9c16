"""Activity events as an agent author relies on them (SPEC §1.4), on each database.

A change to an activity queues ``on_activity(activity, changes)`` for every other
instance whose priority covers the activity's, never for its author; two agents
answering each other stop after 8 hops; and the events an instance did not ask for
neither count against its rate limits nor fill its quota of pending tasks.
Everything runs in the real sandbox through the worker.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from corral import Activity, Note
from corral.config import RateLimits, RuntimeConfig
from corral.db.tasks import ACTIVITY_EVENTS_AT_ONCE
from corral.plot.service import NO_CAUSE
from corral.plot.tools import InstancePlot
from corral.quotas import Quotas
from corral.sdk.operations import Op
from tests.runtime.conftest import Runtime, RuntimeFactory
from tests.runtime.plot_support import PLOTTER, QUIET, at, do, enqueue, heard, plotter

MINUTE_MS = 60_000


def host_plot(runtime: Runtime, instance: str) -> InstancePlot:
    """The instance's plot tool as the host runs it, for changes made while no worker
    runs: their events wait in the queue."""
    found = runtime.executor.registry.instance(instance)
    return runtime.services.plot.bound(
        instance, found.agent, found.priority, NO_CAUSE, runtime.clock
    )


def event_tasks(runtime: Runtime, instance: str) -> int:
    return sum(1 for task in runtime.tasks(instance) if task.method == "on_activity")


@pytest.mark.exercises(Op.PLOT_CREATE)
async def test_an_event_reaches_every_other_instance_that_sees_the_activity(
    runtime: Runtime,
) -> None:
    author = await plotter(runtime, "work/acme")
    beside = await plotter(runtime, "work/acme")
    above = await plotter(runtime, "work")
    sibling = await plotter(runtime, "work/other")
    below = await plotter(runtime, "work/acme/web")
    home = await plotter(runtime, "home")
    quiet = await plotter(runtime, "work", agent="quiet", code=QUIET)  # no on_activity

    (made,) = await do(runtime, author, "plot.create_activity({'type': 'event', 'title': 'a'})")
    assert await heard(runtime, beside) == [(made, None)]
    assert await heard(runtime, above) == [(made, None)]
    for deaf in (author, sibling, below, home):
        assert await heard(runtime, deaf) == []
    (record,) = runtime.executions(above, "on_activity")
    assert (record["trigger"], record["outcome"]) == ("activity", "ok")
    # An agent without on_activity gets no event at all, not one that does nothing.
    assert runtime.executions(quiet) == []
    assert runtime.tasks(quiet) == []

    # work's own activity is not work/acme's business; one of work/acme/web is.
    (mine,) = await do(runtime, above, "plot.create_activity({'type': 'note', 'title': 'w'})")
    (deep,) = await do(
        runtime,
        above,
        "plot.create_activity({'type': 'note', 'title': 'd', 'priority': 'work/acme/web'})",
    )
    assert [await heard(runtime, i) for i in (author, beside, below)] == [[(deep, None)]] * 3
    assert [await heard(runtime, i) for i in (above, sibling, home)] == [[], [], []]
    assert runtime.tasks(quiet) == []
    assert mine.priority == "work"


@pytest.mark.exercises(Op.PLOT_CREATE, Op.PLOT_UPDATE, Op.PLOT_ADD_NOTE, Op.PLOT_CREATE_MANY)
async def test_changes_say_what_changed_and_no_change_is_no_event(runtime: Runtime) -> None:
    author = await plotter(runtime, "work")
    listener = await plotter(runtime, "work")
    (made,) = await do(
        runtime,
        author,
        "plot.create_activity({'type': 'action', 'title': 't', 'source': 'gh:1'})",
    )
    assert await heard(runtime, listener) == [(made, None)]

    async def change(*calls: str, **given: Any) -> list[tuple[Activity, dict[str, Any] | None]]:
        runtime.clock.advance(MINUTE_MS)
        await do(runtime, author, *calls, id=made.id, **given)
        return await heard(runtime, listener)

    (event,) = await change("plot.update_activity(given['id'], title='renamed')")
    renamed = replace(made, title="renamed", updated_at=at(runtime.clock.now_ms))
    assert event == (renamed, {"previous": made, "fields": ["title"], "note": None})

    # The same values again change nothing: no event, and updated_at stays.
    assert await change(
        "plot.update_activity(given['id'], title='renamed', done=False)",
        "plot.create_activity({'type': 'action', 'source': 'gh:1', 'title': 'renamed'})",
    ) == []  # fmt: skip
    assert runtime.tasks(listener) == []
    assert runtime.services.plot.activity(made.id) == renamed

    (event,) = await change("plot.update_activity(given['id'], done=True, title='t2')")
    done = replace(renamed, title="t2", done=True, updated_at=at(runtime.clock.now_ms))
    assert event == (done, {"previous": renamed, "fields": ["title", "done"], "note": None})

    (event,) = await change("plot.add_note(given['id'], 'ci: red', key='ci')")
    (note,) = event[0].notes
    assert isinstance(note, Note)
    assert event == (
        replace(done, notes=(note,), updated_at=note.created_at),
        {"previous": done, "fields": ["notes"], "note": note},
    )
    noted = event[0]
    assert await change("plot.add_note(given['id'], 'ci: red', key='ci')") == []

    (event,) = await change("plot.add_note(given['id'], 'ci: green', key='ci')")
    green = replace(note, content="ci: green", updated_at=at(runtime.clock.now_ms))
    noted_green = replace(noted, notes=(green,), updated_at=green.updated_at)
    assert event == (noted_green, {"previous": noted, "fields": ["notes"], "note": green})

    # An import: one new activity, one changed by source, one as it was.
    (event,) = await change("plot.create_activity({'type': 'note', 'source': 'gh:0'})")
    events = await change(
        "plot.create_activities(given['batch'])",
        batch=[
            {"type": "note", "source": "gh:2", "title": "new"},
            {"type": "action", "source": "gh:1", "title": "t3", "notes": [{"content": "hi"}]},
            {"type": "note", "source": "gh:0"},
        ],
    )
    by_source = {a.source: (a, c) for a, c in events}
    assert sorted(by_source) == ["gh:1", "gh:2"]
    assert by_source["gh:2"][1] is None
    activity, changes = by_source["gh:1"]
    assert changes is not None
    hi = activity.notes[-1]
    assert changes == {"previous": noted_green, "fields": ["title", "notes"], "note": hi}
    assert (activity.title, hi.content) == ("t3", "hi")


PINGPONG = (
    QUIET
    + """
    async def on_activity(self, activity, changes=None):
        await self.tools.plot.add_note(activity.id, f"{type(self).__name__} {len(activity.notes)}")
"""
)


@pytest.mark.exercises(Op.PLOT_CREATE, Op.PLOT_ADD_NOTE)
async def test_two_agents_answering_each_other_stop_after_8_hops(runtime: Runtime) -> None:
    ping = await plotter(runtime, "work", agent="ping", code=PINGPONG)
    pong = await plotter(runtime, "work", agent="pong", code=PINGPONG)
    (made,) = await do(runtime, ping, "plot.create_activity({'type': 'note', 'title': 'ball'})")
    # Each answer is an event for the other: pong runs hops 1, 3, 5 and 7, ping 2, 4, 6
    # and 8, and the events of ping's note at hop 8 are dropped.
    assert len(runtime.executions(pong, "on_activity")) == 4
    assert len(runtime.executions(ping, "on_activity")) == 4
    assert runtime.tasks(ping) == runtime.tasks(pong) == []
    (ball,) = runtime.services.plot.activities("work", limit=10)
    assert len(ball.notes) == 8
    line = (
        f"activity event loop: ping ({ping}) changed 1 activity (first {made.id}) while "
        f"handling an event 8 hops from its start, last caused by pong ({pong}); the events of "
        "these changes were dropped, so ping and pong stop answering each other here"
    )
    assert line in runtime.logs(ping)
    assert not any("activity event loop" in line for line in runtime.logs(pong))

    # A change no event caused starts counting again.
    await do(runtime, pong, "plot.add_note(given['id'], 'again')", id=made.id)
    assert len(runtime.executions(ping, "on_activity")) == 8
    assert len(runtime.executions(pong, "on_activity")) == 8


@pytest.mark.exercises(Op.PLOT_CREATE)
async def test_instances_that_left_or_do_not_listen_get_no_events(runtime: Runtime) -> None:
    author = await plotter(runtime, "work")
    leaving = await plotter(runtime, "work")
    runtime.executor.registry.uninstall(leaving, now=runtime.executor.now())
    await runtime.idle()
    await do(runtime, author, "plot.create_activity({'type': 'note'})")
    assert runtime.executions(leaving, "on_activity") == []

    # Events queued for a version with on_activity, run by one without: done, not dead.
    fickle = await plotter(runtime, "work", agent="fickle")
    host_plot(runtime, author).create_activity({"type": "note", "title": "while away"})
    assert event_tasks(runtime, fickle) == 1
    await runtime.deploy("fickle", QUIET)
    await runtime.idle()
    assert runtime.executions(fickle, "on_activity") == []
    assert runtime.tasks(fickle) == runtime.tasks(fickle, dead=True) == []

    # A suspended instance still hears: its events wait, and run once it is lifted.
    sleeper = await plotter(runtime, "work", agent="sleeper")
    runtime.executor.registry.set_status(sleeper, "suspended", "for the test")
    (made,) = await do(runtime, author, "plot.create_activity({'type': 'note', 'title': 'z'})")
    assert event_tasks(runtime, sleeper) == 1
    assert await heard(runtime, sleeper) == []
    await runtime.deploy("sleeper", PLOTTER + "# a new version lifts the suspension\n")
    await runtime.idle()
    assert await heard(runtime, sleeper) == [(made, None)]


BULK = """
from datetime import UTC, datetime
from corral import ActivityType, Agent

class Bulk(Agent):
    async def make(self, n):
        made = await self.tools.plot.create_activities(
            [{"type": ActivityType.NOTE, "title": str(i), "source": f"s:{i}"} for i in range(n)]
        )
        return len(made)

    async def on_activity(self, activity, changes=None):
        if activity.title == "0":
            # A task of its own, queued while the other events wait.
            await self.run_task(self.chore, run_at=datetime.now(UTC))
        await self.set(f"heard:{activity.id}", activity.title)

    async def chore(self):
        await self.set("chore", "done")
"""


@pytest.mark.exercises(Op.PLOT_CREATE_MANY)
async def test_a_thousand_activities_are_one_request_and_a_thousand_events(
    runtime_factory: RuntimeFactory,
) -> None:
    # Limits far below what the events take: they must neither suspend the listener
    # nor fill its quota of pending tasks.
    config = RuntimeConfig(
        rate_limits=RateLimits(per_5min=50, per_24h=100), quotas=Quotas(pending_tasks=5)
    )
    runtime = await runtime_factory(config, concurrency=4)
    await runtime.deploy("bulk", BULK)
    author = runtime.install("bulk", priority="work").id
    listener = runtime.install("bulk", priority="work").id
    enqueue(runtime, author, "make", 1000)
    await runtime.idle()
    (record,) = runtime.executions(author, "make")
    assert (record["outcome"], record["result"], record["requests_used"]) == ("ok", 1000, 1)
    events = runtime.executions(listener, "on_activity")
    assert len(events) == 1000
    assert all(e["outcome"] == "ok" for e in events)
    heard_titles = sorted(int(t) for _, t in await runtime.store(listener).list_entries("heard:"))
    assert heard_titles == list(range(1000))
    await runtime.advance(MINUTE_MS)  # the chore's run_at was the sandbox's now
    assert await runtime.store(listener).get("chore") == "done"
    assert runtime.status(listener) == ("active", None)
    assert runtime.executions(author, "on_activity") == []


async def test_a_claim_takes_no_activity_event_of_an_instance_while_four_of_them_run(
    runtime: Runtime,
) -> None:
    """What the claim holds back, seen at the claim itself: a worker with more free
    slots would otherwise fill them all with one instance's events. (One claim may
    take up to its own size of them when fewer than four run; the bound is checked
    as each claim starts.)"""
    author = await plotter(runtime, "work")
    listener = await plotter(runtime, "work")
    other = await plotter(runtime, "home")
    host_plot(runtime, author).create_activities([{"type": "note"}] * 6)
    enqueue(runtime, other, "do", [], {})  # queued after the six events
    queue = runtime.executor.queue

    def claim(limit: int) -> list[Any]:
        return queue.claim(limit, now=runtime.executor.now(), lease_ms=MINUTE_MS)

    running = [task for _ in range(ACTIVITY_EVENTS_AT_ONCE) for task, _ in claim(1)]
    assert [t.instance for t in running] == [listener] * 4
    assert [t.instance for t, _ in claim(10)] == [other]  # the events wait
    assert event_tasks(runtime, listener) == 6
    queue.finish(running[:1])
    assert [t.instance for t, _ in claim(1)] == [listener]
    assert claim(10) == []


@pytest.mark.exercises(Op.PLOT_CREATE, Op.PLOT_UPDATE)
async def test_an_activity_moved_away_is_heard_where_it_was_and_where_it_went(
    runtime: Runtime,
) -> None:
    runtime.services.plot.add_priority("work/acme", now=runtime.executor.now())
    runtime.services.plot.add_priority("work/other", now=runtime.executor.now())
    author = await plotter(runtime, "work")
    left = await plotter(runtime, "work/acme")
    joined = await plotter(runtime, "work/other")

    (made,) = await do(
        runtime, author, "plot.create_activity({'type': 'action', 'priority': 'work/acme'})"
    )
    assert await heard(runtime, left) == [(made, None)]
    (moved,) = await do(
        runtime, author, f"plot.update_activity({made.id!r}, priority='work/other')"
    )
    # Those who saw it learn it has gone; those who see it now learn it came.
    for instance in (left, joined):
        ((activity, changes),) = await heard(runtime, instance)
        assert activity == moved
        assert changes is not None
        assert (changes["previous"].priority, changes["fields"]) == ("work/acme", ["priority"])


@pytest.mark.exercises(Op.PLOT_CREATE, Op.PLOT_FIND)
async def test_an_action_is_done_or_not_and_its_own_notes_can_be_sent_back(
    runtime: Runtime,
) -> None:
    author = await plotter(runtime, "work")
    made, found, again = await do(
        runtime,
        author,
        "plot.create_activity({'type': 'action', 'done': None, 'source': 's:1',"
        " 'notes': [{'content': 'body'}]})",
        "plot.find_activities(done=False)",
        # An activity read back is given again, its notes (a tuple) with it: no change.
        "plot.create_activity({'type': 'action', 'source': 's:1', 'notes': out[0].notes})",
    )
    assert made.done is False
    assert found == [made]
    assert again == made
