"""The dashboard overview's statements: counts over instances, tasks and executions.

Each is one aggregate over an index: instances by status and tasks by state are
small tables (a finished task is deleted), and executions are counted by minute
over the range of ``ix_executions_started`` the chart covers, so the overview
costs the same with a million executions as with a hundred. Both backends run
the same SQL.
"""

from __future__ import annotations

from typing import Final

from corral.db.raw import Database
from corral.db.registry import REMOVED
from corral.db.tasks import DEAD, QUEUED, RECURRING, RUNNING

MINUTE_MS: Final = 60_000


class OverviewDatabase:
    """Named aggregates for the overview page."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def instances_by_status(self) -> dict[str, int]:
        """How many instances are in each status (removed ones left out)."""
        rows = self.database.fetch_all(
            f"SELECT status, count(*) FROM instances WHERE status <> '{REMOVED}' GROUP BY status"
        )
        return {str(status): int(count) for status, count in rows}

    def tasks_by_state(self, *, now: int) -> dict[str, int]:
        """Tasks ``ready`` (queued and due), ``scheduled`` (queued for later),
        ``recurring``, ``running`` and ``dead``."""
        row = self.database.fetch_one(
            "SELECT "
            f"coalesce(sum(CASE WHEN state = '{QUEUED}' AND run_at <= :now THEN 1 ELSE 0 END), 0), "
            f"coalesce(sum(CASE WHEN state = '{QUEUED}' AND run_at > :now THEN 1 ELSE 0 END), 0), "
            f"coalesce(sum(CASE WHEN state = '{RECURRING}' THEN 1 ELSE 0 END), 0), "
            f"coalesce(sum(CASE WHEN state = '{RUNNING}' THEN 1 ELSE 0 END), 0), "
            f"coalesce(sum(CASE WHEN state = '{DEAD}' THEN 1 ELSE 0 END), 0) "
            "FROM tasks",
            {"now": now},
        )
        names = ("ready", "scheduled", "recurring", "running", "dead")
        return {name: int(count) for name, count in zip(names, row, strict=True)}

    def executions_by_minute(self, *, since: int) -> list[tuple[int, str, int]]:
        """(minute, outcome, executions) for each minute from ``since`` (ms) on that had
        any, a minute being ``started_at // 60000``."""
        rows = self.database.fetch_all(
            f"SELECT started_at / {MINUTE_MS} AS minute, outcome, count(*) FROM executions "
            "WHERE started_at >= :since GROUP BY minute, outcome ORDER BY minute",
            {"since": since},
        )
        return [(int(minute), str(outcome), int(count)) for minute, outcome, count in rows]
