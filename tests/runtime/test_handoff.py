"""Hand-offs: a task an execution enqueues, due now, goes to the worker that made it.

``Worker.hand_off`` inserts the row already leased to this worker and starts it
without a claim. What an agent author relies on all the same: it runs the
instance's *current* version (callbacks resolve by name at execution time), a
suspended instance's task waits in the queue as any other, and a worker with no
free slot leaves the task to be claimed. On PostgreSQL no other worker is woken
for a task that is already someone's.
"""

from __future__ import annotations

import pytest

from corral.runtime.executor import Claim
from corral.runtime.worker import Worker
from corral.tasks.queue import NO_ARGS, worker_id
from tests.runtime.conftest import Runtime

AGENT = """
from corral.sdk import Agent

VERSION = "v1"

class Chain(Agent):
    def activate(self, priority):
        return None

    async def step(self):
        n = (await self.get("n") or 0) + 1
        await self.set("n", n)
        if n < 3:
            await self.run_task(self.step)
        return VERSION
"""


class Slots(Worker):
    """A worker that records what is handed to it instead of running it, with or
    without ``room``, on the runtime's executor."""

    def __init__(self, runtime: Runtime, *, room: bool) -> None:
        super().__init__(runtime.services)
        self.executor = runtime.executor
        self.room = room
        self.started: list[Claim] = []

    def has_room(self) -> bool:
        return self.room

    def _start(self, claim: Claim) -> None:
        self.started.append(claim)


async def test_a_chain_hands_each_step_to_its_worker_and_completes(runtime: Runtime) -> None:
    await runtime.deploy("chain", AGENT)
    instance = runtime.install("chain")
    await runtime.idle()
    runtime.executor.queue.enqueue(instance.id, "step", NO_ARGS, now=runtime.executor.now())
    await runtime.idle()
    assert await runtime.store(instance.id).get("n") == 3
    steps = runtime.executions(instance.id, "step")
    assert [r["outcome"] for r in steps] == ["ok"] * 3
    assert runtime.tasks(instance.id) == []


async def test_a_handed_off_task_runs_the_instances_current_version(runtime: Runtime) -> None:
    await runtime.deploy("chain", AGENT)
    instance = runtime.install("chain")
    await runtime.deploy("chain", AGENT.replace('"v1"', '"v2"'))  # after the step began
    slots = Slots(runtime, room=True)
    executor = runtime.executor

    assert slots.hand_off(instance.id, "step", NO_ARGS, executor.now())
    [claim] = slots.started
    assert (claim.task.method, claim.version.number) == ("step", 2)
    [row] = [t for t in runtime.tasks(instance.id) if t.id == claim.task.id]
    assert (row.state, row.leased_by, row.attempts) == ("running", worker_id(), 1)
    assert row.lease_until is not None
    assert row.lease_until > executor.now()


async def test_a_suspended_instances_task_waits_in_the_queue(runtime: Runtime) -> None:
    await runtime.deploy("chain", AGENT)
    instance = runtime.install("chain")
    runtime.executor.registry.set_status(instance.id, "suspended", "for the test")
    slots = Slots(runtime, room=True)

    assert slots.hand_off(instance.id, "step", NO_ARGS, runtime.executor.now())
    assert slots.started == []
    [row] = [t for t in runtime.tasks(instance.id) if t.method == "step"]
    assert (row.state, row.leased_by, row.attempts) == ("queued", None, 0)


async def test_a_worker_without_a_free_slot_hands_nothing_off(runtime: Runtime) -> None:
    await runtime.deploy("chain", AGENT)
    instance = runtime.install("chain")
    before = runtime.tasks(instance.id)
    slots = Slots(runtime, room=False)

    assert not slots.hand_off(instance.id, "step", NO_ARGS, runtime.executor.now())
    assert runtime.tasks(instance.id) == before


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_hand_off_wakes_no_other_worker(runtime: Runtime) -> None:
    await runtime.deploy("chain", AGENT)
    instance = runtime.install("chain")
    slots, executor = Slots(runtime, room=True), runtime.executor
    listener = runtime.database.engine.raw_connection()
    try:
        connection = listener.dbapi_connection
        connection.autocommit = True
        connection.execute("LISTEN corral_tasks")
        slots.hand_off(instance.id, "step", NO_ARGS, executor.now())
        executor.queue.enqueue(instance.id, "step", NO_ARGS, now=executor.now())
        # Delivered in commit order: a notification for the hand-off would come first.
        heard = list(connection.notifies(timeout=0.5, stop_after=2))
        assert len(heard) == 1
    finally:
        listener.close()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_the_workers_own_commits_do_not_wait_for_the_disk(runtime: Runtime) -> None:
    """Claims and settlements, like an execution's writes (docs/store.md § Durability)."""
    database = runtime.database
    row = await runtime.executor.db(database.fetch_one, "SHOW synchronous_commit")
    assert row[0] == "off"
