"""The worker loop: fire schedules, recover lost leases, claim due tasks, run them,
commit what they leave.

The worker drives: it claims (``claim``), hands each claim to its executor, and
commits each execution's settlement (``execute``), claiming in the same commit
the tasks that take the finished ones' places. An execution that enqueues a task
due now hands it to the worker that runs it (``hand_off``): the same lease as a
claim's, taken as the task is inserted. docs/architecture.md walks one task
through all of it.

A worker holds no state the database does not: kill it at any point and
another (or the same, restarted) finishes its tasks. Work it creates itself
(``run_task`` from an execution) wakes it at once; where the database can say so
(PostgreSQL), so does work any other process enqueues (``TaskQueue.listen``);
otherwise it is found by polling every ``poll_s``.

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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from corral.errors import DatabaseUnavailable
from corral.runtime import wakeups
from corral.runtime.executor import Claim, Executor, Settlement
from corral.runtime.metrics import SNAPSHOT_EVERY_S
from corral.runtime.records import ExecutionRecord
from corral.runtime.registry import ACTIVE
from corral.runtime.services import Services
from corral.sandbox.pool import MAX_PROCESSES, SandboxPool
from corral.sandbox.zygote import Zygote

log = logging.getLogger("corral.worker")

DAY_MS = 86_400_000


@dataclass(frozen=True)
class WorkerOptions:
    concurrency: int = 4
    poll_s: float = 0.05
    #: How often lost leases are looked for and idle sandboxes retired.
    housekeeping_s: float = 1.0
    #: How often webhook deliveries past their retention are deleted.
    purge_s: float = 60.0
    insecure: bool = False
    strict: bool = False
    max_processes: int = MAX_PROCESSES


class Worker:
    def __init__(
        self,
        services: Services,
        *,
        options: WorkerOptions | None = None,
        on_record: Callable[[ExecutionRecord], None] | None = None,
    ) -> None:
        self.options = options or WorkerOptions()
        self._on_record = on_record
        if self.options.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.options.concurrency}")
        #: What the worker runs on; its builder closes it, after the worker.
        self.services = services
        self._wake = wakeups.Wakeup()
        #: The executions in flight, with what they run.
        self._running: dict[asyncio.Task[None], Claim] = {}
        self._saturated = False
        #: Whether the loop runs: only then may a settlement commit or a hand-off start
        #: work for it.
        self._serving = False
        #: Settlements waiting for the next commit, and the commit being written.
        self._unsettled: list[Settlement] = []
        self._committing: asyncio.Task[None] | None = None
        #: Set while nothing runs and the loop waits for a wake-up or its next poll.
        self.idle = asyncio.Event()
        self.executed = 0
        #: When (monotonic) deliveries past retention were last deleted.
        self._purged_at = -math.inf
        #: When (monotonic) this process's metrics were last written.
        self._snapshot_at = -math.inf
        self._zygote: Zygote | None = None
        self.executor: Executor | None = None

    async def start(self) -> None:
        self._zygote = await Zygote.start(insecure=self.options.insecure)
        pool = SandboxPool(
            self._zygote, strict=self.options.strict, max_processes=self.options.max_processes
        )
        self.executor = Executor(self.services, pool, on_enqueue=self._wake.set)

    async def close(self) -> None:
        """Stop the executions in flight, the sandboxes and the zygote. The services
        stay open: whoever built them closes them (``Services.close``)."""
        self.abandon()
        await asyncio.gather(*self._running, return_exceptions=True)
        await self.services.metric_snapshots.save()  # what it counted since the last
        if self.executor is not None:
            await self.executor.pool.close()
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
        chores = [
            asyncio.create_task(self.services.sweeper().run()),
            asyncio.create_task(
                executor.queue.listen(self._wake.set, backoff=executor.config.reconnect)
            ),
        ]
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
                    claimed = await self.claim(free) if free > 0 else []
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
                    self._start(claim)
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

    async def claim(self, limit: int) -> list[Claim]:
        """Lease up to ``limit`` due tasks, each with its instance and version."""
        executor = self._executor
        return await executor.db(self._claim, limit, executor.now())

    def _claim(self, limit: int, now: int) -> list[Claim]:
        executor = self._executor
        leased = executor.queue.claim(limit, now=now, lease_ms=executor.lease_ms)
        return executor.leased(leased, now)

    async def execute(self, claim: Claim) -> ExecutionRecord | None:
        """Run the claimed task and commit its settlement; the record, once committed,
        or None when the task did not run (the executor settled it, and says why)."""
        settlement = await self._executor.run(claim, hand_off=self.hand_off)
        if settlement is None:
            return None
        await self._settle(settlement)
        self.services.metrics.executed(
            claim.instance.agent, settlement.record, due_at=claim.task.run_at, fate=settlement.fate
        )
        return settlement.record

    async def _settle(self, settlement: Settlement) -> None:
        """Write the settlement in the next commit; return once it is committed.

        Group commit: while one commit is being written, the executions that finish
        wait for the next and share it, so a busy worker writes one transaction for
        several executions and an idle one still commits each at once. The same
        commit claims the tasks to take the finished ones' places (``_wanted``): a
        busy worker, or one running a chain, then needs one commit a round, not two.
        """
        self._unsettled.append(settlement)
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_settlements())
        await settlement.committed

    async def _commit_settlements(self) -> None:
        executor = self._executor
        uncertain = False
        while self._unsettled:
            batch, self._unsettled = self._unsettled, []
            wanted = self._wanted(len(batch))
            try:
                try:
                    claims = await executor.db(
                        self._write_settlements, batch, wanted, executor.now(), uncertain=uncertain
                    )
                except DatabaseUnavailable as exc:
                    # Not written, or not known to be: kept, and written first once the
                    # database is back. Their executions wait for that in their slots,
                    # and the worker leases their tasks anew before it claims again.
                    await executor.outage.wait(exc)
                    self._unsettled[:0] = batch
                    uncertain = True
                    continue
                uncertain = False
            except Exception as exc:
                # Nothing of the batch was written: its tasks stay leased and run again.
                for settlement in batch:
                    settlement.committed.set_exception(exc)
            except BaseException:
                for settlement in batch + self._unsettled:
                    settlement.committed.cancel()
                raise
            else:
                if wanted:
                    self._saturated = len(claims) == wanted
                    for claim in claims:
                        self._start(claim)
                for settlement in batch:
                    settlement.committed.set_result(None)

    def _write_settlements(
        self, batch: list[Settlement], wanted: int, now: int, *, uncertain: bool = False
    ) -> list[Claim]:
        """Each settlement, and the claim of ``wanted`` tasks: one commit for all.

        ``uncertain``: some of the batch may be written already, by a commit whose
        answer an outage cut off. A settlement is one commit, so a written record
        means a written settlement: those are left out, and the others written as ever.
        """
        executor = self._executor
        if uncertain:
            written = executor.history.recorded([s.record.id for s in batch])
            batch = [s for s in batch if s.record.id not in written]
        leased = executor.queue.settle(
            executor.settling(batch, now), claim=wanted, now=now, lease_ms=executor.lease_ms
        )
        return executor.leased(leased, now)

    def _wanted(self, finishing: int) -> int:
        """Claim with a settlement commit when due work may be waiting: the last claim
        filled every slot, or something was enqueued since (a chain's next step)."""
        if not self._serving or not (self._saturated or self._wake.is_set()):
            return 0
        return max(0, self.options.concurrency - len(self._running) + finishing)

    def has_room(self) -> bool:
        """Whether a task handed off now could start at once."""
        return self._serving and len(self._running) < self.options.concurrency

    def hand_off(self, instance: str, method: str, args: bytes, now: int) -> bool:
        """Enqueue a task due now already leased to this worker, and start it: False
        (nothing enqueued) when the worker has no free slot for it.

        An execution's ``run_task`` comes here first (``InstanceTools``). The next
        step of a chain then needs no claim, here or in any other worker (none is
        woken for it), and starts while the step that made it is still being settled.
        The lease is a claim's, taken as the task is inserted and read the same way
        (``TaskQueue.hand_off``); an instance suspended meanwhile gets its task back
        in the queue, as a claim would have left it there.
        """
        if not self.has_room():
            return False
        executor = self._executor
        lease_ms = executor.lease_ms
        leased = executor.queue.hand_off(instance, method, args, now=now, lease_ms=lease_ms)
        [claim] = executor.leased([leased], now)
        if claim.instance.status != ACTIVE:
            executor.queue.release(claim.task, run_at=now)
        else:
            self._start(claim)
        return True

    @property
    def _executor(self) -> Executor:
        if self.executor is None:
            raise RuntimeError("the worker is not started: await start() first")
        return self.executor

    def _start(self, claim: Claim) -> None:
        running = asyncio.create_task(self._execute(claim))
        self._running[running] = claim
        running.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        del self._running[task]
        # Otherwise the last claim found all that was due: the next is found by a
        # wake-up (work this worker enqueued) or the poll, without a wasted claim.
        if self._saturated or not self._running:
            self._wake.set()

    async def _execute(self, claim: Claim) -> None:
        try:
            record = await self.execute(claim)
            self.executed += 1
            if record is not None and self._on_record is not None:
                self._on_record(record)
        except Exception:
            # The task stays leased; when the lease ends it is retried elsewhere.
            task = claim.task
            log.exception("task %s of %s could not be run", task.id, task.instance)

    async def _housekeeping(self, executor: Executor) -> None:
        retried, dead = await executor.db(executor.queue.recover_lost, executor.now())
        if retried or dead:
            log.warning("put back %d task(s) whose worker stopped", retried + dead)
            metrics = self.services.metrics
            metrics.retries.inc(amount=retried)
            metrics.dead_letters.inc(amount=dead)
        if time.monotonic() - self._snapshot_at >= SNAPSHOT_EVERY_S:
            self._snapshot_at = time.monotonic()
            await self.services.metric_snapshots.save()
        await executor.pool.retire_idle()
        if time.monotonic() - self._purged_at >= self.options.purge_s:
            # Every worker does it: deleting what another just deleted deletes nothing.
            self._purged_at = time.monotonic()
            days = executor.config.retention.deliveries_days
            purged = await executor.db(executor.webhooks.purge, executor.now() - days * DAY_MS)
            if purged:
                log.info("deleted %d webhook deliveries older than %d days", purged, days)
