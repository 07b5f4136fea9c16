"""The history's statements: execution records and log lines.

Both backends run the same SQL here. Rows come in as dicts keyed by column
(``EXECUTION_FIELDS``, ``LINE_FIELDS``): ``corral.runtime.history`` makes them
from execution records.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from corral.db.raw import Database

EXECUTION_FIELDS = (
    "id",
    "instance",
    "version",
    "method",
    "trigger",
    "task_id",
    "outcome",
    "result",
    "error",
    "requests_used",
    "cpu_ms",
    "peak_rss_bytes",
    "duration_ms",
    "started_at",
    "delivery_id",
)
#: A log line's columns: ``execution_id`` is None for the platform's own lines.
LINE_FIELDS = ("instance", "execution_id", "at", "level", "line")

_INSERT_EXECUTION = (
    f"INSERT INTO executions ({', '.join(EXECUTION_FIELDS)}) "
    f"VALUES ({', '.join(':' + field for field in EXECUTION_FIELDS)})"
)
_INSERT_LINE = (
    f"INSERT INTO logs ({', '.join(LINE_FIELDS)}) "
    f"VALUES ({', '.join(':' + field for field in LINE_FIELDS)})"
)

#: Rows (records and log lines) up to which ``insert_statements`` writes them as
#: multi-row statements: a settlement of a few quiet executions.
TOGETHER_MAX_ROWS = 8

Row = dict[str, Any]


class HistoryDatabase:
    """Named operations on the executions and logs tables."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def insert(self, executions: Sequence[Row], lines: Sequence[Row]) -> None:
        """Records and log lines, in one transaction (or the caller's). ``executemany``:
        psycopg sends the rows in one go (a multi-row INSERT, with more than 50
        parameters, was parsed anew on every call)."""
        if not executions and not lines:
            return
        with self.database.transaction(write=True) as cur:
            if executions:
                self.database.execute_many(cur, _INSERT_EXECUTION, executions)
            if lines:
                self.database.execute_many(cur, _INSERT_LINE, lines)

    @staticmethod
    def insert_statements(
        executions: Sequence[Row], lines: Sequence[Row]
    ) -> list[tuple[str, dict[str, Any]]] | None:
        """``insert``'s writes as multi-row statements, for ``Database.write_together``;
        None when there are too many rows for that to pay (see ``insert``)."""
        if not executions or len(executions) + len(lines) > TOGETHER_MAX_ROWS:
            return None
        statements = [_multi_row(_INSERT_EXECUTION, executions)]
        if lines:
            statements.append(_multi_row(_INSERT_LINE, lines))
        return statements

    def amend(self, execution: str, *, outcome: str, error: str | None, cpu_ms: float) -> None:
        self.database.write(
            "UPDATE executions SET outcome = :outcome, error = :error, cpu_ms = :cpu_ms "
            "WHERE id = :id",
            {"id": execution, "outcome": outcome, "error": error, "cpu_ms": cpu_ms},
        )

    def recorded(self, executions: Sequence[str]) -> set[str]:
        """Which of these execution ids have their record written."""
        placeholders = ", ".join(f":id{n}" for n in range(len(executions)))
        rows = self.database.fetch_all(
            f"SELECT id FROM executions WHERE id IN ({placeholders})",
            {f"id{n}": execution for n, execution in enumerate(executions)},
        )
        return {execution for (execution,) in rows}

    def counts_since(self, instance: str, since: Sequence[int]) -> list[int]:
        """Executions of the instance started after each of ``since``: one query for all.

        Activity events are not counted: the instance did not ask for them, and an
        author importing a thousand activities must not suspend the agents that read
        them (SPEC §1.4).
        """
        columns = ", ".join(
            f"coalesce(sum(CASE WHEN started_at > :s{i} THEN 1 ELSE 0 END), 0)"
            for i in range(len(since))
        )
        row = self.database.fetch_one(
            f"SELECT {columns} FROM executions WHERE instance = :instance AND started_at > :oldest "
            "AND trigger <> 'activity'",
            {
                "instance": instance,
                "oldest": min(since),
                **{f"s{i}": value for i, value in enumerate(since)},
            },
        )
        return [int(count) for count in row]

    def executions(
        self, instance: str | None, *, limit: int
    ) -> tuple[list[Sequence[Any]], list[Sequence[Any]]]:
        """The newest records first, and (execution id, level, line) of their log lines,
        oldest first: read together."""
        where = "WHERE instance = :instance" if instance is not None else ""
        with self.database.transaction(write=False) as cur:
            rows = self.database.execute(
                cur,
                "SELECT id, instance, method, trigger, outcome, result, error, requests_used, "
                "cpu_ms, peak_rss_bytes, duration_ms, started_at, version, delivery_id "
                f"FROM executions {where} "
                "ORDER BY started_at DESC, id LIMIT :limit",
                {"instance": instance, "limit": limit},
            ).fetchall()
            if not rows:
                return [], []
            placeholders = ", ".join(f":e{i}" for i in range(len(rows)))
            lines = self.database.execute(
                cur,
                "SELECT execution_id, level, line FROM logs "
                f"WHERE execution_id IN ({placeholders}) ORDER BY id",
                {f"e{i}": row[0] for i, row in enumerate(rows)},
            ).fetchall()
        return rows, lines

    def lines(self, instance: str | None, *, after: int, limit: int) -> list[Sequence[Any]]:
        """(id, instance, execution id, at, level, line) of the newest ``limit`` lines
        after id ``after``, oldest first."""
        where = "id > :after" + (" AND instance = :instance" if instance is not None else "")
        return self.database.fetch_all(
            "SELECT id, instance, execution_id, at, level, line FROM ("
            f"SELECT * FROM logs WHERE {where} ORDER BY id DESC LIMIT :limit"
            ") newest ORDER BY id",
            {"after": after, "instance": instance, "limit": limit},
        )


def _multi_row(insert: str, rows: Sequence[Row]) -> tuple[str, dict[str, Any]]:
    """``insert`` (one row of ``:name`` values) for every row, as one statement."""
    params = {f"{key}_{n}": value for n, row in enumerate(rows) for key, value in row.items()}
    return _multi_row_sql(insert, len(rows)), params


@functools.cache
def _multi_row_sql(insert: str, count: int) -> str:
    """The statement text: one per row count (at most ``TOGETHER_MAX_ROWS``)."""
    head, _, values = insert.partition(" VALUES ")
    tuples = [re.sub(r":(\w+)", rf":\g<1>_{n}", values) for n in range(count)]
    return f"{head} VALUES {', '.join(tuples)}"
