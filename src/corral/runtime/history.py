"""Execution records and log lines in the database: what happened, for people and scripts."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from corral import codec
from corral.db.raw import Database
from corral.runtime.records import ExecutionRecord
from corral.tagged_json import JsonValue, to_tagged

_FIELDS = (
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
)


_INSERT_RECORD = (
    f"INSERT INTO executions ({', '.join(_FIELDS)}) "
    f"VALUES ({', '.join(':' + field for field in _FIELDS)})"
)


_INSERT_LINE = (
    "INSERT INTO logs (instance, execution_id, at, level, line) "
    "VALUES (:instance, :execution_id, :at, :level, :line)"
)

#: A record, its version and its task id.
Recorded = tuple[ExecutionRecord, int | None, int | None]

#: Rows (records and log lines) up to which ``record_statements`` writes them as
#: multi-row statements: a settlement of a few quiet executions.
TOGETHER_MAX_ROWS = 8


def _rows(records: Sequence[Recorded]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The parameters of each record's row and of each of its log lines."""
    rows: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    for record, version, task_id in records:
        r = record.result
        started = int(record.started_at.timestamp() * 1000)
        try:
            result = codec.encode(r.result) if r.result is not None else None
        except TypeError:  # cannot happen for a decoded result; never lose the record
            result = None
        values = (
            record.id,
            record.instance,
            version,
            record.method,
            record.trigger,
            task_id,
            r.outcome.value,
            result,
            json.dumps(r.error) if r.error is not None else None,
            r.requests_used,
            r.cpu_ms,
            r.peak_rss_bytes,
            r.duration_ms,
            started,
        )
        rows.append(dict(zip(_FIELDS, values, strict=True)))
        failure = r.failure_line
        logged = r.logs if failure is None else [*r.logs, ("error", failure)]
        lines.extend(
            {
                "instance": record.instance,
                "execution_id": record.id,
                "at": started,
                "level": level,
                "line": line,
            }
            for level, line in logged
        )
    return rows, lines


def _multi_row(insert: str, rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """``insert`` (one row of ``:name`` values) for every row, as one statement."""
    params = {f"{key}_{n}": value for n, row in enumerate(rows) for key, value in row.items()}
    return _multi_row_sql(insert, len(rows)), params


@functools.cache
def _multi_row_sql(insert: str, count: int) -> str:
    """The statement text: one per row count (at most ``TOGETHER_MAX_ROWS``)."""
    head, _, values = insert.partition(" VALUES ")
    tuples = [re.sub(r":(\w+)", rf":\g<1>_{n}", values) for n in range(count)]
    return f"{head} VALUES {', '.join(tuples)}"


class History:
    def __init__(self, database: Database) -> None:
        self.database = database

    def record(self, records: Sequence[Recorded]) -> None:
        """Records (each with its version and task id) and their log lines, in one
        transaction. A failed execution's error is its last log line, so ``corral
        logs`` says why it failed. ``executemany``: psycopg sends the rows in one go (a multi-row
        INSERT, with more than 50 parameters, was parsed anew on every call)."""
        if not records:
            return
        rows, lines = _rows(records)
        with self.database.transaction(write=True) as cur:
            cur.executemany(self.database.sql(_INSERT_RECORD), rows)
            if lines:
                cur.executemany(self.database.sql(_INSERT_LINE), lines)

    def record_statements(
        self, records: Sequence[Recorded]
    ) -> list[tuple[str, dict[str, Any]]] | None:
        """``record``'s writes as multi-row statements, for ``Database.write_together``;
        None when there are too many rows for that to pay (see ``record``)."""
        rows, lines = _rows(records)
        if len(rows) + len(lines) > TOGETHER_MAX_ROWS:
            return None
        statements = [_multi_row(_INSERT_RECORD, rows)]
        if lines:
            statements.append(_multi_row(_INSERT_LINE, lines))
        return statements

    def amend(self, record: ExecutionRecord) -> None:
        """Rewrite a recorded execution's outcome, error and CPU from its (amended)
        result, and add its error as a log line of the execution, as ``record`` does:
        its process was found computing after the record was written
        (``SandboxProcess.execute``)."""
        r = record.result
        with self.database.transaction(write=True) as cur:
            self.database.execute(
                cur,
                "UPDATE executions SET outcome = :outcome, error = :error, cpu_ms = :cpu_ms "
                "WHERE id = :id",
                {
                    "id": record.id,
                    "outcome": r.outcome.value,
                    "error": json.dumps(r.error) if r.error is not None else None,
                    "cpu_ms": r.cpu_ms,
                },
            )
            if r.error is not None:
                self.database.execute(
                    cur,
                    _INSERT_LINE,
                    {
                        "instance": record.instance,
                        "execution_id": record.id,
                        "at": int(record.started_at.timestamp() * 1000),
                        "level": "error",
                        "line": r.failure_line,
                    },
                )

    def recorded(self, ids: Sequence[str]) -> set[str]:
        """Which of these execution ids have their record written."""
        placeholders = ", ".join(f":id{n}" for n in range(len(ids)))
        rows = self.database.fetch_all(
            f"SELECT id FROM executions WHERE id IN ({placeholders})",
            {f"id{n}": execution_id for n, execution_id in enumerate(ids)},
        )
        return {execution_id for (execution_id,) in rows}

    def log(self, instance: str, level: str, line: str, *, now: int) -> None:
        """A line from the platform itself (suspension, dead letters) in the instance's log."""
        self.database.write(
            "INSERT INTO logs (instance, execution_id, at, level, line) "
            "VALUES (:instance, NULL, :at, :level, :line)",
            {"instance": instance, "at": now, "level": level, "line": line},
        )

    def counts_since(self, instance: str, since: list[int]) -> list[int]:
        """Executions of the instance started after each of ``since``: one query for all."""
        columns = ", ".join(
            f"coalesce(sum(CASE WHEN started_at > :s{i} THEN 1 ELSE 0 END), 0)"
            for i in range(len(since))
        )
        row = self.database.fetch_one(
            f"SELECT {columns} FROM executions WHERE instance = :instance AND started_at > :oldest",
            {
                "instance": instance,
                "oldest": min(since),
                **{f"s{i}": value for i, value in enumerate(since)},
            },
        )
        return [int(count) for count in row]

    def executions(self, instance: str | None = None, *, limit: int = 50) -> list[dict[str, Any]]:
        """The newest records first, in the form of ``ExecutionRecord.to_json``."""
        where = "WHERE instance = :instance" if instance is not None else ""
        with self.database.transaction(write=False) as cur:
            rows = self.database.execute(
                cur,
                "SELECT id, instance, method, trigger, outcome, result, error, requests_used, "
                f"cpu_ms, peak_rss_bytes, duration_ms, started_at, version FROM executions {where} "
                "ORDER BY started_at DESC, id LIMIT :limit",
                {"instance": instance, "limit": limit},
            ).fetchall()
            logs: dict[str, list[JsonValue]] = {row[0]: [] for row in rows}
            if logs:
                placeholders = ", ".join(f":e{i}" for i in range(len(logs)))
                for execution_id, level, line in self.database.execute(
                    cur,
                    "SELECT execution_id, level, line FROM logs "
                    f"WHERE execution_id IN ({placeholders}) ORDER BY id",
                    {f"e{i}": key for i, key in enumerate(logs)},
                ).fetchall():
                    logs[execution_id].append({"level": level, "line": line})
        return [
            {
                "id": row[0],
                "instance": row[1],
                "method": row[2],
                "trigger": row[3],
                "outcome": row[4],
                "result": to_tagged(codec.decode(bytes(row[5]))) if row[5] is not None else None,
                "error": json.loads(row[6]) if row[6] is not None else None,
                "requests_used": row[7],
                "cpu_ms": round(row[8], 3),
                "peak_rss_bytes": row[9],
                "duration_ms": round(row[10], 3),
                "started_at": datetime.fromtimestamp(row[11] / 1000, UTC).isoformat(),
                "version": row[12],
                "logs": logs[row[0]],
            }
            for row in rows
        ]

    def logs(
        self, instance: str | None = None, *, after: int = 0, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Log lines after id ``after``, oldest first (``corral logs -f`` polls with it)."""
        where = "id > :after" + (" AND instance = :instance" if instance is not None else "")
        rows = self.database.fetch_all(
            "SELECT id, instance, execution_id, at, level, line FROM ("
            f"SELECT * FROM logs WHERE {where} ORDER BY id DESC LIMIT :limit"
            ") newest ORDER BY id",
            {"after": after, "instance": instance, "limit": limit},
        )
        return [
            {
                "id": row[0],
                "instance": row[1],
                "execution": row[2],
                "at": datetime.fromtimestamp(row[3] / 1000, UTC).isoformat(),
                "level": row[4],
                "line": row[5],
            }
            for row in rows
        ]
