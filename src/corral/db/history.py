"""The history's statements: execution records and log lines.

Both backends run the same SQL here. Rows come in as dicts keyed by column
(``EXECUTION_FIELDS``, ``LINE_FIELDS``): ``corral.runtime.history`` makes them
from execution records.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
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

#: An execution's row also holds its instance's agent (which never changes), looked up
#: as the row is written: the agent filter reads its own index (migration 0012).
_INSERT_EXECUTION = (
    f"INSERT INTO executions ({', '.join(EXECUTION_FIELDS)}, agent) "
    f"VALUES ({', '.join(':' + field for field in EXECUTION_FIELDS)}, "
    "(SELECT i.agent FROM instances i WHERE i.id = :instance))"
)
_INSERT_LINE = (
    f"INSERT INTO logs ({', '.join(LINE_FIELDS)}) "
    f"VALUES ({', '.join(':' + field for field in LINE_FIELDS)})"
)

#: What a listing reads of each execution (all but its result).
LISTED_COLUMNS = (
    "id, instance, version, method, trigger, task_id, outcome, requests_used, cpu_ms, "
    "peak_rss_bytes, duration_ms, started_at, delivery_id, error"
)
_LISTED = ", ".join(f"e.{column.strip()}" for column in LISTED_COLUMNS.split(","))
#: What the record of one execution shows: all of it.
RECORD_COLUMNS = f"{LISTED_COLUMNS}, result"
#: What the record of one execution shows of the task it ran, while the task lasts (a
#: retry, a dead letter), and of the delivery it ran for.
CAUSE_TASK_COLUMNS = "id, state, attempts, max_attempts, run_at, last_error"
CAUSE_DELIVERY_COLUMNS = "id, webhook_id, received_at, method, mode, replay_of"
#: A log line as listings show it.
LINE_COLUMNS = "id, instance, execution_id, at, level, line"
#: The outcome and level nearly every row has: the partial indexes of migration 0011
#: leave them out, and a query for another repeats the condition so SQLite uses them.
COMMON_OUTCOME = "ok"
COMMON_LEVEL = "info"
#: ``LIKE``'s escape character, for the text a search looks for.
_ESCAPE = "\\"

#: Rows (records and log lines) up to which ``insert_statements`` writes them as
#: multi-row statements: a settlement of a few quiet executions.
TOGETHER_MAX_ROWS = 8

Row = dict[str, Any]


@dataclass(frozen=True)
class ExecutionQuery:
    """Which executions a listing shows: each field None for any. ``since`` and
    ``until`` bound the start (ms, inclusive, exclusive); ``text`` is looked for,
    case-insensitively, in the error and the log lines."""

    instance: str | None = None
    agent: str | None = None
    method: str | None = None
    trigger: str | None = None
    outcome: str | None = None
    since: int | None = None
    until: int | None = None
    text: str | None = None


@dataclass(frozen=True)
class RecordRows:
    """One execution as its record reads: ``RECORD_COLUMNS``, its log lines
    (``LINE_COLUMNS``, in the order written), and the rows of what caused it that are
    still there (``CAUSE_TASK_COLUMNS``, ``CAUSE_DELIVERY_COLUMNS``)."""

    row: Sequence[Any]
    lines: list[Sequence[Any]]
    task: Sequence[Any] | None
    delivery: Sequence[Any] | None


@dataclass(frozen=True)
class LineQuery:
    """Which log lines a listing shows (None: any): ``since`` bounds ``at`` (ms,
    inclusive)."""

    instance: str | None = None
    execution: str | None = None
    level: str | None = None
    since: int | None = None


def like_pattern(text: str) -> str:
    """``text`` anywhere in a value, as a ``LIKE`` pattern (``ESCAPE '\\'``), lower case:
    its own ``%``, ``_`` and backslashes match themselves."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


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

    # -- for operators (the admin API, the dashboard) -----------------------------------

    def executions_page(
        self, query: ExecutionQuery, *, before: tuple[int, str] | None, limit: int
    ) -> list[Sequence[Any]]:
        """``LISTED_COLUMNS`` of the executions ``query`` selects (its ``text`` aside: see
        ``search_window``), newest first; ``before`` (started_at, id): the page after
        that one. Each filter has an index of migrations 0011 and 0012 in this order, so a
        page reads about ``limit`` rows of it."""
        assert query.text is None, "a search reads its executions through search_window"
        where, params = _filtered(query, before)
        return self.database.fetch_all(
            f"SELECT {_LISTED} FROM executions e {_where(where)}"
            "ORDER BY e.started_at DESC, e.id DESC LIMIT :limit",
            {**params, "limit": limit},
        )

    def search_window(
        self, query: ExecutionQuery, *, before: tuple[int, str] | None, limit: int, window: int
    ) -> tuple[list[Sequence[Any]], tuple[int, str] | None]:
        """A search's step: of the next ``window`` executions the filters select (newest
        first from ``before``), the first ``limit`` whose error or log lines hold
        ``query.text`` (``LISTED_COLUMNS``); and (started_at, id) of the oldest of the
        ``window`` when it was full (older ones may follow), else None (no more).

        The window bounds what one statement reads: text that is rare or absent is
        otherwise looked for in every row of the history. Each execution's lines are
        looked up by its id: ``OFFSET 0`` keeps PostgreSQL from hashing every line in
        the table that holds the text first (which it estimates to cost less), and
        SQLite ignores it."""
        assert query.text is not None
        where, params = _filtered(query, before)
        with self.database.transaction(write=False) as cur:
            edge = self.database.execute(
                cur,
                f"SELECT e.started_at, e.id FROM executions e {_where(where)}"
                "ORDER BY e.started_at DESC, e.id DESC LIMIT 1 OFFSET :last",
                {**params, "last": window - 1},
            ).fetchone()
            if edge is not None:
                where.append("(e.started_at, e.id) >= (:w_at, :w_id)")
                params.update(w_at=edge[0], w_id=edge[1])
            where.append(
                f"(lower(e.error) LIKE :text ESCAPE '{_ESCAPE}' OR EXISTS (SELECT 1 FROM logs l "
                f"WHERE l.execution_id = e.id AND lower(l.line) LIKE :text ESCAPE '{_ESCAPE}' "
                "LIMIT 1 OFFSET 0))"
            )
            params["text"] = like_pattern(query.text)
            rows = self.database.execute(
                cur,
                f"SELECT {_LISTED} FROM executions e {_where(where)}"
                "ORDER BY e.started_at DESC, e.id DESC LIMIT :limit",
                {**params, "limit": limit},
            ).fetchall()
        return rows, None if edge is None else (int(edge[0]), str(edge[1]))

    def execution(self, execution: str) -> RecordRows | None:
        """One execution's record, read together with what it shows; None if there is no
        such record."""
        with self.database.transaction(write=False) as cur:
            row = self.database.execute(
                cur, f"SELECT {RECORD_COLUMNS} FROM executions WHERE id = :id", {"id": execution}
            ).fetchone()
            if row is None:
                return None
            lines = self.database.execute(
                cur,
                f"SELECT {LINE_COLUMNS} FROM logs WHERE execution_id = :id ORDER BY id",
                {"id": execution},
            ).fetchall()
            task = None
            if row[5] is not None:
                # The instance and method too: on SQLite a finished task's id is given
                # to the next task made, and the record must not show another task.
                task = self.database.execute(
                    cur,
                    f"SELECT {CAUSE_TASK_COLUMNS} FROM tasks WHERE id = :id "
                    "AND instance = :instance AND method = :method",
                    {"id": row[5], "instance": row[1], "method": row[3]},
                ).fetchone()
            delivery = None
            if row[12] is not None:
                delivery = self.database.execute(
                    cur,
                    f"SELECT {CAUSE_DELIVERY_COLUMNS} FROM deliveries WHERE id = :id",
                    {"id": row[12]},
                ).fetchone()
        return RecordRows(row, lines, task, delivery)

    def lines_page(
        self, query: LineQuery, *, before: tuple[int, int] | None, limit: int
    ) -> list[Sequence[Any]]:
        """``LINE_COLUMNS`` of the lines ``query`` selects, newest first by ``at``;
        ``before`` (at, id): the page after that line."""
        where, params = _conditions(
            "",
            {"instance": query.instance, "execution_id": query.execution},
            ("level", query.level, COMMON_LEVEL),
            ("at", query.since, None),
            before,
        )
        params["limit"] = limit
        clause = _where(where)
        return self.database.fetch_all(
            f"SELECT {LINE_COLUMNS} FROM logs {clause}ORDER BY at DESC, id DESC LIMIT :limit",
            params,
        )

    def newest_line(self) -> int:
        """The id of the newest log line (0: none yet): where a live tail starts."""
        row = self.database.fetch_one("SELECT coalesce(max(id), 0) FROM logs")
        return int(row[0])

    def lines_from(self, instance: str | None, *, after: int, limit: int) -> list[Sequence[Any]]:
        """``LINE_COLUMNS`` of up to ``limit`` lines with ids above ``after``, oldest first:
        a live tail's next lines."""
        where = "id > :after" + (" AND instance = :instance" if instance is not None else "")
        return self.database.fetch_all(
            f"SELECT {LINE_COLUMNS} FROM logs WHERE {where} ORDER BY id LIMIT :limit",
            {"after": after, "instance": instance, "limit": limit},
        )


def _filtered(
    query: ExecutionQuery, before: tuple[int, str] | None
) -> tuple[list[str], dict[str, Any]]:
    """The conditions of ``query``'s filters but its text, and of the page after
    ``before``, on ``executions e``; and their parameters."""
    return _conditions(
        "e.",
        {column: getattr(query, column) for column in ("instance", "agent", "method", "trigger")},
        ("outcome", query.outcome, COMMON_OUTCOME),
        ("started_at", query.since, query.until),
        before,
    )


def _conditions(
    alias: str,
    equal: dict[str, str | None],
    rare: tuple[str, str | None, str],
    window: tuple[str, int | None, int | None],
    before: tuple[int, Any] | None,
) -> tuple[list[str], dict[str, Any]]:
    """The conditions of a listing's filters, newest first by time then id; and their
    parameters. ``equal``: columns to match where a value is given; ``rare``: (column,
    value, its common value), a column whose partial index leaves the common value out,
    so that a query for another repeats the condition (SQLite uses the index only so);
    ``window``: (time column, since (inclusive), until); ``before``: (time, id) of the
    row the page comes after."""
    where: list[str] = []
    params: dict[str, Any] = {}
    for column, value in equal.items():
        if value is not None:
            where.append(f"{alias}{column} = :{column}")
            params[column] = value
    column, value, common = rare
    if value is not None:
        where.append(f"{alias}{column} = :{column}")
        if value != common:
            where.append(f"{alias}{column} <> '{common}'")
        params[column] = value
    at, since, until = window
    if since is not None:
        where.append(f"{alias}{at} >= :since")
        params["since"] = since
    if until is not None:
        where.append(f"{alias}{at} < :until")
        params["until"] = until
    if before is not None:
        where.append(f"({alias}{at}, {alias}id) < (:b_at, :b_id)")
        params.update(b_at=before[0], b_id=before[1])
    return where, params


def _where(conditions: Sequence[str]) -> str:
    return f"WHERE {' AND '.join(conditions)} " if conditions else ""


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
