"""Run one claimed task: resolve its method by name, check limits, execute, record, settle.

Everything an execution leaves — its record and log lines, the task's removal,
retry or dead letter, an auto-suspension — is written here, so a task is only
ever gone from the queue once what happened to it is in the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ParamSpec, Protocol, TypeVar

from corral import codec
from corral.db.raw import Database
from corral.errors import DatabaseUnavailable
from corral.quotas import Quotas
from corral.runtime.declared import Declared, declared
from corral.runtime.history import History
from corral.runtime.network.fetch import FetchConfig, Fetcher
from corral.runtime.outage import Outage
from corral.runtime.records import ExecutionRecord
from corral.runtime.registry import ACTIVE, UNINSTALLING, Instance, Registry, Version
from corral.runtime.tools import InstanceTools
from corral.sandbox.limits import CEILINGS, Limits, Outcome
from corral.sandbox.pool import SandboxPool
from corral.state import Store
from corral.state.sql import SqlBackend
from corral.state.store import Clock
from corral.tasks.callbacks import Callbacks
from corral.tasks.queue import Backoff, ClaimedTask, TaskQueue

log = logging.getLogger("corral.executor")

_P = ParamSpec("_P")
_T = TypeVar("_T")

LIFECYCLE_HOOKS = ("activate", "upgrade", "deactivate")
RATE_CHECK_SHARES = 16
#: With the longest timeout a ``Limits`` allows, a lease stays far inside an int64 of ms.
MAX_LEASE_GRACE_S = 3600


@dataclass(frozen=True)
class Claim:
    """A leased task with the instance and version it runs against, read as it was claimed."""

    task: ClaimedTask
    instance: Instance
    version: Version


@dataclass
class _Settlement:
    """What an execution leaves to be committed: its record and its task's fate."""

    task: ClaimedTask
    record: ExecutionRecord
    version: int
    committed: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Refill(Protocol):
    """The worker's side of a settlement commit that also claims (see ``_settle``)."""

    def wanted(self, finishing: int) -> int:
        """How many tasks to claim, once ``finishing`` executions have been settled."""

    def claimed(self, claims: list[Claim], wanted: int) -> None:
        """Start what the commit claimed (``wanted`` were asked for)."""

    def has_room(self) -> bool:
        """Whether a task handed off now could start at once (see ``hand_off``)."""

    def handed(self, claim: Claim) -> None:
        """Start a task handed off to this worker."""


@dataclass(frozen=True)
class RateLimit:
    """At most ``executions`` per rolling ``window_s`` per instance."""

    executions: int
    window_s: int
    name: str


@dataclass(frozen=True)
class RuntimeConfig:
    #: Each execution's limits, unless its agent declares others.
    limits: Limits = field(default_factory=Limits)
    #: The most an agent may declare: its version's tasks are dead-lettered above them.
    ceilings: Limits = CEILINGS
    #: Outbound requests: rate limit per instance, timeout, response size (docs/fetch.md).
    fetch: FetchConfig = field(default_factory=FetchConfig)
    rate_limits: tuple[RateLimit, ...] = (
        RateLimit(200, 5 * 60, "5 minutes"),
        RateLimit(500, 24 * 3600, "24 hours"),
    )
    max_attempts: int = 3
    backoff: Backoff = field(default_factory=Backoff)
    #: Added to an execution's timeout for its lease: time to record and settle it.
    lease_grace_s: float = 15.0
    #: Between a worker's attempts to reach its database during an outage.
    reconnect: Backoff = field(default_factory=lambda: Backoff(base_ms=100, cap_ms=2_000))
    #: What each instance may keep: store bytes and keys, pending tasks, callbacks.
    quotas: Quotas = field(default_factory=Quotas)

    def __post_init__(self) -> None:
        self.limits.check_within(self.ceilings)
        if not 0 <= self.lease_grace_s <= MAX_LEASE_GRACE_S:  # and not nan
            raise ValueError(
                f"lease_grace_s must be from 0 to {MAX_LEASE_GRACE_S} seconds, "
                f"got {self.lease_grace_s!r}"
            )

    @classmethod
    def from_environment(cls) -> RuntimeConfig:
        """What a worker started from the command line runs with: the defaults, with
        the quotas of ``CORRAL_QUOTAS_*`` (``QuotaConfigError`` for a bad one)."""
        return cls(quotas=Quotas.from_environment())


class Executor:
    def __init__(
        self,
        database: Database,
        pool: SandboxPool,
        *,
        config: RuntimeConfig | None = None,
        clock: Clock = time.time,
        on_enqueue: Callable[[], None] | None = None,
        fetcher: Fetcher | None = None,
        refill: Refill | None = None,
    ) -> None:
        self.config = config or RuntimeConfig()
        self.database = database
        self.pool = pool
        self.clock = clock
        #: Shared by every execution: one connection pool, one rate bucket per instance.
        self.fetcher = fetcher or Fetcher(self.config.fetch)
        self.queue = TaskQueue(
            database, max_attempts=self.config.max_attempts, backoff=self.config.backoff
        )
        self.callbacks = Callbacks(database)
        self.registry = Registry(database, self.queue)
        self.history = History(database)
        # Executions' store writes commit without waiting for the disk, as the
        # worker's own do (see ``db``).
        self._backend = SqlBackend(database, deferred=True)
        self._on_enqueue = on_enqueue
        self._refill = refill
        #: Executions each instance may start here before its rate windows are counted again.
        self._rate_credit: dict[str, int] = {}
        self._declared: dict[tuple[str, int], Declared] = {}
        self._unsettled: list[_Settlement] = []
        self._committing: asyncio.Task[None] | None = None
        #: Corrections of records whose process went on computing (kept until done).
        self._amendments: set[asyncio.Task[None]] = set()
        #: Waits out the database's outages for the worker and its settlements.
        self.outage = Outage(lambda: database.call_deferred(database.probe), self.config.reconnect)

    @property
    def lease_ms(self) -> int:
        """How long a claim holds a task whose agent keeps the default timeout."""
        return self._lease_ms(self.config.limits.timeout_s)

    def _lease_ms(self, timeout_s: float) -> int:
        """A lease for ``timeout_s``: a ``Limits`` value, so finite and at most a day;
        the grace is at most an hour, so a lease is at most 90,000,000 ms."""
        return math.ceil((timeout_s + self.config.lease_grace_s) * 1000)

    def _rules(self, version: Version) -> Declared:
        """The version's checked limits and allow-list, worked out once: versions never
        change, and a claim and its execution both need them."""
        key = (version.agent, version.number)
        rules = self._declared.get(key)
        if rules is None:
            rules = self._declared[key] = declared(
                version.description, self.config.limits, self.config.ceilings
            )
        return rules

    def now(self) -> int:
        return math.floor(self.clock() * 1000)

    async def db(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """The worker's database work: claims, settlements, releases, dead letters.

        Its commits do not wait for the disk (``Database.call_deferred``), like an
        execution's own writes. Nobody outside is told of them, and a server crash
        loses the end of the write-ahead log, in order: at worst a claim or a
        settlement is undone, with everything written after it, and its task runs
        again (at least once), as after a worker crash. Measured on these machines a
        durable commit waited 200-500 µs for the disk, and a chain step, a claim and
        a round trip each wait for one or two.
        """
        return await self.database.call_deferred(fn, *args, **kwargs)

    async def db_lasting(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``db``, tried again once the database is back from an outage: for the work
        around an execution, which has a slot and must not be dropped halfway (a
        dead letter's reason, a release, an uninstall's removal). Only for calls
        whose arguments still hold after the outage: a claim's ``now`` would not.
        """
        while True:
            try:
                return await self.db(fn, *args, **kwargs)
            except DatabaseUnavailable as exc:
                await self.outage.wait(exc)

    async def claim(self, limit: int) -> list[Claim]:
        """Lease up to ``limit`` due tasks, with their instances and versions: one transaction."""
        return await self.db(self._claim, limit, self.now())

    def _claim(self, limit: int, now: int) -> list[Claim]:
        # On PostgreSQL the claim is one statement in autocommit that reads the
        # instances and versions with the tasks; the rare lease extensions after it
        # are statements of their own (a crash between leaves the default lease, as
        # a crash after would). Measured in an idle worker's round trip, from wake-up
        # to claimed: 0.81 ms as a pipelined transaction, 0.54-0.72 ms as one
        # statement. On SQLite the reads join the claim's transaction.
        together = (
            contextlib.nullcontext()
            if self.database.postgres
            else self.database.transaction(write=True)
        )
        with together:
            claimed = self.queue.claim(
                limit, now=now, lease_ms=self.lease_ms, joined=self.registry.EXECUTION_COLUMNS
            )
            return self._leased(claimed, now)

    def _leased(self, claimed: list[tuple[ClaimedTask, tuple[Any, ...]]], now: int) -> list[Claim]:
        """Claims of the tasks a claim leased, each with its instance and version (on
        PostgreSQL read by the claim itself), and a longer lease where it needs one."""
        if not claimed:
            return []
        if self.database.postgres:
            found = dict(self.registry.for_execution_row(row) for _, row in claimed)
        else:
            found = self.registry.for_executions(task.instance for task, _ in claimed)
        for task, _ in claimed:
            self._extend_lease(task, found[task.instance][1], now)
        return [Claim(task, *found[task.instance]) for task, _ in claimed]

    def hand_off(self, instance: str, method: str, args: bytes, now: int) -> bool:
        """Enqueue a task due now already leased to this worker, and start it: False
        (nothing enqueued) when the worker has no free slot for it.

        An execution's ``run_task`` comes here first. The next step of a chain then
        needs no claim, here or in any other worker (none is woken for it), and
        starts while the step that made it is still being settled.
        """
        if self._refill is None or not self._refill.has_room():
            return False
        # One statement, in autocommit: on PostgreSQL one round trip, the instance
        # and its current version read with the insert. The rare cases after it
        # (suspended meanwhile, a longer timeout) each cost a statement more.
        task, row = self.queue.enqueue_leased(
            instance,
            method,
            args,
            now=now,
            lease_ms=self.lease_ms,
            joined=self.registry.EXECUTION_COLUMNS,
        )
        if self.database.postgres:
            found = self.registry.for_execution_row(row)[1]
        else:
            found = self.registry.for_executions([instance])[instance]
        if found[0].status != ACTIVE:  # suspended meanwhile: the queue keeps it
            self.queue.release(task, run_at=now)
            return True
        self._extend_lease(task, found[1], now)
        self._refill.handed(Claim(task, *found))
        return True

    def _extend_lease(self, task: ClaimedTask, version: Version, now: int) -> None:
        """An agent allowed more time than the default keeps its task for that long.

        Otherwise recovery would take the row back while the execution still runs,
        and run it twice at once. A declaration this worker cannot honour keeps the
        default lease: ``run`` dead-letters its task at once.
        """
        timeout_s = self._timeout_s(version)
        if timeout_s > self.config.limits.timeout_s:
            self.queue.extend_leases([task], until=now + self._lease_ms(timeout_s))

    def _timeout_s(self, version: Version) -> float:
        """How long the version's executions may run, at least the default (bad limits
        are left to ``run``, which dead-letters)."""
        try:
            timeout_s = self._rules(version).limits.timeout_s
        except ValueError:
            return self.config.limits.timeout_s
        return max(timeout_s, self.config.limits.timeout_s)

    async def renew_leases(self, claims: Sequence[Claim]) -> int:
        """Lease the tasks of executions still running here anew, after an outage that
        may have outlasted their leases; how many this worker still held.

        Recovery (this worker's own first) would otherwise hand them out again while
        they run. One another worker took back meanwhile stays with it: the task
        then runs twice, at least once as promised.
        """
        if not claims:
            return 0
        return await self.db(self._renew_leases, claims, self.now())

    def _renew_leases(self, claims: Sequence[Claim], now: int) -> int:
        by_timeout: dict[float, list[ClaimedTask]] = {}
        for claim in claims:
            by_timeout.setdefault(self._timeout_s(claim.version), []).append(claim.task)
        return sum(
            self.queue.extend_leases(tasks, until=now + self._lease_ms(timeout_s))
            for timeout_s, tasks in by_timeout.items()
        )

    async def run(self, claim: Claim) -> ExecutionRecord | None:
        """Execute the task and settle it; None when it did not run (and why is logged)."""
        task, instance, version = claim.task, claim.instance, claim.version
        try:
            rules = self._rules(version)
        except ValueError as exc:
            await self._dead(
                task,
                f"{version.label} cannot run: {exc}; deploy a version that fixes it, then: "
                f"corral tasks retry {task.id}",
            )
            return None
        if task.method not in rules.methods:
            await self._unresolved(task, instance, version, rules.methods)
            return None
        if instance.status == ACTIVE and await self._over_rate(instance):
            await self.db_lasting(self.queue.release, task, run_at=self.now())
            return None
        limits = rules.limits
        tools = InstanceTools(
            Store(self._backend, instance.id, clock=self.clock, quotas=self.config.quotas),
            self.queue,
            self.callbacks,
            self.fetcher.bind(instance.id, rules.network, time_left_s=limits.timeout_s),
            instance=instance.id,
            class_name=rules.class_name,
            methods=rules.methods,
            clock=self.clock,
            quotas=self.config.quotas,
            on_enqueue=self._on_enqueue,
            hand_off=self.hand_off,
        )
        started = datetime.fromtimestamp(self.clock(), UTC)  # the clock rate limits use
        settled: list[_Settlement] = []

        def overran() -> None:
            # The process went on computing after its result, which the pool has just
            # amended. A settlement not yet built will carry it; one built is corrected.
            if settled:
                amendment = asyncio.create_task(self._amend(settled[0]))
                self._amendments.add(amendment)
                amendment.add_done_callback(self._amendments.discard)

        result = await self.pool.execute(
            instance.id,
            f"{version.agent}@{version.number}",
            version.code,
            task.method,
            codec.decode(task.args),
            limits,
            tools,
            on_overrun=overran,
            filename=f"<{version.label}>",  # what the agent's tracebacks call its code
        )
        record = ExecutionRecord(instance.id, task.method, task.trigger, result, started)  # type: ignore[arg-type]
        settled.append(_Settlement(task, record, version.number))
        await self._settle(settled[0])
        await self._after(task, instance)
        return record

    async def _settle(self, settlement: _Settlement) -> None:
        """Write the settlement in the next commit; return once it is committed.

        Group commit: while one commit is being written, the executions that finish
        wait for the next and share it, so a busy worker writes one transaction for
        several executions and an idle one still commits each at once. The same
        transaction claims the tasks to take the finished ones' places (``Refill``):
        a busy worker, or one running a chain, then needs one transaction a round,
        not two.
        """
        self._unsettled.append(settlement)
        if self._committing is None or self._committing.done():
            self._committing = asyncio.create_task(self._commit_settlements())
        await settlement.committed

    async def _commit_settlements(self) -> None:
        uncertain = False
        while self._unsettled:
            batch, self._unsettled = self._unsettled, []
            wanted = self._refill.wanted(len(batch)) if self._refill is not None else 0
            try:
                try:
                    claims = await self.db(
                        self._write_settlements, batch, wanted, self.now(), uncertain=uncertain
                    )
                except DatabaseUnavailable as exc:
                    # Not written, or not known to be: kept, and written first once the
                    # database is back. Their executions wait for that in their slots,
                    # and the worker leases their tasks anew before it claims again.
                    await self.outage.wait(exc)
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
                    assert self._refill is not None
                    self._refill.claimed(claims, wanted)
                for settlement in batch:
                    settlement.committed.set_result(None)

    def _write_settlements(
        self, batch: list[_Settlement], wanted: int, now: int, *, uncertain: bool = False
    ) -> list[Claim]:
        """Each record, and its task's removal, retry or dead letter, and the claim of
        ``wanted`` tasks: one commit for all.

        ``uncertain``: some of the batch may be written already, by a commit whose
        answer an outage cut off (on PostgreSQL). A settlement is one commit, so a
        written record means a written settlement: those are left out, and the
        others written as ever.
        """
        if uncertain:
            written = self.history.recorded([s.record.id for s in batch])
            batch = [s for s in batch if s.record.id not in written]
            if not batch:
                return self._claim(wanted, now) if wanted else []
        records = [(s.record, s.version, s.task.id) for s in batch]
        done = [s.task for s in batch if s.record.result.outcome is Outcome.OK]
        if len(done) == len(batch):
            # The common case: every execution succeeded. One statement for the
            # records, the tasks' removal and the claim (on PostgreSQL, where it can
            # be one). Measured against a pipelined transaction, a one-worker drain on
            # PostgreSQL side by side: 1,291-1,435 -> 1,488-1,696 tasks/s.
            statements = self.history.record_statements(records)
            claim = (
                self.queue.claim_statement(
                    wanted, now=now, lease_ms=self.lease_ms, joined=self.registry.EXECUTION_COLUMNS
                )
                if wanted
                else None
            )
            if statements is not None and (claim is not None or not wanted):
                statements.append(self.queue.finish_statement(done))
                if claim is not None:
                    statements.append(claim)
                rows = self.database.write_together(statements, returning=claim is not None)
                return self._leased(self.queue.claimed(rows), now)
        with self.database.transaction(write=True):
            self.history.record(records)
            self.queue.finish(done)
            for settlement in batch:
                if settlement.record.result.outcome is not Outcome.OK:
                    self._write_failure(settlement.task, settlement.record)
            return self._claim(wanted, now) if wanted else []

    async def _amend(self, settlement: _Settlement) -> None:
        """Correct a record written before its process was found still computing."""
        try:
            await settlement.committed
            await self.db_lasting(self.history.amend, settlement.record)
        except Exception as exc:  # the record stays as first written; say so
            log.warning("could not amend execution %s: %s", settlement.record.id, exc)

    def _write_failure(self, task: ClaimedTask, record: ExecutionRecord) -> None:
        error = record.result.failure_line
        assert error is not None
        if not self.queue.fail(task, error, now=self.now()):
            line = (
                f"task {task.id} ({task.method}) dead-lettered after {task.attempts} "
                f"attempt(s): {error}"
            )
            log.warning("%s: %s", task.instance, line)
            self.history.log(task.instance, "warning", line, now=self.now())

    async def _unresolved(
        self, task: ClaimedTask, instance: Instance, version: Version, methods: frozenset[str]
    ) -> None:
        if task.trigger == "lifecycle" and task.method in LIFECYCLE_HOOKS:
            await self.db_lasting(self.queue.finish, [task])  # an agent need not define every hook
            await self._after(task, instance)
            return
        await self._dead(
            task,
            f"{version.label} has no method {task.method!r} (its methods: "
            f"{', '.join(sorted(methods)) or 'none'}); deploy a version that has "
            f"it, then: corral tasks retry {task.id}",
        )

    async def _dead(self, task: ClaimedTask, reason: str) -> None:
        await self.db_lasting(self.queue.dead_letter, task.id, reason)
        await self._log(task.instance, f"task {task.id} dead-lettered: {reason}")

    async def _over_rate(self, instance: Instance) -> bool:
        credit = self._rate_credit.get(instance.id, 0)
        if credit > 0:
            self._rate_credit[instance.id] = credit - 1
            return False
        now = self.now()
        limits = self.config.rate_limits
        if not limits:
            return False
        # Executions before the deploy that lifted a suspension no longer count.
        since = [
            max(now - limit.window_s * 1000, instance.limits_reset_at or 0) for limit in limits
        ]
        counts = await self.db_lasting(self.history.counts_since, instance.id, since)
        for limit, count in zip(limits, counts, strict=True):
            if count >= limit.executions:
                reason = (
                    f"auto-suspended: {count} executions in the last {limit.name} (limit "
                    f"{limit.executions}); the next deploy of {instance.agent} lifts it"
                )
                await self.db_lasting(self.registry.set_status, instance.id, "suspended", reason)
                await self._log(instance.id, reason)
                return True
        # Counts only grow by executions; far from every limit, this worker may run a
        # share of the headroom before counting again. The shares add up to at most
        # the headroom while fewer than RATE_CHECK_SHARES workers run one instance.
        headroom = min(lim.executions - n for lim, n in zip(limits, counts, strict=True))
        self._rate_credit[instance.id] = headroom // RATE_CHECK_SHARES
        return False

    async def _after(self, task: ClaimedTask, instance: Instance) -> None:
        if (
            task.trigger == "lifecycle"
            and task.method == "deactivate"
            and instance.status == UNINSTALLING
        ):
            await self.db_lasting(self.registry.remove, instance.id)
            await self._log(instance.id, "uninstalled: state, tasks and callbacks removed")

    async def _log(self, instance: str, line: str) -> None:
        log.warning("%s: %s", instance, line)
        await self.db_lasting(self.history.log, instance, "warning", line, now=self.now())
