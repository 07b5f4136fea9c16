"""Callbacks and tasks as an agent author relies on them (SPEC §1.2), on each database.

Each test runs a real agent in the sandbox through the worker: a step is one
execution of one of the agent's methods, and a task that runs counts under its
label in the agent's store. Times are whole minutes of the fake clock, which the
tests move; the agent turns them into the datetimes the SDK takes.
"""

from __future__ import annotations

from typing import Any

import pytest

from corral import codec
from corral.sdk.operations import Op
from tests.runtime.conftest import Runtime

MINUTE_MS = 60_000

PLANNER = """
from datetime import UTC, datetime
from corral.sdk import Agent

def at(ms):
    return datetime.fromtimestamp(ms / 1000, UTC)

class Planner(Agent):
    async def activate(self, priority):
        pass

    async def work(self, label="direct"):
        await self.set(f"ran:{label}", (await self.get(f"ran:{label}") or 0) + 1)

    async def upgrade(self):
        await self.work("upgrade")
        if await self.get("ran:upgrade") == 1:
            raise RuntimeError("the first upgrade fails")

    async def run_now(self, label):
        return [
            await self.run_task(await self.callback(self.work, label)),
            await self.run_task(self.work),
        ]

    async def run_later(self, label, when):
        return await self.run_task(await self.callback(self.work, label), run_at=at(when))

    async def cancel(self, *tokens):
        for token in tokens:
            await self.cancel_task(token)

    async def cancel_all(self):
        await self.cancel_all_tasks()
        await self.cancel_all_tasks()  # nothing left: no error either

    async def schedule(self, key, label, when, coalesce=False):
        target = await self.callback(self.work, label)
        await self.schedule_task(key, target, at(when), coalesce=coalesce)

    async def every(self, key, label, interval_ms, first):
        target = await self.callback(self.work, label)
        await self.schedule_recurring(key, target, interval_ms, at(first))

    async def unschedule(self, *keys):
        for key in keys:
            await self.cancel_scheduled_task(key)

    async def tick(self, label, next_at=None):
        # A keyed task that schedules its successor under its own key, then fails once.
        await self.work(label)
        if next_at is not None:
            await self.schedule_task("tick", await self.callback(self.tick, "next"), at(next_at))
            if await self.get(f"ran:{label}") == 1:
                raise RuntimeError("failed after scheduling the next tick")

    async def make(self, label):
        return await self.callback(self.work, label)

    async def forget(self, *tokens):
        for token in tokens:
            await self.delete_callback(token)

    async def queue_then_forget(self, label, when):
        token = await self.callback(self.work, label)
        await self.run_task(token, run_at=at(when))
        await self.delete_callback(token)

    async def forget_all(self):
        await self.delete_all_callbacks()
        await self.delete_all_callbacks()

    async def use(self, token):
        # What run and run_task of the callback do, as the agent sees it.
        seen = []
        for use in (self.run, self.run_task):
            try:
                await use(token)
            except LookupError as exc:
                seen.append(f"{type(exc).__name__}: {exc}")
            else:
                seen.append("ok")
        return seen
"""


class Planner:
    """One installed instance of the agent above, driven a step at a time."""

    def __init__(self, runtime: Runtime, instance: str) -> None:
        self.runtime = runtime
        self.instance = instance

    @classmethod
    async def install(cls, runtime: Runtime) -> Planner:
        await runtime.deploy("planner", PLANNER)
        return cls(runtime, runtime.install("planner").id)

    async def step(self, method: str, *args: Any) -> Any:
        """Run ``method(*args)`` now, and whatever is due with it; its return value."""
        before = {r["id"] for r in self.runtime.executions(self.instance, method)}
        self.runtime.executor.queue.enqueue(
            self.instance, method, codec.encode(list(args)), now=self.runtime.executor.now()
        )
        await self.runtime.idle()
        [record] = [
            r for r in self.runtime.executions(self.instance, method) if r["id"] not in before
        ]
        assert record["outcome"] == "ok", record["error"]
        return record["result"]

    async def ran(self) -> dict[str, int]:
        """How many times a task ran, by label."""
        entries = await self.runtime.store(self.instance).list_entries("ran:")
        return {key.removeprefix("ran:"): count for key, count in entries}

    def pending(self) -> list[tuple[str | None, int, Any]]:
        """The instance's pending tasks: (key, run_at, the label it would run with)."""
        pending = [
            (task.key, task.run_at, codec.decode(task.args))
            for task in self.runtime.tasks(self.instance)
        ]
        return sorted(pending, key=lambda task: (task[1], task[0] or ""))


def minutes_ahead(runtime: Runtime, n: int) -> int:
    """A time ``n`` whole minutes ahead of the fake clock (exact as a datetime, too)."""
    return (runtime.clock.now_ms // MINUTE_MS + n) * MINUTE_MS


async def move_to(runtime: Runtime, when: int) -> None:
    await runtime.advance(when - runtime.clock.now_ms)


@pytest.mark.exercises(Op.CALLBACK_CREATE, Op.TASK_RUN)
async def test_run_task_without_run_at_runs_at_once_and_gives_no_token(runtime: Runtime) -> None:
    planner = await Planner.install(runtime)
    assert await planner.step("run_now", "now") == [None, None]
    assert await planner.ran() == {"now": 1, "direct": 1}
    assert planner.pending() == []


@pytest.mark.exercises(Op.TASK_RUN)
async def test_run_task_with_run_at_runs_then_and_gives_a_cancel_token(runtime: Runtime) -> None:
    planner = await Planner.install(runtime)
    when = minutes_ahead(runtime, 10)
    token = await planner.step("run_later", "later", when)
    assert isinstance(token, str)
    assert token
    assert planner.pending() == [(None, when, ["later"])]
    await move_to(runtime, when - 1)
    assert await planner.ran() == {}
    await move_to(runtime, when)
    assert await planner.ran() == {"later": 1}
    assert planner.pending() == []


@pytest.mark.exercises(Op.TASK_CANCEL)
async def test_cancel_task_cancels_that_task_only_and_never_raises(runtime: Runtime) -> None:
    planner = await Planner.install(runtime)
    when = minutes_ahead(runtime, 10)
    first = await planner.step("run_later", "first", when)
    second = await planner.step("run_later", "second", when)
    await planner.step("cancel", first)
    assert planner.pending() == [(None, when, ["second"])]
    await move_to(runtime, when)
    assert await planner.ran() == {"second": 1}
    # Cancelled already, run already, never made: no error (SPEC §1.2).
    await planner.step("cancel", first, second, "no-such-token")
    assert await planner.ran() == {"second": 1}


@pytest.mark.exercises(Op.TASK_CANCEL_ALL)
async def test_cancel_all_tasks_cancels_the_instances_pending_run_tasks(runtime: Runtime) -> None:
    """Keyed and recurring schedules stay: they are cancelled by key (docs in the SDK)."""
    planner, other = await Planner.install(runtime), await Planner.install(runtime)
    when = minutes_ahead(runtime, 10)
    await planner.step("run_later", "soon", when)
    await planner.step("run_later", "later", when + MINUTE_MS)
    await planner.step("schedule", "key", "keyed", when)
    await other.step("run_later", "other's", when)
    await planner.step("cancel_all")
    assert planner.pending() == [("key", when, ["keyed"])]
    await move_to(runtime, when + MINUTE_MS)
    assert await planner.ran() == {"keyed": 1}
    assert await other.ran() == {"other's": 1}  # another instance's tasks are not its own


@pytest.mark.exercises(Op.TASK_CANCEL_ALL)
async def test_cancel_all_tasks_leaves_the_platforms_own_tasks(runtime: Runtime) -> None:
    """A lifecycle hook waiting for its retry is the platform's event, not the agent's
    task: cancelling all of the agent's tasks must not lose it."""
    planner = await Planner.install(runtime)
    await runtime.deploy("planner", PLANNER + "\n# the next version\n")
    await runtime.idle()  # its upgrade hook fails once: the retry waits
    [retry] = runtime.tasks(planner.instance)
    assert (retry.method, retry.trigger, retry.attempts) == ("upgrade", "lifecycle", 1)
    await planner.step("cancel_all")
    assert [task.id for task in runtime.tasks(planner.instance)] == [retry.id]
    await move_to(runtime, retry.run_at)
    assert await planner.ran() == {"upgrade": 2}


@pytest.mark.exercises(Op.TASK_SCHEDULE)
async def test_schedule_task_under_a_pending_key_replaces_its_task(runtime: Runtime) -> None:
    planner = await Planner.install(runtime)
    sooner, later = minutes_ahead(runtime, 10), minutes_ahead(runtime, 20)
    await planner.step("schedule", "key", "first", sooner)
    await planner.step("schedule", "key", "second", later)
    assert planner.pending() == [("key", later, ["second"])]
    await move_to(runtime, sooner)
    assert await planner.ran() == {}
    await move_to(runtime, later)
    assert await planner.ran() == {"second": 1}
    # The key is free once its task has run: scheduling it again makes a new task.
    await planner.step("schedule", "key", "third", later + MINUTE_MS)
    assert planner.pending() == [("key", later + MINUTE_MS, ["third"])]


@pytest.mark.exercises(Op.TASK_SCHEDULE)
async def test_coalesce_keeps_the_pending_task_and_only_moves_it_earlier(
    runtime: Runtime,
) -> None:
    planner = await Planner.install(runtime)
    early, middle, late = (minutes_ahead(runtime, n) for n in (10, 20, 30))
    await planner.step("schedule", "key", "kept", middle, True)  # none pending: made
    assert planner.pending() == [("key", middle, ["kept"])]
    await planner.step("schedule", "key", "later", late, True)
    assert planner.pending() == [("key", middle, ["kept"])]  # never later
    await planner.step("schedule", "key", "earlier", early, True)
    assert planner.pending() == [("key", early, ["kept"])]  # earlier, the same task
    await move_to(runtime, late)
    assert await planner.ran() == {"kept": 1}


@pytest.mark.exercises(Op.TASK_SCHEDULE, Op.TASK_CANCEL_SCHEDULED)
async def test_cancel_scheduled_task_tears_down_a_keyed_task(runtime: Runtime) -> None:
    planner = await Planner.install(runtime)
    when = minutes_ahead(runtime, 10)
    await planner.step("schedule", "key", "keyed", when)
    await planner.step("schedule", "other", "kept", when)
    await planner.step("unschedule", "key")
    assert planner.pending() == [("other", when, ["kept"])]
    # Cancelled already, never scheduled: no error.
    await planner.step("unschedule", "key", "no-such-key")
    await move_to(runtime, when)
    assert await planner.ran() == {"kept": 1}


@pytest.mark.exercises(Op.TASK_SCHEDULE_RECURRING, Op.TASK_CANCEL_SCHEDULED)
async def test_cancel_scheduled_task_tears_down_a_recurring_task(runtime: Runtime) -> None:
    planner = await Planner.install(runtime)
    first = minutes_ahead(runtime, 10)
    await planner.step("every", "tick", "tick", 10 * MINUTE_MS, first)
    await move_to(runtime, first)
    await move_to(runtime, first + 10 * MINUTE_MS)
    assert await planner.ran() == {"tick": 2}
    await planner.step("unschedule", "tick")
    assert planner.pending() == []
    await move_to(runtime, first + 40 * MINUTE_MS)
    assert await planner.ran() == {"tick": 2}


@pytest.mark.exercises(Op.TASK_SCHEDULE_RECURRING)
async def test_schedule_recurring_under_the_same_key_replaces_the_schedule(
    runtime: Runtime,
) -> None:
    planner = await Planner.install(runtime)
    first = minutes_ahead(runtime, 10)
    await planner.step("every", "tick", "old", 5 * MINUTE_MS, first)
    await planner.step("every", "tick", "new", 10 * MINUTE_MS, first)
    await move_to(runtime, first)
    await move_to(runtime, first + 5 * MINUTE_MS)  # the old interval: nothing due
    await move_to(runtime, first + 10 * MINUTE_MS)
    assert await planner.ran() == {"new": 2}
    assert planner.pending() == [("tick", first + 20 * MINUTE_MS, ["new"])]


@pytest.mark.exercises(Op.TASK_SCHEDULE)
async def test_a_keyed_task_that_schedules_its_own_key_then_fails_is_retried(
    runtime: Runtime,
) -> None:
    """Its key was free once it ran, so its schedule stands; the retry runs without the
    key (two pending tasks cannot hold one key), and the worker settles both."""
    planner = await Planner.install(runtime)
    now, later = runtime.clock.now_ms, minutes_ahead(runtime, 30)
    runtime.executor.queue.schedule(
        planner.instance, "tick", "tick", codec.encode(["first", later]), run_at=now, now=now
    )
    await runtime.idle()
    [failed] = runtime.executions(planner.instance, "tick")
    assert failed["error"]["message"] == "failed after scheduling the next tick"
    retry, scheduled = runtime.tasks(planner.instance)
    assert (retry.key, retry.state, retry.attempts, codec.decode(retry.args)) == (
        None,
        "queued",
        1,
        ["first", later],
    )
    assert (scheduled.key, scheduled.run_at, codec.decode(scheduled.args)) == (
        "tick",
        later,
        ["next"],
    )
    await move_to(runtime, retry.run_at)  # it succeeds, scheduling the same again
    assert await planner.ran() == {"first": 2}
    assert planner.pending() == [("tick", later, ["next"])]
    await move_to(runtime, later)
    assert await planner.ran() == {"first": 2, "next": 1}


def _no_callback(token: str) -> str:
    return (
        f"LookupError: there is no callback {token!r} for this instance: it was deleted, "
        "or it belongs to another instance"
    )


@pytest.mark.exercises(Op.CALLBACK_DELETE, Op.CALLBACK_GET)
async def test_delete_callback_ends_that_callback_only(runtime: Runtime) -> None:
    planner = await Planner.install(runtime)
    gone = await planner.step("make", "gone")
    kept = await planner.step("make", "kept")
    await planner.step("forget", gone)
    await planner.step("forget", gone, "cb_no-such-callback")  # nothing to delete: no error
    assert await planner.step("use", gone) == [_no_callback(gone)] * 2
    assert await planner.step("use", kept) == ["ok", "ok"]  # run, then run_task
    assert await planner.ran() == {"kept": 2}
    # A task queued from a callback keeps its method and arguments: it still runs.
    when = minutes_ahead(runtime, 10)
    await planner.step("queue_then_forget", "queued", when)
    await move_to(runtime, when)
    assert await planner.ran() == {"kept": 2, "queued": 1}


@pytest.mark.exercises(Op.CALLBACK_DELETE_ALL)
async def test_delete_all_callbacks_ends_the_instances_callbacks_only(runtime: Runtime) -> None:
    planner, other = await Planner.install(runtime), await Planner.install(runtime)
    mine = [await planner.step("make", label) for label in ("a", "b")]
    others = await other.step("make", "other's")
    await planner.step("forget_all")
    for token in mine:
        assert await planner.step("use", token) == [_no_callback(token)] * 2
    assert await other.step("use", others) == ["ok", "ok"]
