"""The task table: enqueue, keyed and recurring schedules, claims with leases, retries.

One table holds every event (lifecycle hooks, ``run_task``, schedules, ticks).
A row is ``queued`` until due, ``running`` while a worker holds its lease,
``recurring`` for a schedule that fires copies of itself, or ``dead`` once its
attempts are spent. A finished or cancelled row is deleted: the history lives
in the executions table.

Claims are one statement: ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP
LOCKED) RETURNING`` on PostgreSQL, so workers never wait for each other; on
SQLite the same statement runs inside ``BEGIN IMMEDIATE``, which serialises
claimers, so no row is ever handed out twice. A worker that dies leaves its rows
``running``; once their lease ends another worker puts them back (an attempt
spent), and a worker on the same machine reclaims at once the rows of a process
that no longer exists.

All methods are synchronous; callers on an event loop run them through
``database.call`` (on PostgreSQL, a greenlet whose statements the loop awaits).
"""

from __future__ import annotations

import os
import random
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from corral import codec
from corral.db.raw import Database
from corral.errors import UnknownTask
from corral.quotas import Quotas, tasks_exceeded
from corral.tasks.quota import count_before_insert

QUEUED, RUNNING, RECURRING, DEAD = "queued", "running", "recurring", "dead"
#: An instance's pending tasks, as its quota counts them: queued or scheduled, not running.
_PENDING = "instance = :instance AND state IN ('queued', 'recurring')"
#: The arguments of a task that takes none: an encoded empty list.
NO_ARGS = codec.encode([])
_HOST = socket.gethostname()

_COLUMNS = (
    "id, instance, trigger, method, args, token, key, interval_ms, state, run_at, "
    "attempts, max_attempts, lease_until, leased_by, last_error, created_at"
)
_INSERT = (
    "INSERT INTO tasks (instance, trigger, method, args, token, key, interval_ms, state, "
    "run_at, attempts, max_attempts, created_at) VALUES (:instance, :trigger, :method, "
    ":args, :token, :key, :interval_ms, :state, :run_at, 0, :max_attempts, :now)"
)

# State 'running' from the start: the trigger of migration 0005 wakes no worker for it.
_INSERT_LEASED = (
    "INSERT INTO tasks (instance, trigger, method, args, state, run_at, attempts, "
    "max_attempts, lease_until, leased_by, created_at) VALUES (:instance, :trigger, :method, "
    ":args, 'running', :now, 1, :max_attempts, :lease_until, :worker, :now) RETURNING id, "
    "instance, trigger, method, args, attempts, max_attempts, key"
)


def _runnable(status: str) -> str:
    """Whether a task ``t`` may run, given its instance's ``status`` (an expression):
    only tasks of active instances run, and an instance being uninstalled still runs
    its deactivate hook."""
    return (
        f"CASE {status} WHEN 'active' THEN TRUE WHEN 'uninstalling' THEN "
        "(t.trigger = 'lifecycle' AND t.method = 'deactivate') ELSE FALSE END"
    )


# The instance's status is a scalar subquery, not a join, so that the scan can walk
# the queued index in the claim's order and stop after :limit rows. As a join (or an
# EXISTS, which PostgreSQL turns into one), with the statistics of a table that was
# empty at its last ANALYZE, PostgreSQL joined every due row to its instance and
# sorted them: 7 ms a claim over 5,000 due tasks, and more as the queue grew.
_CLAIMABLE = (
    "SELECT t.id FROM tasks t WHERE t.state = 'queued' AND t.run_at <= :now AND "
    + _runnable("(SELECT i.status FROM instances i WHERE i.id = t.instance)")
    + " ORDER BY t.run_at, t.id LIMIT :limit"
)
_CLAIM = (
    "UPDATE tasks SET state = 'running', attempts = attempts + 1, lease_until = :lease_until, "
    "leased_by = :worker WHERE id IN ({select}) RETURNING id, instance, trigger, method, args, "
    "attempts, max_attempts, key"
)


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


class TaskQueue:
    def __init__(
        self, database: Database, *, max_attempts: int = 3, backoff: Backoff | None = None
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.database = database
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
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
        tasks (lifecycle hooks, ticks, retries) are never refused.
        """
        token = secrets.token_urlsafe(16) if with_token else None
        with self.database.transaction(write=True) as cur:
            self._check_quota(cur, instance, quotas)
            self._insert(cur, instance, trigger, method, args, now, run_at or now, token=token)
        return token

    def _check_quota(self, cur: Any, instance: str, quotas: Quotas | None) -> None:
        """Raise before a new pending task of the instance would exceed its quota."""
        if quotas is None:
            return
        limit = quotas.pending_tasks
        params = {"instance": instance}
        pending = count_before_insert(self.database, cur, "tasks", _PENDING, params, limit)
        if pending >= limit:
            raise tasks_exceeded(quotas, pending)

    def enqueue_leased(
        self, instance: str, method: str, args: bytes, *, now: int, lease_ms: int, joined: str
    ) -> tuple[ClaimedTask, tuple[Any, ...]]:
        """A task due now, inserted already leased to this worker: a hand-off.

        The worker runs it without claiming it, so no other worker can take it and no
        claim is spent on it; if this worker dies, recovery puts it back like any
        lease. ``joined`` is read with it as in ``claim`` (on SQLite: empty).
        """
        params = {
            "instance": instance,
            "trigger": "task",
            "method": method,
            "args": args,
            "max_attempts": self.max_attempts,
            "now": now,
            "lease_until": now + lease_ms,
            "worker": self._worker,
        }
        sql = _INSERT_LEASED
        if joined and self.database.postgres:
            sql = (
                f"WITH c AS ({sql}) SELECT c.*, {joined} FROM c "
                "JOIN instances i ON i.id = c.instance JOIN agents a ON a.name = i.agent"
            )
        row = self.database.fetch_one(sql, params)
        task = ClaimedTask(row[0], row[1], row[2], row[3], bytes(row[4]), row[5], row[6], row[7])
        return task, tuple(row[8:])

    def _insert(
        self,
        cur: Any,
        instance: str,
        trigger: str,
        method: str,
        args: bytes,
        now: int,
        run_at: int,
        *,
        token: str | None = None,
        key: str | None = None,
        interval_ms: int | None = None,
    ) -> None:
        params = {
            "instance": instance,
            "trigger": trigger,
            "method": method,
            "args": args,
            "token": token,
            "key": key,
            "interval_ms": interval_ms,
            "state": RECURRING if interval_ms else QUEUED,
            "run_at": run_at,
            "max_attempts": 1 if interval_ms else self.max_attempts,
            "now": now,
        }
        self.database.execute(cur, _INSERT, params)

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
        with self.database.transaction(write=True) as cur:
            row = self._keyed(cur, instance, key)
            if row is None:
                self._check_quota(cur, instance, quotas)
                self._insert(cur, instance, "task", method, args, now, run_at, key=key)
            elif coalesce:
                self.database.execute(
                    cur,
                    "UPDATE tasks SET run_at = :run_at WHERE id = :id AND run_at > :run_at",
                    {"id": row[0], "run_at": run_at},
                )
            else:
                self.database.execute(
                    cur,
                    "UPDATE tasks SET method = :method, args = :args, run_at = :run_at, "
                    "interval_ms = NULL, state = 'queued', max_attempts = :max WHERE id = :id",
                    {
                        "id": row[0],
                        "method": method,
                        "args": args,
                        "run_at": run_at,
                        "max": self.max_attempts,
                    },
                )

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
        with self.database.transaction(write=True) as cur:
            row = self._keyed(cur, instance, key)
            if row is None:
                self._check_quota(cur, instance, quotas)
            else:
                self.database.execute(cur, "DELETE FROM tasks WHERE id = :id", {"id": row[0]})
            self._insert(
                cur,
                instance,
                trigger,
                method,
                args,
                now,
                first_run_at,
                key=key,
                interval_ms=interval_ms,
            )

    def _keyed(self, cur: Any, instance: str, key: str) -> Any:
        sql = (
            "SELECT id FROM tasks WHERE instance = :instance AND key = :key "
            "AND state IN ('queued', 'recurring')"
        )
        return self.database.execute(cur, sql, {"instance": instance, "key": key}).fetchone()

    # -- removing work ----------------------------------------------------------

    def cancel_token(self, instance: str, token: str) -> None:
        self._delete(
            "instance = :instance AND token = :token AND state = 'queued'", instance, token=token
        )

    def cancel_key(self, instance: str, key: str) -> None:
        self._delete(
            "instance = :instance AND key = :key AND state IN ('queued', 'recurring')",
            instance,
            key=key,
        )

    def cancel_all(self, instance: str) -> None:
        """Every pending one-shot task of the instance (not schedules, not the running)."""
        self._delete("instance = :instance AND state = 'queued' AND key IS NULL", instance)

    def remove_instance(self, instance: str) -> None:
        self._delete("instance = :instance", instance)

    def _delete(self, where: str, instance: str, **params: Any) -> None:
        self.database.write(f"DELETE FROM tasks WHERE {where}", {"instance": instance, **params})

    # -- running work -----------------------------------------------------------

    def fire_recurring(self, now: int, limit: int = 100) -> int:
        """Turn due schedules into one-shot tasks and re-arm them; returns how many.

        The re-arm and the copy are one transaction, and on PostgreSQL the schedule
        rows are locked with SKIP LOCKED: two workers never fire the same tick.
        Missed ticks (everything was down) fire once, not once per missed interval.
        """
        due = "WHERE state = 'recurring' AND run_at <= :now"
        # Asked on every pass of every worker: a read, so no write lock when none is due.
        if self.database.fetch_one(f"SELECT 1 FROM tasks {due} LIMIT 1", {"now": now}) is None:
            return 0
        lock = " FOR UPDATE SKIP LOCKED" if self.database.postgres else ""
        with self.database.transaction(write=True) as cur:
            rows = self.database.execute(
                cur,
                "SELECT id, instance, trigger, method, args, interval_ms, run_at FROM tasks "
                f"{due} ORDER BY run_at LIMIT :limit{lock}",
                {"now": now, "limit": limit},
            ).fetchall()
            for task_id, instance, trigger, method, args, interval_ms, run_at in rows:
                self._insert(cur, instance, trigger, method, bytes(args), now, now)
                missed = (now - run_at) // interval_ms + 1
                self.database.execute(
                    cur,
                    "UPDATE tasks SET run_at = :next WHERE id = :id",
                    {"id": task_id, "next": run_at + missed * interval_ms},
                )
        return len(rows)

    def claim(
        self, limit: int, *, now: int, lease_ms: int, joined: str = ""
    ) -> list[tuple[ClaimedTask, tuple[Any, ...]]]:
        """Up to ``limit`` due tasks, leased to this worker until ``now + lease_ms``.

        Each comes with the values of ``joined``, a select list over its instance
        ``i`` and the instance's agent ``a``, read by the same statement on
        PostgreSQL (a round trip saved); on SQLite the values are empty and the
        caller reads them itself.
        """
        sql, params = self._claim_statement(limit, now=now, lease_ms=lease_ms, joined=joined)
        # Even the scalar subquery left PostgreSQL one way to read every due row: a
        # bitmap scan, then a sort. With the statistics of an empty table it chose
        # that (3 ms a claim on 5,000 due tasks, against 0.1). The worker's calls run
        # where bitmap scans are off, so its claim is one statement, in autocommit
        # or in the caller's transaction; elsewhere they are turned off for it.
        if self.database.postgres and self.database.bitmap_scans():
            with self.database.transaction(write=True) as cur:
                cur.execute("SET LOCAL enable_bitmapscan = off")
                rows = self.database.execute(cur, sql, params).fetchall()
        else:  # the UPDATE ... RETURNING hands back the rows it leased
            rows = self.database.fetch_all(sql, params)
        return self.claimed(rows)

    def claim_statement(
        self, limit: int, *, now: int, lease_ms: int, joined: str
    ) -> tuple[str, dict[str, Any]] | None:
        """``claim``'s statement, for the last of ``Database.write_together``'s (its rows
        go to ``claimed``); None where it cannot be one statement: on SQLite, whose
        caller reads the instances itself, and where bitmap scans are allowed."""
        if not self.database.postgres or self.database.bitmap_scans():
            return None
        return self._claim_statement(limit, now=now, lease_ms=lease_ms, joined=joined)

    def _claim_statement(
        self, limit: int, *, now: int, lease_ms: int, joined: str
    ) -> tuple[str, dict[str, Any]]:
        select = _CLAIMABLE + (" FOR UPDATE OF t SKIP LOCKED" if self.database.postgres else "")
        sql = _CLAIM.format(select=select)
        params = {
            "now": now,
            "limit": limit,
            "lease_until": now + lease_ms,
            "worker": self._worker,
        }
        if self.database.postgres and joined:
            sql = (
                f"WITH c AS ({sql}) SELECT c.*, {joined} FROM c "
                "JOIN instances i ON i.id = c.instance JOIN agents a ON a.name = i.agent"
            )
        return sql, params

    @staticmethod
    def claimed(rows: Sequence[Sequence[Any]]) -> list[tuple[ClaimedTask, tuple[Any, ...]]]:
        """The tasks a claim's rows leased, in the order they were enqueued, each with
        the values of its ``joined``."""
        claimed = [
            (ClaimedTask(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6], r[7]), tuple(r[8:]))
            for r in rows
        ]
        claimed.sort(key=lambda pair: pair[0].id)
        return claimed

    def extend_leases(self, tasks: Sequence[ClaimedTask], *, until: int) -> int:
        """Keep this worker's claims on ``tasks`` until ``until`` (ms): they may run that
        long. Returns how many it still held (recovery may have taken one back)."""
        placeholders = ", ".join(f":id{n}" for n in range(len(tasks)))
        return self.database.write(
            f"UPDATE tasks SET lease_until = :until WHERE id IN ({placeholders}) "
            "AND state = 'running' AND leased_by = :worker",
            {"until": until, "worker": self._worker}
            | {f"id{n}": task.id for n, task in enumerate(tasks)},
        )

    def finish(self, tasks: Sequence[ClaimedTask]) -> None:
        """The tasks ran (whatever their outcome, if not to be retried): forget them."""
        if not tasks:
            return
        # Through a cursor, not write(): no row count asked, so a pipelined
        # PostgreSQL transaction does not wait for the server here.
        with self.database.transaction(write=True) as cur:
            self.database.execute(cur, *self.finish_statement(tasks))

    @staticmethod
    def finish_statement(tasks: Sequence[ClaimedTask]) -> tuple[str, dict[str, Any]]:
        """``finish``'s statement, for ``Database.write_together``."""
        placeholders = ", ".join(f":id{n}" for n in range(len(tasks)))
        return (
            f"DELETE FROM tasks WHERE id IN ({placeholders})",
            {f"id{n}": task.id for n, task in enumerate(tasks)},
        )

    def fail(self, task: ClaimedTask, error: str, *, now: int, retry: bool = True) -> bool:
        """Retry later with backoff, or dead-letter it; True if it will be retried."""
        if retry and task.attempts < task.max_attempts:
            self._by_id(
                "UPDATE tasks SET state = 'queued', run_at = :run_at, lease_until = NULL, "
                "leased_by = NULL, last_error = :error WHERE id = :id",
                task.id,
                run_at=now + self.backoff.delay_ms(task.attempts),
                error=error,
            )
            return True
        self.dead_letter(task.id, error)
        return False

    def dead_letter(self, task_id: int, reason: str) -> None:
        self._by_id(
            "UPDATE tasks SET state = 'dead', key = NULL, token = NULL, lease_until = NULL, "
            "leased_by = NULL, last_error = :error WHERE id = :id",
            task_id,
            error=reason,
        )

    def release(self, task: ClaimedTask, *, run_at: int) -> None:
        """Give the task back without spending an attempt (its instance is suspended)."""
        self._by_id(
            "UPDATE tasks SET state = 'queued', attempts = attempts - 1, run_at = :run_at, "
            "lease_until = NULL, leased_by = NULL WHERE id = :id",
            task.id,
            run_at=run_at,
        )

    def _by_id(self, sql: str, task_id: int, **params: Any) -> None:
        self.database.write(sql, {"id": task_id, **params})

    def recover(self, now: int) -> int:
        """Put back the rows of workers that stopped: lease over, or (same host) pid gone.

        Each spends an attempt; a row out of attempts is dead-lettered instead.
        """
        with self.database.transaction(write=True) as cur:
            rows = self.database.execute(
                cur,
                "SELECT id, leased_by, lease_until, attempts, max_attempts FROM tasks "
                "WHERE state = 'running'",
            ).fetchall()
            lost = [row for row in rows if row[2] < now or _gone(row[1])]
            for task_id, holder, _, attempts, max_attempts in lost:
                error = f"the worker running it ({holder}) stopped before it finished"
                if attempts < max_attempts:
                    sql = (
                        "UPDATE tasks SET state = 'queued', run_at = :run_at, lease_until = NULL, "
                        "leased_by = NULL, last_error = :error WHERE id = :id"
                    )
                    run_at = now + self.backoff.delay_ms(attempts)
                else:
                    sql = (
                        "UPDATE tasks SET state = 'dead', key = NULL, token = NULL, "
                        "lease_until = NULL, leased_by = NULL, last_error = :error WHERE id = :id"
                    )
                    run_at = now
                self.database.execute(cur, sql, {"id": task_id, "run_at": run_at, "error": error})
        return len(lost)

    # -- for operators ----------------------------------------------------------

    def list(self, instance: str | None = None, *, dead: bool = False) -> list[TaskInfo]:
        where = "state = 'dead'" if dead else "state <> 'dead'"
        if instance is not None:
            where += " AND instance = :instance"
        rows = self.database.fetch_all(
            f"SELECT {_COLUMNS} FROM tasks WHERE {where} ORDER BY run_at, id",
            {"instance": instance},
        )
        return [TaskInfo(*_with_bytes_args(row)) for row in rows]

    def retry_dead(self, task_id: int, *, now: int) -> None:
        """Give a dead-lettered task a fresh set of attempts, due now."""
        updated = self.database.write(
            "UPDATE tasks SET state = 'queued', attempts = 0, run_at = :now "
            "WHERE id = :id AND state = 'dead'",
            {"id": task_id, "now": now},
        )
        if not updated:
            raise UnknownTask(f"there is no dead-lettered task {task_id} (see corral tasks --dead)")

    def cancel(self, task_id: int) -> None:
        """Remove a pending, scheduled or dead task; a running one finishes first."""
        deleted = self.database.write(
            "DELETE FROM tasks WHERE id = :id AND state <> 'running'", {"id": task_id}
        )
        if not deleted:
            raise UnknownTask(
                f"there is no pending task {task_id} (it may have run, or be running now)"
            )

    def pending(self, now: int) -> tuple[int, int | None]:
        """(tasks running, earliest run_at of any queued or recurring task)."""
        with self.database.transaction(write=False) as cur:
            running = self.database.execute(
                cur, "SELECT count(*) FROM tasks WHERE state = 'running'"
            ).fetchone()[0]
            # Work of a suspended instance is not pending: no worker may run it.
            next_at = self.database.execute(
                cur,
                "SELECT min(t.run_at) FROM tasks t JOIN instances i ON i.id = t.instance "
                "WHERE t.state IN ('queued', 'recurring') AND " + _runnable("i.status"),
            ).fetchone()[0]
        return int(running), next_at


def _with_bytes_args(row: Any) -> list[Any]:
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
