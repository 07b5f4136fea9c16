"""The task queue's statements: every operation on the tasks table, by name.

``TaskDatabase`` is the interface ``corral.tasks.queue.TaskQueue`` and the worker
use, and never asks which backend it runs on. The SQL both backends share is
written here once; ``corral.db.sqlite.tasks`` and ``corral.db.postgres.tasks``
write the operations that differ:

- ``claim``: lease due tasks and read, with each, its instance and the version it
  runs (``EXECUTION_COLUMNS``). PostgreSQL: one statement, ``FOR UPDATE SKIP
  LOCKED``, the instances joined to what it leased. SQLite: the same update and a
  read of the instances, in one ``BEGIN IMMEDIATE`` transaction, which serialises
  claimers.
- ``insert_leased``: a hand-off's insert, already leased, read the same way.
- ``settle``: the end of executions (records, the tasks' fates) and, in the same
  commit, the claim of tasks to take their places. PostgreSQL sends the common
  case (every execution ok, few rows) as one statement.
- ``due_schedules``: PostgreSQL locks them ``SKIP LOCKED``, so two workers never
  fire the same tick; SQLite's write transaction already serialises them.
- ``listen``: PostgreSQL's LISTEN wakes a worker for work another process
  enqueued; a SQLite file has no such channel (workers poll).

Every operation joins the caller's open transaction (``Database.transaction``),
so callers make several of them one commit without knowing the SQL.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.db.history import HistoryDatabase, Row
from corral.db.quota import count_before_insert
from corral.db.raw import Database
from corral.db.registry import ACTIVE, UNINSTALLING, RegistryDatabase

QUEUED, RUNNING, RECURRING, DEAD = "queued", "running", "recurring", "dead"

#: What a lease reads of each task, before its ``EXECUTION_COLUMNS``.
LEASED_COLUMNS = "id, instance, trigger, method, args, attempts, max_attempts, key, run_at"
#: Every column, as listings show a task.
TASK_COLUMNS = (
    "id, instance, trigger, method, args, token, key, interval_ms, state, run_at, "
    "attempts, max_attempts, lease_until, leased_by, last_error, created_at"
)

_INSERT = (
    "INSERT INTO tasks (instance, trigger, method, args, token, key, interval_ms, state, "
    "run_at, attempts, max_attempts, created_at) VALUES (:instance, :trigger, :method, "
    ":args, :token, :key, :interval_ms, :state, :run_at, 0, :max_attempts, :now)"
)
# State 'running' from the start: the trigger of migration 0005 wakes no worker for it.
INSERT_LEASED = (
    "INSERT INTO tasks (instance, trigger, method, args, state, run_at, attempts, "
    f"max_attempts, lease_until, leased_by, created_at) VALUES (:instance, 'task', :method, "
    f":args, '{RUNNING}', :now, 1, :max_attempts, :lease_until, :worker, :now) "
    f"RETURNING {LEASED_COLUMNS}"
)
#: An instance's pending tasks: queued or scheduled, not running.
_PENDING = f"instance = :instance AND state IN ('{QUEUED}', '{RECURRING}')"
#: The trigger of activity events: the platform queues them for an instance that did
#: not ask for them, so they are not held to its quota of pending tasks, and run a
#: few at a time (``ACTIVITY_EVENTS_AT_ONCE``).
ACTIVITY = "activity"
#: What the pending-tasks quota counts: what the instance queued itself, and the
#: platform's own hooks and ticks, but not activity events.
_QUOTA_PENDING = f"{_PENDING} AND trigger <> '{ACTIVITY}'"
#: An instance's activity events that run at once, over every worker. A batch of a
#: thousand activities queues a thousand events for each listener; a few at a time,
#: they leave the claims (and the warm processes, ``sandbox.pool.PER_INSTANCE``) to
#: other instances' work between them. Checked as a claim starts: one claim may
#: add up to its own size to the ones already running.
ACTIVITY_EVENTS_AT_ONCE = 4

# Any fixed number shared by every Corral process, "keyd": "the turn of a task key".
_KEY_LOCK_CLASS = 0x6B657964

#: A running task put back to wait (a retry, a release, a recovery) keeps its key,
#: unless another task of its instance took the key while it ran (its run scheduled
#: its successor under it, say; a key is free once its task runs): then it waits
#: without one, and the key stays the newer task's. One key holds one pending task.
_REQUEUED_KEY = (
    "key = CASE WHEN NOT EXISTS (SELECT 1 FROM tasks o WHERE o.instance = tasks.instance "
    f"AND o.key = tasks.key AND o.state IN ('{QUEUED}', '{RECURRING}')) THEN key END"
)


def runnable(status: str) -> str:
    """Whether a task ``t`` may run, given its instance's ``status`` (an expression):
    only tasks of active instances run, and an instance being uninstalled still runs
    its deactivate hook."""
    return (
        f"CASE {status} WHEN '{ACTIVE}' THEN TRUE WHEN '{UNINSTALLING}' THEN "
        "(t.trigger = 'lifecycle' AND t.method = 'deactivate') ELSE FALSE END"
    )


# The instance's status is a scalar subquery, not a join, so that the scan can walk
# the queued index in the claim's order and stop after :limit rows. As a join (or an
# EXISTS, which PostgreSQL turns into one), with the statistics of a table that was
# empty at its last ANALYZE, PostgreSQL joined every due row to its instance and
# sorted them: 7 ms a claim over 5,000 due tasks, and more as the queue grew.
CLAIMABLE = (
    f"SELECT t.id FROM tasks t WHERE t.state = '{QUEUED}' AND t.run_at <= :now AND "
    + runnable("(SELECT i.status FROM instances i WHERE i.id = t.instance)")
    + f" AND (t.trigger <> '{ACTIVITY}' OR (SELECT count(*) FROM tasks r WHERE "
    f"r.instance = t.instance AND r.state = '{RUNNING}' AND r.trigger = '{ACTIVITY}') "
    f"< {ACTIVITY_EVENTS_AT_ONCE})"
    " ORDER BY t.run_at, t.id LIMIT :limit"
)
#: The claim's update, over the ids ``{claimable}`` selects.
CLAIM = (
    f"UPDATE tasks SET state = '{RUNNING}', attempts = attempts + 1, "
    "lease_until = :lease_until, leased_by = :worker WHERE id IN ({claimable}) "
    f"RETURNING {LEASED_COLUMNS}"
)


@dataclass(frozen=True)
class Leasing:
    """What a claim asks for: up to ``limit`` tasks due at ``now``, leased to
    ``worker`` until ``until`` (ms)."""

    limit: int
    now: int
    until: int
    worker: str

    def params(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "limit": self.limit,
            "lease_until": self.until,
            "worker": self.worker,
        }

    def hand_off_params(
        self, instance: str, method: str, args: bytes, max_attempts: int
    ) -> dict[str, Any]:
        """``INSERT_LEASED``'s parameters: one task, due now, leased as a claim is."""
        return {
            "instance": instance,
            "method": method,
            "args": args,
            "max_attempts": max_attempts,
            "now": self.now,
            "lease_until": self.until,
            "worker": self.worker,
        }


@dataclass
class Settling:
    """What one commit writes for executions that ended (``TaskDatabase.settle``)."""

    #: Rows of the executions table, and log lines (theirs and the platform's).
    executions: list[Row] = field(default_factory=list)
    lines: list[Row] = field(default_factory=list)
    #: Tasks done, whatever their outcome: deleted.
    finished: list[int] = field(default_factory=list)
    #: (task, run at, error): queued again, an attempt spent.
    retried: list[tuple[int, int, str]] = field(default_factory=list)
    #: (task, error): out of attempts, dead-lettered.
    dead: list[tuple[int, str]] = field(default_factory=list)
    #: Instances whose ``deactivate`` ran while they were being uninstalled: removed.
    removed: list[str] = field(default_factory=list)

    @property
    def all_finished(self) -> bool:
        """Only records and finished tasks: the common case, every execution ok."""
        return not (self.retried or self.dead or self.removed)


class TaskDatabase(ABC):
    """Named operations on the tasks table; see the module's docstring for the ones
    each backend writes its own way."""

    #: Added to the select of due schedules: how their rows are locked for the firing.
    _LOCK_DUE = ""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.registry = RegistryDatabase(database)
        self.history = HistoryDatabase(database)

    # -- adding work ------------------------------------------------------------

    def insert(
        self,
        instance: str,
        trigger: str,
        method: str,
        args: bytes,
        *,
        now: int,
        run_at: int,
        max_attempts: int,
        token: str | None = None,
        key: str | None = None,
        interval_ms: int | None = None,
    ) -> None:
        """A task, queued; with ``interval_ms``, a recurring schedule."""
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
            "max_attempts": max_attempts,
            "now": now,
        }
        # Through a cursor, not write(): no row count asked, so a pipelined
        # PostgreSQL transaction does not wait for the server here.
        with self.database.transaction(write=True) as cur:
            self.database.execute(cur, _INSERT, params)

    def insert_many(
        self,
        trigger: str,
        method: str,
        tasks: Sequence[tuple[str, bytes]],
        *,
        now: int,
        max_attempts: int,
    ) -> None:
        """Tasks due now, each (instance, args), of one trigger and method: the events a
        change causes, inserted together."""
        rows = [
            {
                "instance": instance,
                "trigger": trigger,
                "method": method,
                "args": args,
                "token": None,
                "key": None,
                "interval_ms": None,
                "state": QUEUED,
                "run_at": now,
                "max_attempts": max_attempts,
                "now": now,
            }
            for instance, args in tasks
        ]
        if rows:
            with self.database.transaction(write=True) as cur:
                self.database.execute_many(cur, _INSERT, rows)

    @abstractmethod
    def insert_leased(
        self, instance: str, method: str, args: bytes, *, max_attempts: int, leasing: Leasing
    ) -> Sequence[Any]:
        """A task due now, inserted already leased (a hand-off); its ``LEASED_COLUMNS``
        and its ``EXECUTION_COLUMNS``, as ``claim`` reads them."""

    def count_pending(self, instance: str, limit: int) -> int:
        """The instance's pending tasks, inside the caller's write transaction before it
        adds one (``count_before_insert``)."""
        with self.database.transaction(write=True) as cur:
            return count_before_insert(
                self.database, cur, "tasks", _QUOTA_PENDING, {"instance": instance}, limit
            )

    def keyed(self, instance: str, key: str) -> int | None:
        """The id of the instance's pending task under ``key``, inside the caller's write
        transaction, which first takes the key's turn: two schedules of one new key at
        once (a burst of webhooks debouncing into one task) would otherwise both find
        none and both insert, and the second would fail on the unique key instead of
        replacing the first."""
        params = {"instance": instance, "key": key}
        with self.database.transaction(write=True) as cur:
            self.database.take_turn(cur, _KEY_LOCK_CLASS, f"{instance}\n{key}")
            row = self.database.execute(
                cur, f"SELECT id FROM tasks WHERE key = :key AND {_PENDING}", params
            ).fetchone()
        return None if row is None else int(row[0])

    def move_earlier(self, task: int, run_at: int) -> None:
        self.database.write(
            "UPDATE tasks SET run_at = :run_at WHERE id = :id AND run_at > :run_at",
            {"id": task, "run_at": run_at},
        )

    def replace(
        self, task: int, method: str, args: bytes, *, run_at: int, max_attempts: int
    ) -> None:
        """A keyed task's new method, arguments and time (a one-shot task from now on)."""
        self.database.write(
            "UPDATE tasks SET method = :method, args = :args, run_at = :run_at, "
            f"interval_ms = NULL, state = '{QUEUED}', max_attempts = :max WHERE id = :id",
            {"id": task, "method": method, "args": args, "run_at": run_at, "max": max_attempts},
        )

    # -- removing work ----------------------------------------------------------

    def delete(self, task: int) -> None:
        self.database.write("DELETE FROM tasks WHERE id = :id", {"id": task})

    def cancel_token(self, instance: str, token: str) -> None:
        self.database.write(
            "DELETE FROM tasks WHERE instance = :instance AND token = :token "
            f"AND state = '{QUEUED}'",
            {"instance": instance, "token": token},
        )

    def cancel_key(self, instance: str, key: str) -> None:
        self.database.write(
            f"DELETE FROM tasks WHERE key = :key AND {_PENDING}",
            {"instance": instance, "key": key},
        )

    def cancel_all(self, instance: str) -> None:
        """Every pending one-shot task the instance queued itself (``run_task``): not its
        keyed or recurring schedules, not what is running, and not the platform's own
        events (lifecycle hooks, ticks), which are not the agent's to cancel."""
        self.database.write(
            f"DELETE FROM tasks WHERE instance = :instance AND state = '{QUEUED}' "
            "AND key IS NULL AND trigger = 'task'",
            {"instance": instance},
        )

    def cancel(self, task: int) -> bool:
        """Remove a pending, scheduled or dead task; False if there is none (or it runs)."""
        return bool(
            self.database.write(
                f"DELETE FROM tasks WHERE id = :id AND state <> '{RUNNING}'", {"id": task}
            )
        )

    # -- running work -----------------------------------------------------------

    def any_schedule_due(self, now: int) -> bool:
        """A read, asked on every pass of every worker: no write lock when none is due."""
        row = self.database.fetch_one(
            f"SELECT 1 FROM tasks WHERE state = '{RECURRING}' AND run_at <= :now LIMIT 1",
            {"now": now},
        )
        return row is not None

    def due_schedules(self, now: int, limit: int) -> list[Sequence[Any]]:
        """(id, instance, trigger, method, args, interval_ms, run_at) of the schedules
        due, locked for the caller's write transaction."""
        with self.database.transaction(write=True) as cur:
            rows: list[Sequence[Any]] = self.database.execute(
                cur,
                "SELECT id, instance, trigger, method, args, interval_ms, run_at FROM tasks "
                f"WHERE state = '{RECURRING}' AND run_at <= :now ORDER BY run_at "
                f"LIMIT :limit{self._LOCK_DUE}",
                {"now": now, "limit": limit},
            ).fetchall()
        return rows

    def rearm(self, schedule: int, run_at: int) -> None:
        with self.database.transaction(write=True) as cur:
            self.database.execute(
                cur,
                "UPDATE tasks SET run_at = :next WHERE id = :id",
                {"id": schedule, "next": run_at},
            )

    @abstractmethod
    def claim(self, leasing: Leasing) -> list[Sequence[Any]]:
        """Lease due tasks of runnable instances, oldest first; each row is the task's
        ``LEASED_COLUMNS``, then its ``EXECUTION_COLUMNS``."""

    def extend_leases(self, tasks: Sequence[int], *, until: int, worker: str) -> int:
        """Keep ``worker``'s leases on ``tasks`` until ``until``; how many it still held."""
        placeholders = ", ".join(f":id{n}" for n in range(len(tasks)))
        return self.database.write(
            f"UPDATE tasks SET lease_until = :until WHERE id IN ({placeholders}) "
            f"AND state = '{RUNNING}' AND leased_by = :worker",
            {"until": until, "worker": worker} | {f"id{n}": task for n, task in enumerate(tasks)},
        )

    def finish(self, tasks: Sequence[int]) -> None:
        """The tasks ran: forget them (their history is in the executions table)."""
        if not tasks:
            return
        with self.database.transaction(write=True) as cur:  # no row count: see ``insert``
            self.database.execute(cur, *finish_statement(tasks))

    def retry(self, task: int, *, run_at: int, error: str) -> None:
        """Queue the task again at ``run_at``, its attempt spent."""
        self.database.write(
            f"UPDATE tasks SET state = '{QUEUED}', run_at = :run_at, lease_until = NULL, "
            f"leased_by = NULL, last_error = :error, {_REQUEUED_KEY} WHERE id = :id",
            {"id": task, "run_at": run_at, "error": error},
        )

    def dead_letter(self, task: int, error: str) -> None:
        """Keep the task, out of the queue, until an operator retries or cancels it.

        An agent's cancel token is spent (the task started); a delivery's task keeps
        its token, by which the delivery log finds the task's state."""
        self.database.write(
            f"UPDATE tasks SET state = '{DEAD}', key = NULL, lease_until = NULL, "
            "token = CASE WHEN trigger = 'task' THEN NULL ELSE token END, "
            "leased_by = NULL, last_error = :error WHERE id = :id",
            {"id": task, "error": error},
        )

    def release(self, task: int, *, run_at: int) -> None:
        """Queue the task again without spending an attempt."""
        self.database.write(
            f"UPDATE tasks SET state = '{QUEUED}', attempts = attempts - 1, run_at = :run_at, "
            f"lease_until = NULL, leased_by = NULL, {_REQUEUED_KEY} WHERE id = :id",
            {"id": task, "run_at": run_at},
        )

    def leases(self) -> list[Sequence[Any]]:
        """(id, leased by, lease until, attempts, max attempts) of every running task,
        in the caller's write transaction (recovery decides which are lost)."""
        with self.database.transaction(write=True) as cur:
            rows: list[Sequence[Any]] = self.database.execute(
                cur,
                "SELECT id, leased_by, lease_until, attempts, max_attempts FROM tasks "
                f"WHERE state = '{RUNNING}'",
            ).fetchall()
        return rows

    def settle(self, settling: Settling, leasing: Leasing | None) -> list[Sequence[Any]]:
        """Write ``settling`` and, with ``leasing``, claim as ``claim`` does: one commit.
        Returns what the claim leased."""
        with self.database.transaction(write=True):
            self.history.insert(settling.executions, settling.lines)
            self.finish(settling.finished)
            for task, run_at, error in settling.retried:
                self.retry(task, run_at=run_at, error=error)
            for task, error in settling.dead:
                self.dead_letter(task, error)
            for instance in settling.removed:
                self.registry.remove_instance(instance)
            return self.claim(leasing) if leasing is not None else []

    @abstractmethod
    async def listen(self, wake: Callable[[], None], *, delay_ms: Callable[[int], int]) -> None:
        """Call ``wake`` whenever another process enqueues a task, until cancelled, where
        the database can say so; ``delay_ms(failures)`` spaces attempts to listen again.
        Where it cannot, return at once: workers find such work by polling."""

    # -- for operators ----------------------------------------------------------

    def tasks(self, instance: str | None, *, dead: bool) -> list[list[Any]]:
        """``TASK_COLUMNS`` of the dead-lettered tasks, or of all the others."""
        where = f"state = '{DEAD}'" if dead else f"state <> '{DEAD}'"
        if instance is not None:
            where += " AND instance = :instance"
        rows = self.database.fetch_all(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE {where} ORDER BY run_at, id",
            {"instance": instance},
        )
        return [_with_bytes_args(row) for row in rows]

    def retry_dead(self, task: int, *, now: int) -> bool:
        """Give a dead-lettered task a fresh set of attempts; False if there is none."""
        return bool(
            self.database.write(
                f"UPDATE tasks SET state = '{QUEUED}', attempts = 0, run_at = :now "
                f"WHERE id = :id AND state = '{DEAD}'",
                {"id": task, "now": now},
            )
        )

    def pending(self, now: int) -> tuple[int, int | None]:
        """(tasks running, earliest run_at of any queued or recurring task of a runnable
        instance): work of a suspended instance is not pending, no worker may run it."""
        with self.database.transaction(write=False) as cur:
            (running,) = self.database.execute(
                cur, f"SELECT count(*) FROM tasks WHERE state = '{RUNNING}'"
            ).fetchone()
            (next_at,) = self.database.execute(
                cur,
                "SELECT min(t.run_at) FROM tasks t JOIN instances i ON i.id = t.instance "
                f"WHERE t.state IN ('{QUEUED}', '{RECURRING}') AND " + runnable("i.status"),
            ).fetchone()
        return int(running), next_at


def finish_statement(tasks: Sequence[int]) -> tuple[str, dict[str, Any]]:
    """``finish``'s statement (also for ``Database.write_together``)."""
    placeholders = ", ".join(f":id{n}" for n in range(len(tasks)))
    return (
        f"DELETE FROM tasks WHERE id IN ({placeholders})",
        {f"id{n}": task for n, task in enumerate(tasks)},
    )


def _with_bytes_args(row: Sequence[Any]) -> list[Any]:
    values = list(row)
    values[4] = bytes(values[4])  # PostgreSQL hands back a memoryview
    return values


def task_database(database: Database) -> TaskDatabase:
    """The task queue's operations on ``database``, as its backend runs them."""
    if database.postgres:
        from corral.db.postgres.tasks import PostgresTaskDatabase

        return PostgresTaskDatabase(database)
    from corral.db.sqlite.tasks import SqliteTaskDatabase

    return SqliteTaskDatabase(database)
