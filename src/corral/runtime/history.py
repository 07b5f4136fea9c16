"""Execution records and log lines in the database: what happened, for people and scripts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from corral import codec
from corral.db.history import EXECUTION_FIELDS, HistoryDatabase, Row
from corral.db.raw import Database
from corral.runtime.records import ExecutionRecord
from corral.tagged_json import JsonValue, to_tagged

#: A record, its version and its task id.
Recorded = tuple[ExecutionRecord, int | None, int | None]


def record_rows(records: Sequence[Recorded]) -> tuple[list[Row], list[Row]]:
    """The row of each record in the executions table, and a row per log line of it."""
    rows: list[Row] = []
    lines: list[Row] = []
    for record, version, task_id in records:
        r = record.result
        started = _ms(record.started_at)
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
            record.delivery_id,
        )
        rows.append(dict(zip(EXECUTION_FIELDS, values, strict=True)))
        failure = r.failure_line
        logged = r.logs if failure is None else [*r.logs, ("error", failure)]
        lines.extend(
            _line(record.instance, record.id, started, level, line) for level, line in logged
        )
    return rows, lines


def platform_line(instance: str, level: str, line: str, *, now: int) -> Row:
    """A log line of the platform's own (a suspension, a dead letter): of no execution."""
    return _line(instance, None, now, level, line)


def _line(instance: str, execution: str | None, at: int, level: str, line: str) -> Row:
    return {"instance": instance, "execution_id": execution, "at": at, "level": level, "line": line}


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


class History:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._db = HistoryDatabase(database)

    def record(self, records: Sequence[Recorded]) -> None:
        """Records (each with its version and task id) and their log lines, in one
        transaction. A failed execution's error is its last log line, so ``corral
        logs`` says why it failed."""
        self._db.insert(*record_rows(records))

    def amend(self, record: ExecutionRecord) -> None:
        """Rewrite a recorded execution's outcome, error and CPU from its (amended)
        result, and add its error as a log line of the execution, as ``record`` does:
        its process was found computing after the record was written
        (``SandboxProcess.execute``)."""
        r = record.result
        with self.database.transaction(write=True):
            self._db.amend(
                record.id,
                outcome=r.outcome.value,
                error=json.dumps(r.error) if r.error is not None else None,
                cpu_ms=r.cpu_ms,
            )
            if r.error is not None:
                started = _ms(record.started_at)
                line = _line(record.instance, record.id, started, "error", r.failure_line or "")
                self._db.insert([], [line])

    def recorded(self, ids: Sequence[str]) -> set[str]:
        """Which of these execution ids have their record written."""
        return self._db.recorded(ids)

    def log(self, instance: str, level: str, line: str, *, now: int) -> None:
        """A line from the platform itself (suspension, dead letters) in the instance's log."""
        self._db.insert([], [platform_line(instance, level, line, now=now)])

    def counts_since(self, instance: str, since: list[int]) -> list[int]:
        """Executions of the instance started after each of ``since``: one query for all."""
        return self._db.counts_since(instance, since)

    def executions(self, instance: str | None = None, *, limit: int = 50) -> list[dict[str, Any]]:
        """The newest records first, in the form of ``ExecutionRecord.to_json``."""
        rows, lines = self._db.executions(instance, limit=limit)
        logs: dict[str, list[JsonValue]] = {row[0]: [] for row in rows}
        for execution_id, level, line in lines:
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
                "delivery_id": row[13],
            }
            for row in rows
        ]

    def logs(
        self, instance: str | None = None, *, after: int = 0, limit: int = 200
    ) -> list[dict[str, Any]]:
        """Log lines after id ``after``, oldest first (``corral logs -f`` polls with it)."""
        return [
            {
                "id": row[0],
                "instance": row[1],
                "execution": row[2],
                "at": datetime.fromtimestamp(row[3] / 1000, UTC).isoformat(),
                "level": row[4],
                "line": row[5],
            }
            for row in self._db.lines(instance, after=after, limit=limit)
        ]
