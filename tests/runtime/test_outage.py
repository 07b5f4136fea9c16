"""A worker rides out a database outage (SPEC §1.2: tasks are durable; DESIGN §5).

A worker in a separate process serves 200 tasks. Midway the database goes away
for longer than a task's lease, then comes back: on PostgreSQL every connection
through a TCP proxy the test owns is closed and new ones are refused; on SQLite
another connection holds the write lock well past the worker's busy timeout.
Afterwards the worker process is still alive, it said once that the database
was lost and once that it was back (not once per attempt), and every task was
done at least once: none lost, and only what was in flight at the cut ran twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

import corral.db.engine
from corral import codec
from corral.config import Retries, RuntimeConfig
from corral.db.raw import close_databases, open_database
from corral.runtime.executor import Settlement
from corral.runtime.history import History
from corral.runtime.records import ExecutionRecord
from corral.sandbox.limits import ExecutionResult, Limits, Outcome
from corral.state import open_store
from corral.tasks.queue import NO_ARGS, Backoff, TaskQueue
from tests.runtime.conftest import NO_RATE_LIMITS, Runtime, RuntimeFactory, stop
from tests.runtime.test_crash import kill, kill_session, start_worker
from tests.support import TcpProxy, wipe

TASKS = 200
CONCURRENCY = 2
#: An execution's timeout and the grace after it: a task's lease is 3 s.
TIMEOUT_S = 2.0
LEASE_GRACE_S = 1.0
#: How long the database is away: past every lease the worker holds.
OUTAGE_S = 5.0
#: How long the worker's SQLite calls wait for the write lock before they fail.
BUSY_TIMEOUT_S = 0.5
#: How long the worker may take to get there, and to finish once the database is back.
DEADLINE_S = 30.0

AGENT = """
import asyncio
from corral.sdk import Agent

class Steady(Agent):
    def activate(self, priority):
        return None

    async def work(self, i):
        await asyncio.sleep(0.02)
        await self.set(f"done:{i:03d}", True)
        return i
"""

WORKER_SCRIPT = f"""
import asyncio
import sys

import corral.db.engine
from corral.config import RateLimits, Retries, RuntimeConfig
from corral.runtime.services import Services
from corral.runtime.worker import Worker, WorkerOptions
from corral.sandbox.limits import ExecutionResult, Limits, Outcome
from corral.tasks.queue import Backoff

corral.db.engine.SQLITE_BUSY_TIMEOUT_S = {BUSY_TIMEOUT_S}


async def main() -> None:
    config = RuntimeConfig(
        database_url=sys.argv[1],
        rate_limits=RateLimits(per_5min=10**9, per_24h=10**9),
        limits=Limits(timeout_s={TIMEOUT_S}),
        lease_grace_s={LEASE_GRACE_S},
        retries=Retries(backoff=Backoff(base_ms=0, jitter=0)),
    )
    worker = Worker(
        Services(config), options=WorkerOptions(concurrency={CONCURRENCY}, poll_s=0.01)
    )
    await worker.run()


asyncio.run(main())
"""

#: What the worker says when it loses the database and when it has it back.
LOST = "database unavailable"
BACK = "database available again"


@contextlib.contextmanager
def outage_switch(url: str) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """(the URL the worker uses, start the outage, end it) for the database at ``url``.

    PostgreSQL: the worker connects through a proxy, which the outage cuts. SQLite: a
    connection of the test's takes the write lock, as another process's long write
    would, and holds it until the outage ends.
    """
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "postgresql":
        proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
        try:
            yield proxy.url(url), proxy.cut, proxy.restore
        finally:
            proxy.cut()
        return
    holder = sqlite3.connect(parsed.database or "", isolation_level=None)
    try:
        yield url, lambda: holder.execute("BEGIN EXCLUSIVE"), holder.rollback
    finally:
        holder.close()


async def test_a_worker_rides_out_a_database_outage_longer_than_its_leases(
    runtime_factory: RuntimeFactory, db_url: str, tmp_path: Path
) -> None:
    assert OUTAGE_S > TIMEOUT_S + LEASE_GRACE_S  # every lease the worker holds runs out
    # Real time throughout: the worker in the other process uses the real clock.
    runtime: Runtime = await runtime_factory(
        RuntimeConfig(rate_limits=NO_RATE_LIMITS), clock=time.time
    )
    await runtime.deploy("steady", AGENT)
    instance = runtime.install("steady")
    queue = runtime.executor.queue
    with runtime.database.transaction(write=True):
        for i in range(TASKS):
            queue.enqueue(instance.id, "work", codec.encode([i]), now=runtime.executor.now())

    with outage_switch(db_url) as (worker_url, cut, restore):
        worker, output = start_worker(worker_url, tmp_path, WORKER_SCRIPT)
        try:

            def alive() -> None:
                assert worker.poll() is None, f"the worker exited:\n{output.read_text()}"

            deadline = time.monotonic() + DEADLINE_S
            while len(runtime.executions(instance.id, "work")) < 20:  # well under way
                alive()
                assert time.monotonic() < deadline, f"no progress:\n{output.read_text()}"
                await asyncio.sleep(0.01)
            done_before = len(runtime.executions(instance.id, "work"))

            cut()
            cut_at = time.monotonic()
            # The outage itself lasts OUTAGE_S: the worker must live through it.
            while time.monotonic() - cut_at < OUTAGE_S:
                alive()
                await asyncio.sleep(0.05)
            restore()
            outage_s = time.monotonic() - cut_at

            deadline = time.monotonic() + DEADLINE_S
            while runtime.tasks(instance.id) or runtime.tasks(instance.id, dead=True):
                alive()
                assert time.monotonic() < deadline, f"work left:\n{output.read_text()}"
                await asyncio.sleep(0.05)
            alive()
        finally:
            kill(worker)
            kill_session(worker.pid)

    store = runtime.store(instance.id)
    assert await store.keys("done:") == [f"done:{i:03d}" for i in range(TASKS)]
    records = runtime.executions(instance.id, "work")
    ran = Counter(r["result"] for r in records if r["outcome"] == "ok")
    lost = TASKS - len(set(ran) & set(range(TASKS)))
    assert lost == 0
    twice = sum(ran.values()) - TASKS
    assert twice <= CONCURRENCY  # only what was in flight at the cut
    # An execution that met the outage failed, and said why.
    failed = [r for r in records if r["outcome"] != "ok"]
    assert all(r["error"]["type"] == "DatabaseUnavailable" for r in failed), failed
    text = output.read_text()
    assert text.count(LOST) == 1, text
    assert text.count(BACK) == 1, text
    print(
        f"\n{runtime.database.engine.dialect.name}: outage {outage_s:.1f} s "
        f"(leases {TIMEOUT_S + LEASE_GRACE_S:.0f} s), {TASKS} tasks, "
        f"{done_before} done before the cut, lost {lost}, ran twice {twice}, "
        f"failed on the outage and retried {len(failed)}"
    )


PATIENT = """
import asyncio
from corral.sdk import Agent, DatabaseUnavailable

class Patient(Agent):
    def activate(self, priority):
        return None

    async def write_until_refused(self):
        await self.set("started", True)
        while True:
            try:
                await self.set("beat", 1)
            except DatabaseUnavailable as exc:
                return f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.05)  # its 1,000 requests last 50 s, however slow the cut

    def ping(self):
        return "pong"
"""


@pytest.fixture(params=["sqlite", "postgres"])
def server_url(
    request: pytest.FixtureRequest, tmp_path: Path, sandbox: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """An empty database of each kind; SQLite's writers wait 0.2 s for the lock, not 30."""
    if request.param == "sqlite":
        monkeypatch.setattr(corral.db.engine, "SQLITE_BUSY_TIMEOUT_S", 0.2)
        url = f"sqlite:///{tmp_path}/corral.db"
    else:
        url = request.getfixturevalue("postgres_url")
    wipe(open_database(url).engine)
    yield url
    close_databases()


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await condition():
        assert time.monotonic() < deadline, f"{what}: not after {DEADLINE_S} s"
        await asyncio.sleep(0.01)


async def test_an_agents_store_call_in_an_outage_fails_with_a_clear_error(
    server_url: str,
) -> None:
    """The agent sees ``DatabaseUnavailable`` and may handle it; the worker waits the
    outage out, writes the execution's record once it can, and serves the next one."""
    with outage_switch(server_url) as (worker_url, cut, restore):
        runtime = Runtime(worker_url, time.time, RuntimeConfig(rate_limits=NO_RATE_LIMITS))
        await runtime.worker.start()
        runner = asyncio.create_task(runtime.worker.run())
        try:
            await runtime.deploy("patient", PATIENT)
            instance = runtime.install("patient")
            # The test's own view, never through the proxy.
            queue = TaskQueue(open_database(server_url))
            store = open_store(server_url, instance.id)
            history = History(open_database(server_url))
            queue.enqueue(instance.id, "write_until_refused", NO_ARGS, now=runtime.executor.now())

            await until(lambda: store.has("started"), "the execution started")
            cut()

            async def seen_by_the_agent() -> bool:
                # Until the execution has ended (its agent caught the error) and the
                # worker waits the outage out: a cut shorter than the agent's pause
                # between writes would otherwise pass unnoticed by the agent.
                assert not runner.done(), runner
                return runtime.executor.outage.down and runtime.executor.pool.running == 0

            await until(seen_by_the_agent, "the agent saw the outage")
            restore()

            async def recorded() -> list[dict[str, Any]]:
                return history.executions(instance.id, limit=10)

            await until(
                lambda: _has(recorded(), "write_until_refused"), "the record written afterwards"
            )
            queue.enqueue(instance.id, "ping", NO_ARGS, now=runtime.executor.now())
            await until(lambda: _has(recorded(), "ping"), "the next task")
        finally:
            await stop(runner)
            await runtime.close()

    found = {r["method"]: r for r in history.executions(instance.id, limit=10)}
    assert found["write_until_refused"]["outcome"] == "ok"
    assert found["write_until_refused"]["result"] == (
        "DatabaseUnavailable: the database is unavailable: "
        + (
            "no connection to PostgreSQL (refused, reset or lost)"
            if runtime.database.postgres
            else "another process has held the SQLite database's write lock past the busy timeout"
        )
        + "; the call may not have taken effect, retry later"
    )
    assert (found["ping"]["outcome"], found["ping"]["result"]) == ("ok", "pong")


async def _has(records: Awaitable[list[dict[str, Any]]], method: str) -> bool:
    return any(r["method"] == method for r in await records)


async def test_an_error_waiting_would_not_fix_ends_the_wait_and_stops_the_worker(
    postgres_server: str, fresh_postgres_url: str, sandbox: None
) -> None:
    """The database the worker waits for comes back without its database (dropped
    meanwhile): waiting would not fix that, so the worker stops, with the server's
    own reason, as it would for a refused password."""
    with outage_switch(fresh_postgres_url) as (worker_url, cut, restore):
        runtime = Runtime(worker_url, time.time, RuntimeConfig())
        await runtime.worker.start()
        runner = asyncio.create_task(runtime.worker.run())
        try:
            await asyncio.wait_for(runtime.worker.idle.wait(), DEADLINE_S)
            cut()

            async def waiting_it_out() -> bool:
                return runtime.executor.outage.down

            await until(waiting_it_out, "the worker saw the outage")
            name = sa.make_url(fresh_postgres_url).database
            with psycopg.connect(postgres_server, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            restore()
            await asyncio.wait({runner}, timeout=DEADLINE_S)
            assert runner.done()
            with pytest.raises(psycopg.OperationalError, match=f'database "{name}" does not exist'):
                runner.result()
        finally:
            if not runner.done():
                await stop(runner)
            await runtime.close()
            close_databases()


ONCE = """
import asyncio
from corral.sdk import Agent

class Once(Agent):
    def activate(self, priority):
        return None

    async def brief(self):
        await self.set("starts", (await self.get("starts") or 0) + 1)
        await asyncio.sleep(0.3)
        return "done"
"""


async def test_an_execution_settled_after_its_lease_ran_out_in_an_outage_runs_once(
    tmp_path: Path,
    sandbox: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It finishes while the database is away, and its lease runs out before the
    database is back. The worker leases its task anew before anything else: its own
    recovery would otherwise put the task back at once, and its next claim run it a
    second time while the first run's record waits to be written."""
    monkeypatch.setattr(corral.db.engine, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    url = f"sqlite:///{tmp_path}/corral.db"
    config = RuntimeConfig(
        rate_limits=NO_RATE_LIMITS,
        limits=Limits(timeout_s=1.0),
        lease_grace_s=0.5,
        retries=Retries(backoff=Backoff(base_ms=0, jitter=0)),  # a task put back is due at once
    )
    with outage_switch(url) as (_, cut, restore):
        runtime = Runtime(url, time.time, config)
        await runtime.worker.start()
        runner = asyncio.create_task(runtime.worker.run())
        try:
            await runtime.deploy("once", ONCE)
            instance = runtime.install("once")
            store = runtime.store(instance.id)
            queue = runtime.executor.queue

            async def activated() -> bool:  # so that the only task below is "brief"
                return not runtime.tasks(instance.id)

            await until(activated, "activate ran")
            queue.enqueue(instance.id, "brief", NO_ARGS, now=runtime.executor.now())

            await until(lambda: store.has("starts"), "the execution started")
            cut()  # it finishes meanwhile; its record cannot be written
            [task] = runtime.tasks(instance.id)  # readers are not locked out

            async def lease_over() -> bool:
                assert not runner.done(), runner
                assert task.lease_until is not None
                return runtime.executor.now() > task.lease_until + 100

            await until(lease_over, "the lease ran out")
            restore()

            async def settled() -> bool:
                return not runtime.tasks(instance.id)

            await until(settled, "the task settled")
            assert "put back" not in caplog.text  # recovery left it alone
            assert await store.get("starts") == 1
            [record] = runtime.executions(instance.id, "brief")
            assert (record["outcome"], record["result"]) == ("ok", "done")
        finally:
            await stop(runner)
            await runtime.close()
            close_databases()


async def test_a_settlement_written_again_after_its_answer_was_lost_is_written_once(
    runtime_factory: RuntimeFactory,
) -> None:
    """An outage can cut the connection after the server committed a settlement and
    before its answer came back: the worker writes it again once the database is back
    (``uncertain``), and it is written once: one record, the task done."""
    runtime = await runtime_factory(RuntimeConfig(rate_limits=NO_RATE_LIMITS))
    await runtime.deploy("steady", AGENT)
    instance = runtime.install("steady")
    await runtime.idle()  # activate
    executor = runtime.executor
    executor.queue.enqueue(instance.id, "work", codec.encode([7]), now=executor.now())
    [claim] = await runtime.worker.claim(1)
    result = ExecutionResult(Outcome.OK, result=7)
    record = ExecutionRecord(instance.id, "work", "task", result)
    settlement = Settlement(claim.task, record, claim.version.number)
    write = runtime.worker._write_settlements
    await executor.db(write, [settlement], 0, executor.now())
    await executor.db(write, [settlement], 0, executor.now(), uncertain=True)
    assert [r["result"] for r in runtime.executions(instance.id, "work")] == [7]
    assert runtime.tasks(instance.id) == []
