"""On PostgreSQL, work enqueued by another process wakes an idle worker at once.

The worker here polls once an hour, so only the notification (migration 0003's
trigger, ``TaskQueue.listen``) can make it run a task it did not enqueue
itself within the test's time. The listener is only a shortcut: when its
connection is lost it says so, the worker polls, and it listens again.
"""

from __future__ import annotations

import asyncio

import pytest

from corral import codec
from corral.db.raw import Database
from corral.runtime.records import ExecutionRecord
from corral.tasks.queue import Backoff, TaskQueue
from tests.runtime.conftest import RuntimeFactory, stop

AGENT = """
from corral.sdk import Agent

class Pinger(Agent):
    def activate(self, priority):
        return None

    def ping(self):
        return "pong"
"""


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_task_enqueued_elsewhere_wakes_an_idle_worker(
    runtime_factory: RuntimeFactory, db_url: str
) -> None:
    ran: dict[str, asyncio.Event] = {"activate": asyncio.Event(), "ping": asyncio.Event()}

    def seen(record: ExecutionRecord) -> None:
        ran[record.method].set()

    runtime = await runtime_factory(poll_s=3600, on_record=seen)
    await runtime.deploy("pinger", AGENT)
    instance = runtime.install("pinger")
    runner = asyncio.create_task(runtime.worker.run())
    try:
        await asyncio.wait_for(ran["activate"].wait(), 30)
        # Settled, claimed again, found nothing: waiting for a wake-up.
        await asyncio.wait_for(runtime.worker.idle.wait(), 30)
        # Another process's view: its own connection, nothing to wake this worker with.
        elsewhere = Database(db_url)
        try:
            TaskQueue(elsewhere).enqueue(
                instance.id, "ping", codec.encode([]), now=runtime.executor.now()
            )
        finally:
            elsewhere.close()
        await asyncio.wait_for(ran["ping"].wait(), 30)
    finally:
        await stop(runner)
    [ping] = runtime.executions(instance.id, "ping")
    assert (ping["outcome"], ping["result"]) == ("ok", "pong")


async def test_the_listener_outlives_a_lost_connection(
    fresh_postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(fresh_postgres_url)
    wakes: asyncio.Queue[None] = asyncio.Queue()
    listening = asyncio.create_task(
        TaskQueue(database).listen(
            lambda: wakes.put_nowait(None), backoff=Backoff(base_ms=10, cap_ms=10)
        )
    )
    try:
        await asyncio.wait_for(wakes.get(), 10)  # its first LISTEN took effect
        (pid,) = database.fetch_one(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query = 'LISTEN corral_tasks'"
        )
        database.fetch_one("SELECT pg_terminate_backend(:pid)", {"pid": pid})
        await asyncio.wait_for(wakes.get(), 10)  # listening again, on a new connection
        # Once each way (not once per attempt), and why it was lost.
        [lost, back] = [r.message for r in caplog.records if "listening" in r.message]
        assert lost.startswith("not listening for new tasks (")
        assert lost.endswith("); polling instead until it listens again")
        assert back == "listening for new tasks again"
        database.write("NOTIFY corral_tasks")
        await asyncio.wait_for(wakes.get(), 10)  # and notifications reach it
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        database.close()


async def test_a_lost_listener_leaves_the_event_loop_watching_nothing_of_it(
    fresh_postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Its socket is unwatched once lost: the next connection to get the same number
    (here a database call's) would otherwise wait forever for its answer, which the
    loop would no longer see."""
    database = Database(fresh_postgres_url)
    wakes: asyncio.Queue[None] = asyncio.Queue()
    listening = asyncio.create_task(  # away for a minute after the loss
        TaskQueue(database).listen(lambda: wakes.put_nowait(None), backoff=Backoff(base_ms=60_000))
    )
    try:
        await asyncio.wait_for(wakes.get(), 10)
        (pid,) = database.fetch_one(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query = 'LISTEN corral_tasks'"
        )
        database.fetch_one("SELECT pg_terminate_backend(:pid)", {"pid": pid})
        deadline = asyncio.get_running_loop().time() + 10
        while "not listening" not in caplog.text:
            assert asyncio.get_running_loop().time() < deadline, "the loss went unnoticed"
            await asyncio.sleep(0.01)
        # The first call opens the pool's first connection, on the lowest free number.
        answer = await asyncio.wait_for(database.call(database.fetch_one, "SELECT 1"), 10)
        assert answer == (1,)
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        database.close()
