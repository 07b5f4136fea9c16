"""The task table: enqueue, keyed and recurring schedules, claims with leases, retries.

One table holds every event (lifecycle hooks, ``run_task``, schedules, ticks).
A row is ``queued`` until due, ``running`` while a worker holds its lease,
``recurring`` for a schedule that fires copies of itself, or ``dead`` once its
attempts are spent. A finished or cancelled row is deleted: the history lives
in the executions table.

A claim leases due tasks to one worker and reads, with each, its instance and
the version it runs (``corral.db.tasks`` says how each backend does it, so that
no row is ever handed out twice). A worker that dies leaves its rows
``running``; once their lease ends another worker puts them back (an attempt
spent), and a worker on the same machine reclaims at once the rows of a process
that no longer exists.

All methods are synchronous; callers on an event loop run them through
``database.call`` (on PostgreSQL, a greenlet whose statements the loop awaits).
"""

from __future__ import annotations

import builtins
import os
import random
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from corral import codec
from corral.db.raw import Database
from corral.db.task_lists import NOT_RUNNING, STATES, TaskListDatabase, TaskQuery
from corral.db.tasks import ACTIVITY, QUEUED, RECURRING, Leasing, Settling, task_database
from corral.errors import UnknownTask
from corral.quotas import Quotas, tasks_exceeded

#: The arguments of a task that takes none: an encoded empty list.
NO_ARGS = codec.encode([])
_HOST = socket.gethostname()


def worker_id() -> str:
    """``host:pid``: lets a worker on the same host see that a lease holder is gone."""
    return f"{_HOST}:{os.getpid()}"


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: between attempts of a failed task, and
    between a worker's attempts to reach its database during an outage."""

    base_ms: int = 1000
    cap_ms: int = 300_000
    jitter: float = 0.2

    def delay_ms(self, attempts: int) -> int:
        delay = min(self.cap_ms, self.base_ms * 2 ** max(0, attempts - 1))
        return int(delay * (1 + random.uniform(-self.jitter, self.jitter)))


@dataclass(frozen=True)
class ClaimedTask:
    id: int
    instance: str
    trigger: str
    method: str
    args: bytes
    attempts: int
    max_attempts: int
    key: str | None
    #: When it was due (ms): its wait for a worker is from then to its start.
    run_at: int | None = None


@dataclass(frozen=True)
class TaskInfo:
    """A task as listings show it."""

    id: int
    instance: str
    trigger: str
    method: str
    args: bytes
    token: str | None
    key: str | None
    interval_ms: int | None
    state: str
    run_at: int
    attempts: int
    max_attempts: int
    lease_until: int | None
    leased_by: str | None
    last_error: str | None
    created_at: int

    def status(self, now: int) -> str:
        """Where the task is, in the operator's words (``STATES``): ``ready`` (queued and
        due), ``scheduled`` (queued for later, or recurring), ``running`` or ``dead``."""
        if self.state == QUEUED:
            return "ready" if self.run_at <= now else "scheduled"
        return "scheduled" if self.state == RECURRING else self.state


#: What a bulk action does: ``retry`` dead letters, ``cancel`` what is not running.
BULK_ACTIONS = ("retry", "cancel")


class TaskQueue:
    """The queue's rules (tokens, quotas, attempts and backoff, recovery) over the
    named operations of ``corral.db.tasks``, which own the SQL."""

    def __init__(
        self, database: Database, *, max_attempts: int = 3, backoff: Backoff | None = None
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.database = database
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self._db = task_database(database)
        self._lists = TaskListDatabase(database)
        self._worker = worker_id()

    # -- adding work ------------------------------------------------------------

    def enqueue(
        self,
        instance: str,
        method: str,
        args: bytes,
        *,
        now: int,
        run_at: int | None = None,
        trigger: str = "task",
        with_token: bool = False,
        quotas: Quotas | None = None,
    ) -> str | None:
        """A one-shot task; returns a cancel token when asked for one.

        With ``quotas`` (an agent's ``run_task``), refused with ``QuotaExceeded`` when
        the instance already has ``quotas.pending_tasks`` pending. The platform's own
        tasks (lifecycle hooks, ticks, retries) are never refused. Inside the caller's
        open transaction, it is part of that transaction's commit.
        """
        token = secrets.token_urlsafe(16) if with_token else None
        with self.database.transaction(write=True):
            self._check_quota(instance, quotas)
            self._db.insert(
                instance,
                trigger,
                method,
                args,
                now=now,
                run_at=run_at or now,
                max_attempts=self.max_attempts,
                token=token,
            )
        return token

    def enqueue_events(self, method: str, events: Sequence[tuple[str, bytes]], *, now: int) -> None:
        """Activity events, each (instance, args), due now: the platform's, never refused
        by a quota. Inside the caller's open transaction, part of its commit."""
        self._db.insert_many(ACTIVITY, method, events, now=now, max_attempts=self.max_attempts)

    def _check_quota(self, instance: str, quotas: Quotas | None) -> None:
        """Raise before a new pending task of the instance would exceed its quota."""
        if quotas is None:
            return
        pending = self._db.count_pending(instance, quotas.pending_tasks)
        if pending >= quotas.pending_tasks:
            raise tasks_exceeded(quotas, pending)

    def hand_off(
        self, instance: str, method: str, args: bytes, *, now: int, lease_ms: int
    ) -> tuple[ClaimedTask, tuple[Any, ...]]:
        """A task due now, inserted already leased to this worker, and read as ``claim``
        reads its tasks: the special case of a claim for a task that is known to be
        due, because it is being enqueued now.

        The worker runs it without claiming it, so no other worker can take it and no
        claim is spent on it; if this worker dies, recovery puts it back like any
        lease.
        """
        row = self._db.insert_leased(
            instance,
            method,
            args,
            max_attempts=self.max_attempts,
            leasing=Leasing(1, now, now + lease_ms, self._worker),
        )
        (leased,) = self.claimed([row])
        return leased

    def schedule(
        self,
        instance: str,
        key: str,
        method: str,
        args: bytes,
        *,
        run_at: int,
        now: int,
        coalesce: bool = False,
        quotas: Quotas | None = None,
    ) -> None:
        """One pending task per key: a new schedule replaces it; ``coalesce`` keeps it
        and only ever moves its time earlier. ``quotas`` as for ``enqueue``: only a
        new key counts."""
        with self.database.transaction(write=True):
            task = self._db.keyed(instance, key)
            if task is None:
                self._check_quota(instance, quotas)
                self._db.insert(
                    instance,
                    "task",
                    method,
                    args,
                    now=now,
                    run_at=run_at,
                    max_attempts=self.max_attempts,
                    key=key,
                )
            elif coalesce:
                self._db.move_earlier(task, run_at)
            else:
                self._db.replace(task, method, args, run_at=run_at, max_attempts=self.max_attempts)

    def schedule_recurring(
        self,
        instance: str,
        key: str,
        method: str,
        args: bytes,
        *,
        interval_ms: int,
        first_run_at: int,
        now: int,
        trigger: str = "task",
        quotas: Quotas | None = None,
    ) -> None:
        """A schedule the platform re-arms every ``interval_ms``; the same key replaces it.
        ``quotas`` as for ``enqueue``: only a new key counts."""
        if interval_ms < 1:
            raise ValueError(f"interval_ms must be a positive number, got {interval_ms}")
        with self.database.transaction(write=True):
            task = self._db.keyed(instance, key)
            if task is None:
                self._check_quota(instance, quotas)
            else:
                self._db.delete(task)
            # A schedule is never retried: it fires again at its next interval.
            self._db.insert(
                instance,
                trigger,
                method,
                args,
                now=now,
                run_at=first_run_at,
                max_attempts=1,
                key=key,
                interval_ms=interval_ms,
            )

    # -- removing work ----------------------------------------------------------

    def cancel_token(self, instance: str, token: str) -> None:
        self._db.cancel_token(instance, token)

    def cancel_key(self, instance: str, key: str) -> None:
        self._db.cancel_key(instance, key)

    def cancel_all(self, instance: str) -> None:
        """Every pending one-shot task of the instance (not schedules, not the running)."""
        self._db.cancel_all(instance)

    # -- running work -----------------------------------------------------------

    def fire_recurring(self, now: int, limit: int = 100) -> int:
        """Turn due schedules into one-shot tasks and re-arm them; returns how many.

        The re-arm and the copy are one transaction, and the schedules are locked
        for it (``TaskDatabase.due_schedules``): two workers never fire the same
        tick. Missed ticks (everything was down) fire once, not once per missed
        interval.
        """
        if not self._db.any_schedule_due(now):
            return 0
        with self.database.transaction(write=True):
            rows = self._db.due_schedules(now, limit)
            for task_id, instance, trigger, method, args, interval_ms, run_at in rows:
                self._db.insert(
                    instance,
                    trigger,
                    method,
                    bytes(args),
                    now=now,
                    run_at=now,
                    max_attempts=self.max_attempts,
                )
                missed = (now - run_at) // interval_ms + 1
                self._db.rearm(task_id, run_at + missed * interval_ms)
        return len(rows)

    def claim(
        self, limit: int, *, now: int, lease_ms: int
    ) -> list[tuple[ClaimedTask, tuple[Any, ...]]]:
        """Up to ``limit`` due tasks of runnable instances, leased to this worker until
        ``now + lease_ms``, in the order they were enqueued.

        Each comes with the values of ``corral.db.registry.EXECUTION_COLUMNS`` (its
        instance, and the version that instance runs), read with the claim.
        """
        return self.claimed(self._db.claim(self._leasing(limit, now, lease_ms)))

    def settle(
        self, settling: Settling, *, claim: int, now: int, lease_ms: int
    ) -> list[tuple[ClaimedTask, tuple[Any, ...]]]:
        """Write ``settling`` (records, tasks finished, retried or dead-lettered) and
        claim up to ``claim`` tasks as ``claim`` does: one commit."""
        leasing = self._leasing(claim, now, lease_ms) if claim > 0 else None
        return self.claimed(self._db.settle(settling, leasing))

    def _leasing(self, limit: int, now: int, lease_ms: int) -> Leasing:
        return Leasing(limit, now, now + lease_ms, self._worker)

    @staticmethod
    def claimed(rows: Sequence[Sequence[Any]]) -> list[tuple[ClaimedTask, tuple[Any, ...]]]:
        """The tasks leased, in the order they were enqueued, each with the rest of its
        row (its ``EXECUTION_COLUMNS``)."""
        claimed = [
            (
                ClaimedTask(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6], r[7], r[8]),
                tuple(r[9:]),
            )
            for r in rows
        ]
        claimed.sort(key=lambda pair: pair[0].id)
        return claimed

    def extend_leases(self, tasks: Sequence[ClaimedTask], *, until: int) -> int:
        """Keep this worker's claims on ``tasks`` until ``until`` (ms): they may run that
        long. Returns how many it still held (recovery may have taken one back)."""
        return self._db.extend_leases([task.id for task in tasks], until=until, worker=self._worker)

    def finish(self, tasks: Sequence[ClaimedTask]) -> None:
        """The tasks ran (whatever their outcome, if not to be retried): forget them."""
        self._db.finish([task.id for task in tasks])

    def retry_at(self, task: ClaimedTask, *, now: int) -> int | None:
        """When a task that failed runs again, after backoff; None once its attempts are
        spent (it is to be dead-lettered)."""
        if task.attempts < task.max_attempts:
            return now + self.backoff.delay_ms(task.attempts)
        return None

    def dead_letter(self, task_id: int, reason: str) -> None:
        self._db.dead_letter(task_id, reason)

    def release(self, task: ClaimedTask, *, run_at: int) -> None:
        """Give the task back without spending an attempt (its instance is suspended)."""
        self._db.release(task.id, run_at=run_at)

    def recover(self, now: int) -> int:
        """Put back the rows of workers that stopped: lease over, or (same host) pid gone.

        Each spends an attempt; a row out of attempts is dead-lettered instead.
        """
        return sum(self.recover_lost(now))

    def recover_lost(self, now: int) -> tuple[int, int]:
        """``recover``, saying how many rows were put back and how many dead-lettered."""
        retried = dead = 0
        with self.database.transaction(write=True):
            lost = [row for row in self._db.leases() if row[2] < now or _gone(row[1])]
            for task_id, holder, _, attempts, max_attempts in lost:
                error = f"the worker running it ({holder}) stopped before it finished"
                if attempts < max_attempts:
                    run_at = now + self.backoff.delay_ms(attempts)
                    self._db.retry(task_id, run_at=run_at, error=error)
                    retried += 1
                else:
                    self._db.dead_letter(task_id, error)
                    dead += 1
        return retried, dead

    async def listen(self, wake: Callable[[], None], *, backoff: Backoff) -> None:
        """Call ``wake`` whenever another process enqueues a task, until cancelled, where
        the database can say so (PostgreSQL); elsewhere return at once: such work is
        found by polling. Attempts to listen again after a failure are ``backoff`` apart."""
        await self._db.listen(wake, delay_ms=backoff.delay_ms)

    # -- for operators ----------------------------------------------------------

    def list(self, instance: str | None = None, *, dead: bool = False) -> list[TaskInfo]:
        return [TaskInfo(*row) for row in self._db.tasks(instance, dead=dead)]

    def retry_dead(self, task_id: int, *, now: int) -> None:
        """Give a dead-lettered task a fresh set of attempts, due now."""
        if not self._db.retry_dead(task_id, now=now):
            raise UnknownTask(f"there is no dead-lettered task {task_id} (see corral tasks --dead)")

    def cancel(self, task_id: int) -> None:
        """Remove a pending, scheduled or dead task; a running one finishes first."""
        if not self._db.cancel(task_id):
            raise UnknownTask(
                f"there is no pending task {task_id} (it may have run, or be running now)"
            )

    def pending(self, now: int) -> tuple[int, int | None]:
        """(tasks running, earliest run_at of any queued or recurring task a worker may run)."""
        return self._db.pending(now)

    def page(
        self, query: TaskQuery, *, now: int, before: int | None = None, limit: int
    ) -> builtins.list[TaskInfo]:
        """The tasks ``query`` selects, newest first; ``before``: the id of the previous
        page's last task."""
        _check_state(query)
        rows = self._lists.page(query, now=now, before=before, limit=limit)
        return [TaskInfo(*_with_bytes(row)) for row in rows]

    def task(self, task_id: int) -> TaskInfo:
        row = self._lists.task(task_id)
        if row is None:
            raise UnknownTask(f"there is no task {task_id} (it may have run, or been cancelled)")
        return TaskInfo(*_with_bytes(row))

    def bulk(self, action: str, query: TaskQuery, *, now: int, dry_run: bool = False) -> int:
        """``retry`` every dead letter ``query`` selects, or ``cancel`` every task it
        selects that is not running; how many (with ``dry_run``, how many it would,
        changing nothing). A filter is required: an empty one is a ``ValueError``, as is
        one that can select nothing the action applies to."""
        _check_state(query)
        if action not in BULK_ACTIONS:
            raise ValueError(f"a bulk action is 'retry' or 'cancel', got {action!r:.40}")
        if query.empty:
            raise ValueError(
                "a bulk action needs a filter (instance, state, method or trigger): "
                "it will not act on every task by default"
            )
        if action == "retry" and query.state not in (None, "dead"):
            raise ValueError(f"only dead-lettered tasks are retried, not {query.state} ones")
        if action == "cancel" and query.state == "running":
            raise ValueError("a running task cannot be cancelled: it finishes first")
        only = STATES["dead"] if action == "retry" else NOT_RUNNING
        if dry_run:
            return self._lists.count(query, now=now, only=only)
        if action == "retry":
            return self._lists.retry(query, now=now)
        return self._lists.cancel(query, now=now)


def _check_state(query: TaskQuery) -> None:
    if query.state is not None and query.state not in STATES:
        raise ValueError(f"a task's state is one of {', '.join(STATES)}, got {query.state!r:.40}")


def _with_bytes(row: Sequence[Any]) -> list[Any]:
    values = list(row)
    values[4] = bytes(values[4])  # PostgreSQL hands back a memoryview
    return values


def _gone(holder: str | None) -> bool:
    """Whether the lease holder was a process on this host that no longer exists."""
    if not holder:
        return True
    host, _, pid = holder.rpartition(":")
    if host != _HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
