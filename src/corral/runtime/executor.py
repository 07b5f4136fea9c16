"""Run one claimed task: resolve its method by name, check limits, execute, report.

The worker claims tasks and hands each to ``Executor.run``, which executes it in
the sandbox and returns a ``Settlement``: its record and what becomes of its task
(removed, retried, dead-lettered; and after an uninstall's ``deactivate``, the
instance removed). The worker commits settlements (``Worker.execute``), so a task
is only ever gone from the queue in the commit that puts what happened to it in
the history. What ends a task without an execution (a method that does not
exist, a rate limit reached) the executor writes itself. It never calls the
worker: the one way back is ``hand_off``, which the worker gives to a run.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from corral import codec
from corral.db.tasks import ACTIVITY, Settling
from corral.errors import DatabaseUnavailable
from corral.plot.service import EVENT_METHOD, NO_CAUSE, Cause
from corral.runtime.declared import Declared, declared
from corral.runtime.history import platform_line, record_rows
from corral.runtime.metrics import Fate
from corral.runtime.outage import Outage
from corral.runtime.records import ExecutionRecord
from corral.runtime.registry import ACTIVE, SUSPENDED, UNINSTALLING, Instance, Version
from corral.runtime.services import Services
from corral.runtime.tools import InstanceTools
from corral.runtime.webhooks import delivery_of
from corral.sandbox.limits import ExecutionResult, Limits, Outcome
from corral.sandbox.pool import SandboxPool
from corral.sandbox.process import Delivery
from corral.state import Store
from corral.state.sql import SqlBackend
from corral.tasks.queue import ClaimedTask

log = logging.getLogger("corral.executor")

_P = ParamSpec("_P")
_T = TypeVar("_T")

LIFECYCLE_HOOKS = ("activate", "upgrade", "deactivate")
RATE_CHECK_SHARES = 16


@dataclass(frozen=True)
class Claim:
    """A leased task with the instance and version it runs against, read as it was claimed."""

    task: ClaimedTask
    instance: Instance
    version: Version


@dataclass
class Settlement:
    """What an execution leaves to be committed: its record and its task's fate."""

    task: ClaimedTask
    record: ExecutionRecord
    version: int
    #: The execution was the ``deactivate`` of an instance being uninstalled: the
    #: instance's state, tasks and callbacks go in the same commit.
    removes_instance: bool = False
    #: What committing it does to its task (``settling`` decides; metrics count it).
    fate: Fate = "finished"
    #: Done once the settlement is committed (``Worker.execute``).
    committed: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


#: Who starts a task an execution enqueues, due now, without a claim: given the
#: instance, method, arguments and now, True if it took the task (``Worker.hand_off``).
HandOff = Callable[[str, str, bytes, int], bool]


class Executor:
    def __init__(
        self,
        services: Services,
        pool: SandboxPool,
        *,
        on_enqueue: Callable[[], None] | None = None,
    ) -> None:
        self.config = services.config
        self.database = database = services.database
        self.pool = pool
        self.clock = services.clock
        #: Shared by every execution: one connection pool, one rate bucket per instance.
        self.fetcher = services.fetcher
        self.queue = services.queue
        self.callbacks = services.callbacks
        self.registry = services.registry
        self.history = services.history
        self.webhooks = services.webhooks
        self.plot = services.plot
        self.metrics = services.metrics
        # Executions' store writes commit without waiting for the disk, as the
        # worker's own do (see ``db``).
        self._backend = SqlBackend(database, deferred=True)
        self._on_enqueue = on_enqueue
        #: Executions each instance may start here before its rate windows are counted again.
        self._rate_credit: dict[str, int] = {}
        self._declared: dict[tuple[str, int], Declared] = {}
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

    def leased(self, claimed: list[tuple[ClaimedTask, tuple[Any, ...]]], now: int) -> list[Claim]:
        """Claims of the tasks a lease took (a claim, a settlement's claim, a hand-off),
        each with its instance and version, read with the lease; a longer lease where
        the version needs one. The one way a leased task becomes something to run.

        The rare lease extensions are statements of their own, after the lease's
        commit: a crash between leaves the default lease, as a crash after would.
        """
        found = dict(self.registry.for_execution_row(row) for _, row in claimed)
        for task, _ in claimed:
            self._extend_lease(task, found[task.instance][1], now)
        return [Claim(task, *found[task.instance]) for task, _ in claimed]

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

    async def run(self, claim: Claim, *, hand_off: HandOff | None = None) -> Settlement | None:
        """Execute the task; what the worker is to commit of it, or None when it did not
        run (its task is settled already, and why is logged).

        ``hand_off``: where a task the execution enqueues, due now, may go at once.
        """
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
        # Activity events are not the instance's doing: its rate limits do not hold them
        # back (SPEC §1.4), nor count them (``History.counts_since``).
        if (
            task.trigger != ACTIVITY
            and instance.status == ACTIVE
            and await self._over_rate(instance)
        ):
            await self.db_lasting(self.queue.release, task, run_at=self.now())
            return None
        args = codec.decode(task.args)
        cause = NO_CAUSE
        if task.trigger == ACTIVITY:
            args, cause = Cause.of_event(args)
        delivery_id = delivery_of(task)
        delivery: Delivery | None = None
        if delivery_id is not None:
            loaded = await self.db_lasting(self.webhooks.delivery, delivery_id)
            if loaded is None:
                await self._dead(
                    task,
                    f"its webhook delivery {delivery_id} is gone (deliveries are kept "
                    f"{self.config.retention.deliveries_days} days), so {task.method} has "
                    "no request to run with",
                )
                return None
            request, extra = loaded
            args = [request.request_wire(), *extra]
            delivery = "body" if task.trigger == "tick" else "request"
        settled: list[Settlement] = []

        def overran() -> None:
            # The process went on computing after its result, which the pool has just
            # amended. A settlement not yet built will carry it; one built is corrected.
            if settled:
                amendment = asyncio.create_task(self._amend(settled[0]))
                self._amendments.add(amendment)
                amendment.add_done_callback(self._amendments.discard)

        result, started = await self._execute(
            instance,
            version,
            rules,
            task.method,
            args,
            rules.limits,
            hand_off=hand_off,
            on_overrun=overran,
            delivery=delivery,
            cause=cause,
        )
        record = ExecutionRecord(
            instance.id,
            task.method,
            task.trigger,  # type: ignore[arg-type]
            result,
            started,
            delivery_id=delivery_id,
        )
        settled.append(Settlement(task, record, version.number, _removes_instance(task, instance)))
        return settled[0]

    async def run_inline(
        self,
        instance: Instance,
        version: Version,
        method: str,
        args: list[Any],
        *,
        delivery_id: str,
        deadline_s: float,
        delivery: Delivery = "request",
    ) -> ExecutionRecord | None:
        """Run a sync webhook's handler now, in the request, under the version's limits
        with its timeout cut to ``deadline_s``; its record, which the caller writes with
        the delivery's answer (``Webhooks.answer``), or None when the instance's rate
        limits suspend it instead (nothing ran).

        The rules are ``run``'s. A version that cannot run, or lacks the method, gives a
        failed record saying why (there is no task to dead-letter): the sender gets the
        generic failure, the instance's log the reason.
        """
        try:
            rules = self._rules(version)
        except ValueError as exc:
            reason = f"{version.label} cannot run: {exc}; deploy a version that fixes it"
            return self._refused(instance, method, delivery_id, "AgentCodeError", reason)
        if method not in rules.methods:
            reason = (
                f"{version.label} has no method {method!r} (its methods: "
                f"{', '.join(sorted(rules.methods)) or 'none'}); deploy a version that has it"
            )
            return self._refused(instance, method, delivery_id, "UnknownMethod", reason)
        if instance.status == ACTIVE and await self._over_rate(instance):
            return None
        limits = replace(rules.limits, timeout_s=min(rules.limits.timeout_s, deadline_s))
        result, started = await self._execute(
            instance, version, rules, method, args, limits, delivery=delivery
        )
        return ExecutionRecord(
            instance.id, method, "webhook", result, started, delivery_id=delivery_id
        )

    def _refused(
        self, instance: Instance, method: str, delivery_id: str, kind: str, reason: str
    ) -> ExecutionRecord:
        """The record of a sync delivery whose method could not be run at all."""
        log.warning("%s: %s", instance.id, reason)
        result = ExecutionResult(
            Outcome.ERROR, error={"type": kind, "message": reason, "traceback": ""}
        )
        started = datetime.fromtimestamp(self.clock(), UTC)
        return ExecutionRecord(
            instance.id, method, "webhook", result, started, delivery_id=delivery_id
        )

    async def _execute(
        self,
        instance: Instance,
        version: Version,
        rules: Declared,
        method: str,
        args: list[Any],
        limits: Limits,
        *,
        hand_off: HandOff | None = None,
        on_overrun: Callable[[], None] | None = None,
        delivery: Delivery | None = None,
        cause: Cause = NO_CAUSE,
    ) -> tuple[ExecutionResult, datetime]:
        """One execution in the instance's sandbox with its tools bound; its result and
        when it started (by the clock rate limits use). ``cause``: the activity event it
        runs, if any, which the events of its own changes count on from."""
        tools = InstanceTools(
            Store(self._backend, instance.id, clock=self.clock, quotas=self.config.quotas),
            self.queue,
            self.callbacks,
            self.webhooks,
            self.fetcher.bind(instance.id, rules.network, time_left_s=limits.timeout_s),
            self.plot.bound(instance.id, instance.agent, instance.priority, cause, self.clock),
            instance=instance.id,
            class_name=rules.class_name,
            methods=rules.methods,
            clock=self.clock,
            quotas=self.config.quotas,
            on_enqueue=self._on_enqueue,
            hand_off=hand_off,
        )
        started = datetime.fromtimestamp(self.clock(), UTC)
        result = await self.pool.execute(
            instance.id,
            f"{version.agent}@{version.number}",
            version.code,
            method,
            args,
            limits,
            tools,
            on_overrun=on_overrun,
            filename=f"<{version.label}>",  # what the agent's tracebacks call its code
            delivery=delivery,
        )
        return result, started

    def settling(self, batch: Sequence[Settlement], now: int) -> Settling:
        """What committing ``batch`` writes: each record, and its task's removal, retry
        or dead letter (an instance's removal after its uninstall's ``deactivate``)."""
        executions, lines = record_rows([(s.record, s.version, s.task.id) for s in batch])
        settling = Settling(executions, lines)
        for settlement in batch:
            task, result = settlement.task, settlement.record.result
            if result.outcome is Outcome.OK:
                settling.finished.append(task.id)
            else:
                assert result.error is not None
                error = result.failure_line or result.outcome.value
                retry_at = self.queue.retry_at(task, now=now)
                if retry_at is not None:
                    settling.retried.append((task.id, retry_at, error))
                    settlement.fate = "retried"
                else:
                    settling.dead.append((task.id, error))
                    settlement.fate = "dead"
                    line = (
                        f"task {task.id} ({task.method}) dead-lettered after {task.attempts} "
                        f"attempt(s): {error}"
                    )
                    log.warning("%s: %s", task.instance, line)
                    settling.lines.append(platform_line(task.instance, "warning", line, now=now))
            if settlement.removes_instance:
                settling.removed.append(task.instance)
                settling.lines.append(platform_line(task.instance, "warning", _REMOVED, now=now))
                log.warning("%s: %s", task.instance, _REMOVED)
        return settling

    async def _amend(self, settlement: Settlement) -> None:
        """Correct a record written before its process was found still computing."""
        try:
            await settlement.committed
            await self.db_lasting(self.history.amend, settlement.record)
        except Exception as exc:  # the record stays as first written; say so
            log.warning("could not amend execution %s: %s", settlement.record.id, exc)

    async def _unresolved(
        self, task: ClaimedTask, instance: Instance, version: Version, methods: frozenset[str]
    ) -> None:
        if (task.trigger == "lifecycle" and task.method in LIFECYCLE_HOOKS) or (
            task.trigger == ACTIVITY and task.method == EVENT_METHOD
        ):
            # A version deployed since the event was queued may no longer listen.
            # An agent need not define every hook: the task is done, as if it ran.
            await self.db_lasting(self._skip_hook, task, _removes_instance(task, instance))
            return
        await self._dead(
            task,
            f"{version.label} has no method {task.method!r} (its methods: "
            f"{', '.join(sorted(methods)) or 'none'}); deploy a version that has "
            f"it, then: corral tasks retry {task.id}",
        )

    async def _dead(self, task: ClaimedTask, reason: str) -> None:
        await self.db_lasting(self.queue.dead_letter, task.id, reason)
        self.metrics.dead_letters.inc()
        await self._log(task.instance, f"task {task.id} dead-lettered: {reason}")

    async def _over_rate(self, instance: Instance) -> bool:
        credit = self._rate_credit.get(instance.id, 0)
        if credit > 0:
            self._rate_credit[instance.id] = credit - 1
            return False
        now = self.now()
        limits = self.config.rate_limits.windows
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
                await self.db_lasting(self.registry.set_status, instance.id, SUSPENDED, reason)
                self.metrics.suspensions.inc()
                await self._log(instance.id, reason)
                return True
        # Counts only grow by executions; far from every limit, this worker may run a
        # share of the headroom before counting again. The shares add up to at most
        # the headroom while fewer than RATE_CHECK_SHARES workers run one instance.
        headroom = min(lim.executions - n for lim, n in zip(limits, counts, strict=True))
        self._rate_credit[instance.id] = headroom // RATE_CHECK_SHARES
        return False

    def _skip_hook(self, task: ClaimedTask, removes_instance: bool) -> None:
        with self.database.transaction(write=True):
            self.queue.finish([task])
            if removes_instance:
                self.registry.remove(task.instance)
                self.history.log(task.instance, "warning", _REMOVED, now=self.now())
        if removes_instance:
            log.warning("%s: %s", task.instance, _REMOVED)

    async def _log(self, instance: str, line: str) -> None:
        log.warning("%s: %s", instance, line)
        await self.db_lasting(self.history.log, instance, "warning", line, now=self.now())


_REMOVED = "uninstalled: state, tasks and callbacks removed"


def _removes_instance(task: ClaimedTask, instance: Instance) -> bool:
    """Whether settling the task removes its instance: the ``deactivate`` of an uninstall."""
    return (
        task.trigger == "lifecycle"
        and task.method == "deactivate"
        and instance.status == UNINSTALLING
    )
