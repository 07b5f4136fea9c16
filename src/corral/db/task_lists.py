"""The task queue as operators see it: pages of tasks, and retry or cancel by filter.

Both backends run the same SQL here. A filter is a ``TaskQuery``; its ``state``
is the operator's word for where a task is (``ready``, ``scheduled``, ``running``,
``dead``), which the stored state and the time make (``STATES``). Pages are read
newest first by id (a task's id grows with its creation), so no state needs an
index in another order: each state has its own (migrations 0002, 0004, 0011).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from corral.db.raw import Database
from corral.db.tasks import DEAD, QUEUED, RECURRING, RUNNING, TASK_COLUMNS

#: Each state an operator names, as a condition on a task's row at ``:now``.
STATES: Final = {
    "ready": f"state = '{QUEUED}' AND run_at <= :now",
    "scheduled": f"((state = '{QUEUED}' AND run_at > :now) OR state = '{RECURRING}')",
    "running": f"state = '{RUNNING}'",
    "dead": f"state = '{DEAD}'",
}
#: What a cancel may remove: a running task finishes first.
NOT_RUNNING: Final = f"state <> '{RUNNING}'"


@dataclass(frozen=True)
class TaskQuery:
    """Which tasks: each field None for any; ``state`` one of ``STATES``."""

    instance: str | None = None
    state: str | None = None
    method: str | None = None
    trigger: str | None = None

    @property
    def empty(self) -> bool:
        return all(
            value is None for value in (self.instance, self.state, self.method, self.trigger)
        )

    def where(self, now: int) -> tuple[list[str], dict[str, Any]]:
        """The conditions and their parameters."""
        where: list[str] = []
        params: dict[str, Any] = {"now": now}
        if self.state is not None:
            where.append(STATES[self.state])
        for column in ("instance", "method", "trigger"):
            value = getattr(self, column)
            if value is not None:
                where.append(f"{column} = :{column}")
                params[column] = value
        return where, params


class TaskListDatabase:
    """Named operations on the tasks table, for operators."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def page(
        self, query: TaskQuery, *, now: int, before: int | None, limit: int
    ) -> list[Sequence[Any]]:
        """``TASK_COLUMNS`` of the tasks ``query`` selects, newest first; ``before``: the
        id of the last task of the previous page."""
        where, params = query.where(now)
        if before is not None:
            where.append("id < :before")
            params["before"] = before
        params["limit"] = limit
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        return self.database.fetch_all(
            f"SELECT {TASK_COLUMNS} FROM tasks {clause}ORDER BY id DESC LIMIT :limit", params
        )

    def task(self, task: int) -> Sequence[Any] | None:
        row: Sequence[Any] | None = self.database.fetch_one(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE id = :id", {"id": task}
        )
        return row

    def count(self, query: TaskQuery, *, now: int, only: str) -> int:
        """How many tasks ``query`` selects that also meet ``only`` (a condition)."""
        where, params = query.where(now)
        row = self.database.fetch_one(
            f"SELECT count(*) FROM tasks WHERE {' AND '.join([*where, only])}", params
        )
        return int(row[0])

    def retry(self, query: TaskQuery, *, now: int) -> int:
        """Every dead-lettered task ``query`` selects, queued again with fresh attempts,
        due now; how many."""
        where, params = query.where(now)
        return self.database.write(
            f"UPDATE tasks SET state = '{QUEUED}', attempts = 0, run_at = :now "
            f"WHERE {' AND '.join([*where, STATES['dead']])}",
            params,
        )

    def cancel(self, query: TaskQuery, *, now: int) -> int:
        """Every task ``query`` selects that is not running, removed; how many."""
        where, params = query.where(now)
        return self.database.write(
            f"DELETE FROM tasks WHERE {' AND '.join([*where, NOT_RUNNING])}", params
        )
