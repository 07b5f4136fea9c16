"""Execution records and log lines in the database: what happened, for people and scripts."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from corral import codec
from corral.db.history import (
    EXECUTION_FIELDS,
    ExecutionQuery,
    HistoryDatabase,
    LineQuery,
    Row,
)
from corral.db.raw import Database
from corral.errors import UnknownExecution
from corral.runtime.records import ExecutionRecord
from corral.sandbox.limits import failure_line
from corral.tagged_json import JsonValue, to_tagged

__all__ = [
    "ExecutionDetail",
    "ExecutionPage",
    "ExecutionQuery",
    "ExecutionSummary",
    "History",
    "LineQuery",
    "LogLine",
    "Tail",
]

#: The most characters a text search looks for: enough for any message worth finding,
#: and a bound on what each row's ``LIKE`` compares.
MAX_SEARCH: Final = 200
#: A search reads the executions its filters select newest first, ``SEARCH_STEP`` in
#: each statement, until it has its page or another step would take it past
#: ``SEARCH_BUDGET_S`` (as long as the last one took): then it answers with the
#: matches it found and where it stopped, and the next page goes on from there. Text
#: that is rare or absent was otherwise looked for in every row of the history in one
#: request: 1-4 s with a million executions (bench/admin.py).
SEARCH_STEP: Final = 2_000
SEARCH_BUDGET_S: Final = 0.1

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


@dataclass(frozen=True)
class ExecutionSummary:
    """An execution as lists show it: times in ms since the epoch; ``error_line`` says
    how it failed (None if it did not)."""

    id: str
    instance: str
    version: int | None
    method: str
    trigger: str
    task_id: int | None
    outcome: str
    requests_used: int
    cpu_ms: float
    peak_rss_bytes: int
    duration_ms: float
    started_at: int
    delivery_id: str | None
    error_line: str | None


@dataclass(frozen=True)
class ExecutionPage:
    """Executions a listing shows, newest first; ``searched_to``: where a search that
    stopped short of a page stopped (the (started_at, id) of the oldest execution it
    read, older ones yet to be searched), else None."""

    rows: list[ExecutionSummary]
    searched_to: tuple[int, str] | None = None


@dataclass(frozen=True)
class LogLine:
    """A log line: ``execution`` is None for the platform's own (a suspension, a dead
    letter); ``at`` (ms) is its execution's start."""

    id: int
    instance: str
    execution: str | None
    at: int
    level: str
    line: str


@dataclass(frozen=True)
class TaskCause:
    """The task an execution ran, while it is still there (retried, dead-lettered)."""

    id: int
    state: str
    attempts: int
    max_attempts: int
    run_at: int
    last_error: str | None


@dataclass(frozen=True)
class DeliveryCause:
    """The webhook delivery an execution ran for."""

    id: str
    webhook_id: str
    received_at: int
    method: str
    mode: str
    replay_of: str | None


@dataclass(frozen=True)
class ExecutionDetail:
    """One execution's whole record: its result (tagged JSON), its error (type, message,
    traceback), every log line it wrote, and what caused it."""

    summary: ExecutionSummary
    result: JsonValue
    error: dict[str, Any] | None
    logs: list[LogLine]
    task: TaskCause | None
    delivery: DeliveryCause | None


def _summary(row: Sequence[Any]) -> ExecutionSummary:
    error = json.loads(row[13]) if row[13] is not None else None
    return ExecutionSummary(
        id=row[0],
        instance=row[1],
        version=row[2],
        method=row[3],
        trigger=row[4],
        task_id=None if row[5] is None else int(row[5]),
        outcome=row[6],
        requests_used=int(row[7]),
        cpu_ms=round(float(row[8]), 3),
        peak_rss_bytes=int(row[9]),
        duration_ms=round(float(row[10]), 3),
        started_at=int(row[11]),
        delivery_id=row[12],
        error_line=failure_line(row[6], error),
    )


def _log_line(row: Sequence[Any]) -> LogLine:
    return LogLine(int(row[0]), row[1], row[2], int(row[3]), row[4], row[5])


def _result(data: Any) -> JsonValue:
    """A stored result as tagged JSON; one the codec cannot read back is said so."""
    if data is None:
        return None
    try:
        return to_tagged(codec.decode(bytes(data)))
    except (TypeError, ValueError) as exc:  # never expected: the record was encoded here
        return {"$unreadable": str(exc)}


class Tail:
    """A live tail of log lines (``logs/stream``, the dashboard's): each ``next`` gives
    the lines written since the last, oldest first.

    Lines are found by id, and on PostgreSQL ids are handed out as rows are written,
    not as their transactions commit: a line may become visible after lines with
    higher ids were read. So each read looks again at the last ``LATE`` ids and gives
    the lines it had not given yet; a line committed later than that (a transaction
    of more than ``LATE`` lines held open meanwhile) is in ``GET /logs``, not here.
    """

    LATE: Final = 100
    #: The most new lines one read gives.
    BATCH: Final = 200

    def __init__(self, database: Database, instance: str | None, *, after: int) -> None:
        self._db = HistoryDatabase(database)
        self.instance = instance
        #: The highest id given so far (or where the tail started).
        self.after = after
        #: Ids given within the last ``LATE``: a read over them gives each only once.
        self._given: set[int] | None = None

    def next(self) -> list[LogLine]:
        """The lines not given yet, oldest first (synchronous: ``Database.call`` it)."""
        low = max(0, self.after - self.LATE)
        rows = self._db.lines_from(self.instance, after=low, limit=self.LATE + self.BATCH)
        if self._given is None:  # the first read: what is there up to ``after`` is old
            self._given = {int(row[0]) for row in rows if int(row[0]) <= self.after}
        lines = [_log_line(row) for row in rows if int(row[0]) not in self._given]
        if lines:
            self.after = max(self.after, max(line.id for line in lines))
        floor = self.after - self.LATE
        self._given = {given for given in self._given if given > floor}
        self._given.update(line.id for line in lines if line.id > floor)
        return lines


class History:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._db = HistoryDatabase(database)
        #: What one search request reads at most (see ``SEARCH_STEP``).
        self.search_step = SEARCH_STEP
        self.search_budget_s = SEARCH_BUDGET_S

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

    # -- for operators (the admin API, the dashboard) -----------------------------------

    def executions_page(
        self, query: ExecutionQuery, *, before: tuple[int, str] | None = None, limit: int
    ) -> ExecutionPage:
        """The executions ``query`` selects, newest first, ``limit`` at most; ``before``
        (started_at, id): the page after that one. A search (``query.text``) may stop
        short of ``limit`` with older executions yet to search (``searched_to``: see
        ``SEARCH_STEP``). ``ValueError`` for a search longer than ``MAX_SEARCH``."""
        if query.text is None:
            rows = self._db.executions_page(query, before=before, limit=limit)
            return ExecutionPage([_summary(row) for row in rows])
        if len(query.text) > MAX_SEARCH:
            raise ValueError(f"a search is at most {MAX_SEARCH} characters")
        started = time.monotonic()
        found: list[Sequence[Any]] = []
        while True:
            step_started = time.monotonic()
            rows, edge = self._db.search_window(
                query, before=before, limit=limit - len(found), window=self.search_step
            )
            found += rows
            if len(found) >= limit or edge is None:  # a page, or the whole history read
                return ExecutionPage([_summary(row) for row in found])
            before = edge
            now = time.monotonic()
            if (now - started) + (now - step_started) > self.search_budget_s:
                # Another step like this one would not fit in the budget.
                return ExecutionPage([_summary(row) for row in found], searched_to=edge)

    def execution(self, execution_id: str) -> ExecutionDetail:
        """One execution's whole record; ``UnknownExecution`` if there is none."""
        found = self._db.execution(execution_id)
        if found is None:
            raise UnknownExecution(
                f"there is no execution {execution_id!r} (see corral executions)"
            )
        row = found.row
        return ExecutionDetail(
            summary=_summary(row),
            result=_result(row[14]),
            error=json.loads(row[13]) if row[13] is not None else None,
            logs=[_log_line(line) for line in found.lines],
            task=None if found.task is None else TaskCause(*found.task),
            delivery=None if found.delivery is None else DeliveryCause(*found.delivery),
        )

    def lines_page(
        self, query: LineQuery, *, before: tuple[int, int] | None = None, limit: int
    ) -> list[LogLine]:
        """The log lines ``query`` selects, newest first; ``before`` (at, id): the page
        after that line."""
        return [_log_line(row) for row in self._db.lines_page(query, before=before, limit=limit)]

    def tail(self, instance: str | None = None) -> Tail:
        """A live tail of the lines written from now on (of one instance, or all)."""
        return Tail(self.database, instance, after=self._db.newest_line())
