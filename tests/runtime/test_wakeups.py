"""On PostgreSQL, work enqueued by another process wakes an idle worker at once.

The worker here polls once an hour, so only the notification (migration 0003's
trigger, ``corral.runtime.wakeups``) can make it run a task it did not enqueue
itself within the test's time. The listener is only a shortcut: when its
connection is lost it says so, the worker polls, and it listens again.
"""

from __future__ import annotations

import asyncio

import pytest

from corral import codec
from corral.db.raw import Database
from corral.runtime import wakeups
from corral.runtime.records import ExecutionRecord
from corral.tasks.queue import TaskQueue
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
        wakeups.listen(database, lambda: wakes.put_nowait(None), retry_s=0.01)
    )
    try:
        await asyncio.wait_for(wakes.get(), 10)  # its first LISTEN took effect
        (pid,) = database.fetch_one(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query = 'LISTEN corral_tasks'"
        )
        database.fetch_one("SELECT pg_terminate_backend(:pid)", {"pid": pid})
        await asyncio.wait_for(wakes.get(), 10)  # listening again, on a new connection
        assert "not listening for new tasks" in caplog.text
        assert "polling instead" in caplog.text
        database.write("NOTIFY corral_tasks")
        await asyncio.wait_for(wakes.get(), 10)  # and notifications reach it
    finally:
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)
        database.close()
