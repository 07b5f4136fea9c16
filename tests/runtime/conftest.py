"""Fixtures for the end-to-end runtime suites: a database per backend and a worker on it.

Everything runs for real: agent code is described and executed in the sandbox, and
the worker claims tasks from the database. Time is a :class:`FakeClock` the test
moves, so backoff, schedules and rate windows are deterministic.

PostgreSQL tests share the session's database, so every runtime table is emptied
before each test. SQLite tests get a file of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from corral.config import RateLimits, RuntimeConfig
from corral.db.raw import close_databases, open_database
from corral.runtime.describe import describe_code
from corral.runtime.executor import Executor
from corral.runtime.network.fetch import Fetcher
from corral.runtime.records import ExecutionRecord
from corral.runtime.registry import Deployed, Instance
from corral.runtime.services import Services
from corral.runtime.worker import Worker, WorkerOptions
from corral.state import Store, open_store
from corral.tasks.queue import TaskInfo
from tests.support import FakeClock, wipe

REQUIRE_SANDBOX = os.environ.get("CORRAL_REQUIRE_SANDBOX") == "1"

#: Rate limits out of reach: for tests that run more executions of one instance than
#: the default limits allow, and are not about them.
NO_RATE_LIMITS = RateLimits(per_5min=10**9, per_24h=10**9)

#: How long one ``run(until_idle=True)`` may take before the test fails instead of hanging.
IDLE_TIMEOUT_S = 60.0

_PROBE = """
from corral.sdk import Agent

class Probe(Agent):
    def ping(self):
        return "pong"
"""

_descriptions: dict[str, dict[str, Any]] = {}


async def describe(code: str) -> dict[str, Any]:
    """The agent's description, learned in a sandbox once per code string per session."""
    description = _descriptions.get(code)
    if description is None:
        description = _descriptions[code] = await describe_code(code)
    return description


@pytest.fixture(scope="session")
def sandbox() -> None:
    """Skip (or fail, with CORRAL_REQUIRE_SANDBOX=1) where agents cannot be sandboxed."""
    try:
        asyncio.run(describe(_PROBE))
    except Exception as exc:
        reason = f"the sandbox cannot run agents here: {type(exc).__name__}: {exc}"
        if REQUIRE_SANDBOX:
            pytest.fail(f"{reason} (CORRAL_REQUIRE_SANDBOX=1, so it must work)", False)
        pytest.skip(f"{reason} (set CORRAL_REQUIRE_SANDBOX=1 to make this an error)")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, sandbox: None) -> Iterator[str]:
    """An empty database of each kind, its schema created."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/corral.db"
        open_database(url)  # creates the schema
    else:
        url = request.getfixturevalue("postgres_url")
        wipe(open_database(url).engine)
    yield url
    close_databases()


async def stop(runner: asyncio.Task[None]) -> None:
    """Cancel a task running ``Worker.run`` and wait for it to end.

    Cancelled again until it ends: on Python 3.11 a cancellation that arrives as
    the worker's wake-up event is set is swallowed by ``asyncio.wait_for`` inside
    ``Worker.run`` (see test_worker.py), and the worker carries on serving.
    """
    while not runner.done():
        runner.cancel()
        await asyncio.wait({runner}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        runner.result()


def real_now_clock() -> FakeClock:
    """A fake clock that starts at the real time.

    Agents compute ``run_at`` from ``datetime.now(UTC)`` inside the sandbox, which
    the test cannot move; starting the fake clock at the real time keeps the two
    within the seconds a test takes, and the tests move it in minutes.
    """
    return FakeClock(start_ms=int(time.time() * 1000))


class Runtime:
    """A worker on a database and a fake clock, with the shortcuts the tests use."""

    def __init__(
        self,
        url: str,
        clock: Any,  # a FakeClock, or time.time where the test needs real time
        config: RuntimeConfig,
        *,
        concurrency: int = 2,
        poll_s: float = 0.01,
        on_record: Callable[[ExecutionRecord], None] | None = None,
        fetcher: Fetcher | None = None,  # e.g. one on a FakeTimer; else the config's
    ) -> None:
        self.url = url
        self.clock = clock
        self.config = config = replace(config, database_url=url)
        self.services = Services(config, clock=clock, fetcher=fetcher)
        self.database = self.services.database
        self.worker = Worker(
            self.services,
            options=WorkerOptions(concurrency=concurrency, poll_s=poll_s),
            on_record=on_record,
        )

    async def close(self) -> None:
        await self.worker.close()
        await self.services.close()

    @property
    def executor(self) -> Executor:
        assert self.worker.executor is not None
        return self.worker.executor

    async def deploy(self, name: str, code: str) -> Deployed:
        return self.executor.registry.deploy(
            name, code, await describe(code), now=self.executor.now()
        )

    def install(self, name: str, *, priority: str = "default") -> Instance:
        return self.executor.registry.install(
            name, priority=priority, config={}, now=self.executor.now()
        )

    async def idle(self) -> None:
        """Run the worker until nothing is due now by the fake clock, nor running."""
        runner = asyncio.create_task(self.worker.run(until_idle=True))
        await asyncio.wait({runner}, timeout=IDLE_TIMEOUT_S)
        if not runner.done():
            await stop(runner)
            raise TimeoutError(f"the worker was not idle after {IDLE_TIMEOUT_S} s")
        runner.result()

    async def settle(self) -> None:
        """Serve until nothing claimable is due now or running, then stop the worker.

        Unlike ``run(until_idle=True)``, this ignores due tasks of suspended
        instances, which no worker may claim (see test_rate_limits).
        """
        runner = asyncio.create_task(self.worker.run())
        deadline = time.monotonic() + IDLE_TIMEOUT_S
        try:
            while not runner.done() and not self._quiet():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"work still due after {IDLE_TIMEOUT_S} s")
                await asyncio.sleep(0.01)
            if runner.done():
                runner.result()  # the worker failed: say how
        finally:
            await stop(runner)

    def _quiet(self) -> bool:
        """Nothing running, and nothing due now that a worker would fire or claim."""
        with self.database.transaction(write=False) as cur:
            row = self.database.execute(
                cur,
                "SELECT count(*) FROM tasks t JOIN instances i ON i.id = t.instance "
                "WHERE t.state = 'running' OR (t.run_at <= :now AND (t.state = 'recurring' "
                "OR (t.state = 'queued' AND i.status = 'active')))",
                {"now": self.executor.now()},
            ).fetchone()
        return int(row[0]) == 0

    async def advance(self, ms: int) -> None:
        """Move the (fake) clock, then run whatever became due."""
        self.clock.advance(ms)
        await self.idle()

    async def advance_to(self, when: datetime) -> None:
        """Move the clock to ``when`` (a time an agent computed), then run what is due."""
        await self.advance(math.ceil(when.timestamp() * 1000) - self.clock.now_ms)

    def store(self, instance: str) -> Store:
        return open_store(self.url, instance, clock=self.clock)

    def executions(self, instance: str, method: str | None = None) -> list[dict[str, Any]]:
        """Execution records of the instance, oldest first.

        Records started in the same millisecond come in no particular order, and
        executions may run concurrently: tests that care about order check it
        through what the agent wrote, not through this list's order.
        """
        records = reversed(self.executor.history.executions(instance, limit=10_000))
        return [r for r in records if method is None or r["method"] == method]

    def logs(self, instance: str) -> list[str]:
        return [line["line"] for line in self.executor.history.logs(instance, limit=10_000)]

    def tasks(self, instance: str, *, dead: bool = False) -> list[TaskInfo]:
        return self.executor.queue.list(instance, dead=dead)

    def status(self, instance: str) -> tuple[str, str | None]:
        found = self.executor.registry.instance(instance)
        return found.status, found.status_reason


@pytest.fixture
def clock() -> FakeClock:
    """Here the fake clock starts at the real time (see ``real_now_clock``)."""
    return real_now_clock()


RuntimeFactory = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def runtime_factory(db_url: str, clock: FakeClock) -> AsyncIterator[RuntimeFactory]:
    """Started runtimes on the test's database and clock; all closed at the end."""
    made: list[Runtime] = []

    async def make(config: RuntimeConfig | None = None, **options: Any) -> Runtime:
        runtime = Runtime(db_url, options.pop("clock", clock), config or RuntimeConfig(), **options)
        made.append(runtime)
        await runtime.worker.start()
        return runtime

    yield make
    for runtime in made:
        await runtime.close()


@pytest.fixture
async def runtime(runtime_factory: RuntimeFactory) -> Runtime:
    """A started runtime with the default configuration."""
    made: Runtime = await runtime_factory()
    return made
