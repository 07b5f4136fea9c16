"""The worker loop: fire schedules, recover lost leases, claim due tasks, run them.

A worker holds no state the database does not: kill it at any point and
another (or the same, restarted) finishes its tasks. Work it creates itself
(``run_task`` from an execution) wakes it at once; work from elsewhere is found
by polling every ``poll_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from corral.db.raw import Database
from corral.runtime.executor import Executor, RuntimeConfig
from corral.runtime.fetch import Fetcher
from corral.runtime.records import ExecutionRecord
from corral.sandbox.host import Zygote
from corral.sandbox.pool import SandboxPool
from corral.state import Sweeper
from corral.state.sql import SqlBackend
from corral.state.store import Clock
from corral.tasks.queue import ClaimedTask

log = logging.getLogger("corral.worker")


@dataclass(frozen=True)
class WorkerOptions:
    concurrency: int = 4
    poll_s: float = 0.05
    #: How often lost leases are looked for and idle sandboxes retired.
    housekeeping_s: float = 1.0
    insecure: bool = False
    strict: bool = False
    max_processes: int = 32


class Worker:
    def __init__(
        self,
        database: Database,
        *,
        options: WorkerOptions | None = None,
        config: RuntimeConfig | None = None,
        clock: Clock = time.time,
        on_record: Callable[[ExecutionRecord], None] | None = None,
        fetcher: Fetcher | None = None,
    ) -> None:
        self.options = options or WorkerOptions()
        # None: the executor makes one from the config. Either way close() closes it.
        self._fetcher = fetcher
        self._on_record = on_record
        if self.options.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.options.concurrency}")
        self.database = database
        self.config = config
        self.clock = clock
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self.executed = 0
        self._zygote: Zygote | None = None
        self.executor: Executor | None = None

    async def start(self) -> None:
        self._zygote = await Zygote.start(insecure=self.options.insecure)
        pool = SandboxPool(
            self._zygote, strict=self.options.strict, max_processes=self.options.max_processes
        )
        self.executor = Executor(
            self.database,
            pool,
            config=self.config,
            clock=self.clock,
            on_enqueue=self._wake.set,
            fetcher=self._fetcher,
        )

    async def close(self) -> None:
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        if self.executor is not None:
            await self.executor.pool.close()
            await self.executor.fetcher.close()
        if self._zygote is not None:
            await self._zygote.close()

    def wake(self) -> None:
        """Look for due work now (something was just enqueued)."""
        self._wake.set()

    async def run(self, *, until_idle: bool = False) -> None:
        """Serve until cancelled; with ``until_idle``, return once nothing is due or running."""
        if self.executor is None:
            await self.start()
        executor = self.executor
        assert executor is not None
        sweeper = asyncio.create_task(Sweeper(SqlBackend(self.database), clock=self.clock).run())
        housekept = 0.0
        try:
            while True:
                self._wake.clear()
                if time.monotonic() - housekept >= self.options.housekeeping_s:
                    housekept = time.monotonic()
                    await self._housekeeping(executor)
                now = executor.now()
                await executor.db(executor.queue.fire_recurring, now)
                free = self.options.concurrency - len(self._running)
                claimed: list[ClaimedTask] = []
                if free > 0:
                    claimed = await executor.db(
                        executor.queue.claim, free, now=now, lease_ms=executor.lease_ms
                    )
                for task in claimed:
                    self._start(executor, task)
                if until_idle and not self._running and not claimed:
                    running, next_at = await executor.db(executor.queue.pending, executor.now())
                    if running == 0 and (next_at is None or next_at > executor.now()):
                        return
                if claimed and len(self._running) < self.options.concurrency:
                    continue  # there may be more due right now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.options.poll_s)
                # Python 3.11's wait_for drops a cancel() that arrives as the event
                # fires; the task still knows it was asked to stop.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise asyncio.CancelledError
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)

    def _start(self, executor: Executor, task: ClaimedTask) -> None:
        running = asyncio.create_task(self._execute(executor, task))
        self._running.add(running)
        running.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()

    async def _execute(self, executor: Executor, task: ClaimedTask) -> None:
        try:
            record = await executor.run(task)
            self.executed += 1
            if record is not None and self._on_record is not None:
                self._on_record(record)
        except Exception:
            # The task stays leased; when the lease ends it is retried elsewhere.
            log.exception("task %s of %s could not be run", task.id, task.instance)

    async def _housekeeping(self, executor: Executor) -> None:
        recovered = await executor.db(executor.queue.recover, executor.now())
        if recovered:
            log.warning("put back %d task(s) whose worker stopped", recovered)
        await executor.pool.retire_idle()
