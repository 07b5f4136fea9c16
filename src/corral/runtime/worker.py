"""The worker loop: fire schedules, recover lost leases, claim due tasks, run them.

A worker holds no state the database does not: kill it at any point and
another (or the same, restarted) finishes its tasks. Work it creates itself
(``run_task`` from an execution) wakes it at once; on PostgreSQL so does work any
other process enqueues (``wakeups``); otherwise it is found by polling every
``poll_s``.

A database outage stops nothing but the work that needs the database: the loop
stops claiming and waits (``Executor.outage``) until the database answers again,
executions in flight run on (their agents' store calls fail with
``DatabaseUnavailable``) and their settlements are kept until they can be
written; then the worker leases its running tasks anew and carries on. Errors
that waiting would not fix (a missing table, a refused password) stop it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from corral.db.raw import Database
from corral.errors import DatabaseUnavailable
from corral.runtime import wakeups
from corral.runtime.executor import Claim, Executor, RuntimeConfig
from corral.runtime.network.fetch import Fetcher
from corral.runtime.records import ExecutionRecord
from corral.sandbox.pool import SandboxPool
from corral.sandbox.zygote import Zygote
from corral.state import Sweeper
from corral.state.sql import SqlBackend
from corral.state.store import Clock

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
        self._wake = wakeups.Wakeup()
        #: The executions in flight, with what they run.
        self._running: dict[asyncio.Task[None], Claim] = {}
        self._saturated = False
        #: Whether the loop runs: only then may a settlement commit claim for it.
        self._serving = False
        #: Set while nothing runs and the loop waits for a wake-up or its next poll.
        self.idle = asyncio.Event()
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
            refill=self,
        )

    async def close(self) -> None:
        self.abandon()
        await asyncio.gather(*self._running, return_exceptions=True)
        if self.executor is not None:
            await self.executor.pool.close()
            await self.executor.fetcher.close()
        if self._zygote is not None:
            await self._zygote.close()

    @property
    def zygote(self) -> Zygote:
        """The started worker's zygote: code can be described in it without starting
        another (about 0.2 s each), as ``corral dev`` does on every save."""
        if self._zygote is None:
            raise RuntimeError("the worker is not started: await start() first")
        return self._zygote

    @property
    def in_flight(self) -> int:
        """Executions running now: what stopping without ``abandon`` waits for."""
        return len(self._running)

    def abandon(self) -> int:
        """Cancel the executions in flight, rather than wait for them; how many there were.

        Their tasks stay leased: the next worker to look puts them back, at once when
        this process has exited (see ``TaskQueue.recover``).
        """
        for task in self._running:
            task.cancel()
        return len(self._running)

    def wake(self) -> None:
        """Look for due work now (something was just enqueued)."""
        self._wake.set()

    async def run(self, *, until_idle: bool = False) -> None:
        """Serve until cancelled; with ``until_idle``, return once nothing is due or running."""
        if self.executor is None:
            await self.start()
        executor = self.executor
        assert executor is not None
        chores = [asyncio.create_task(Sweeper(SqlBackend(self.database), clock=self.clock).run())]
        if self.database.postgres:
            chores.append(
                asyncio.create_task(
                    wakeups.listen(self.database, self._wake.set, backoff=executor.config.reconnect)
                )
            )
        housekept = fired = 0.0
        self._serving = True
        try:
            while True:
                self._wake.clear()
                try:
                    if time.monotonic() - housekept >= self.options.housekeeping_s:
                        housekept = time.monotonic()
                        await self._housekeeping(executor)
                    # Schedules are looked at once a poll interval, not on every
                    # wake-up: a worker busy with a chain would otherwise ask after
                    # each step.
                    if time.monotonic() - fired >= self.options.poll_s:
                        fired = time.monotonic()
                        await executor.db(executor.queue.fire_recurring, executor.now())
                    free = self.options.concurrency - len(self._running)
                    claimed = await executor.claim(free) if free > 0 else []
                    if until_idle and not self._running and not claimed:
                        running, next_at = await executor.db(executor.queue.pending, executor.now())
                        if running == 0 and (next_at is None or next_at > executor.now()):
                            return
                except DatabaseUnavailable as exc:
                    await self._ride_out(executor, exc)
                    continue
                # A full claim may have left due work behind: look again when a slot frees.
                self._saturated = free <= 0 or len(claimed) == free
                for claim in claimed:
                    self._start(executor, claim)
                if claimed and len(self._running) == len(claimed):
                    # Idle until now: let them send their work to the sandbox before
                    # this loop's next database call. A wake-up often comes in meanwhile
                    # (the NOTIFY of the very task just claimed), and the next round's
                    # claim would go first. Measured: 0.2-0.4 ms of a round trip.
                    await asyncio.sleep(0)
                if self._saturated and len(self._running) < self.options.concurrency:
                    continue  # slots freed while claiming (a thread, on PostgreSQL)
                if not self._running:
                    self.idle.set()
                await self._wake.wait(self.options.poll_s)
                self.idle.clear()
        finally:
            self._serving = False
            for chore in chores:
                chore.cancel()
            await asyncio.gather(*chores, return_exceptions=True)
            if self._running:
                await asyncio.gather(*self._running, return_exceptions=True)
            executor.outage.close()

    async def _ride_out(self, executor: Executor, cause: DatabaseUnavailable) -> None:
        """Wait until the database is back, then lease the tasks still running here
        anew: if the outage outlasted their leases, the next recovery (this worker's
        own, first thing) would otherwise hand them out again while they run."""
        while True:
            await executor.outage.wait(cause)
            in_flight = list(self._running.values())
            try:
                kept = await executor.renew_leases(in_flight)
            except DatabaseUnavailable as exc:
                cause = exc
                continue
            if kept < len(in_flight):
                log.info(
                    "after the outage, %d of %d task(s) in flight were settled or taken "
                    "back meanwhile",
                    len(in_flight) - kept,
                    len(in_flight),
                )
            return

    def wanted(self, finishing: int) -> int:
        """Claim with a settlement commit when due work may be waiting: the last claim
        filled every slot, or something was enqueued since (a chain's next step)."""
        if not self._serving or not (self._saturated or self._wake.is_set()):
            return 0
        return max(0, self.options.concurrency - len(self._running) + finishing)

    def claimed(self, claims: list[Claim], wanted: int) -> None:
        self._saturated = len(claims) == wanted
        assert self.executor is not None
        for claim in claims:
            self._start(self.executor, claim)

    def has_room(self) -> bool:
        return self._serving and len(self._running) < self.options.concurrency

    def handed(self, claim: Claim) -> None:
        assert self.executor is not None
        self._start(self.executor, claim)

    def _start(self, executor: Executor, claim: Claim) -> None:
        running = asyncio.create_task(self._execute(executor, claim))
        self._running[running] = claim
        running.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        del self._running[task]
        # Otherwise the last claim found all that was due: the next is found by a
        # wake-up (work this worker enqueued) or the poll, without a wasted claim.
        if self._saturated or not self._running:
            self._wake.set()

    async def _execute(self, executor: Executor, claim: Claim) -> None:
        try:
            record = await executor.run(claim)
            self.executed += 1
            if record is not None and self._on_record is not None:
                self._on_record(record)
        except Exception:
            # The task stays leased; when the lease ends it is retried elsewhere.
            task = claim.task
            log.exception("task %s of %s could not be run", task.id, task.instance)

    async def _housekeeping(self, executor: Executor) -> None:
        recovered = await executor.db(executor.queue.recover, executor.now())
        if recovered:
            log.warning("put back %d task(s) whose worker stopped", recovered)
        await executor.pool.retire_idle()
