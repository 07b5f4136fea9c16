"""The metrics' statements: each process's snapshot, and the gauges counted at a scrape.

``metric_snapshots`` holds one row per process (migration 0010): what it has counted
since it started, as JSON that ``corral.runtime.metrics`` writes and reads; this
module only moves the text. Both backends run the same SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from corral.db.raw import Database
from corral.db.tasks import DEAD, QUEUED, RECURRING, RUNNING

#: The row that holds the sums of processes gone quiet (``retire``).
RETIRED = "retired"
# Any fixed number shared by every Corral process: "metr", the turn of the retired row.
_RETIRE_LOCK_CLASS = 0x6D657472

#: Tasks by the state the admin API names: due and waiting for a worker (``ready``),
#: waiting for their time or a recurring schedule (``scheduled``), leased (``running``),
#: dead-lettered (``dead``).
_TASK_STATES = (
    "SELECT CASE "
    f"WHEN state = '{QUEUED}' AND run_at <= :now THEN 'ready' "
    f"WHEN state IN ('{QUEUED}', '{RECURRING}') THEN 'scheduled' "
    f"WHEN state = '{RUNNING}' THEN 'running' "
    f"WHEN state = '{DEAD}' THEN 'dead' ELSE state END AS s, count(*) "
    "FROM tasks GROUP BY s"
)
_PUT = (
    "INSERT INTO metric_snapshots (process, samples, updated_at) VALUES (:process, :samples, "
    ":now) ON CONFLICT (process) DO UPDATE SET samples = excluded.samples, "
    "updated_at = excluded.updated_at"
)


class MetricDatabase:
    """Named operations on the metric snapshots, and the counts the gauges show."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def put(self, process: str, samples: str, *, now: int) -> None:
        """Write the process's snapshot, its row made if it has none (a first write
        whose answer an outage cut off may have made it)."""
        self.database.write(_PUT, {"process": process, "samples": samples, "now": now})

    def update(self, process: str, samples: str, *, now: int) -> bool:
        """Replace the process's snapshot; False if it has no row (never written, or
        retired meanwhile)."""
        return bool(
            self.database.write(
                "UPDATE metric_snapshots SET samples = :samples, updated_at = :now "
                "WHERE process = :process",
                {"process": process, "samples": samples, "now": now},
            )
        )

    def snapshots(self) -> list[tuple[str, str]]:
        """(process, samples) of every row, the retired sums' among them: one statement,
        so a retirement committing meanwhile is seen whole or not at all."""
        rows = self.database.fetch_all("SELECT process, samples FROM metric_snapshots")
        return [(str(row[0]), str(row[1])) for row in rows]

    def retire(self, before: int, merge: Callable[[Sequence[str]], str], *, now: int) -> int:
        """Fold the snapshots last written before ``before`` into the retired row, in one
        transaction, so the sums a scrape reads never go down; how many were folded.

        ``merge`` sums snapshots into one. Retirers take turns on the retired row; the
        rows they fold are those their own delete removed, so none is folded twice.
        """
        with self.database.transaction(write=True) as cur:
            self.database.take_turn(cur, _RETIRE_LOCK_CLASS, RETIRED)
            gone = self.database.execute(
                cur,
                "DELETE FROM metric_snapshots WHERE updated_at < :before AND process <> :retired "
                "RETURNING samples",
                {"before": before, "retired": RETIRED},
            ).fetchall()
            if not gone:
                return 0
            kept = self.database.execute(
                cur,
                "SELECT samples FROM metric_snapshots WHERE process = :retired",
                {"retired": RETIRED},
            ).fetchone()
            samples = [str(row[0]) for row in gone] + ([str(kept[0])] if kept else [])
            self.database.execute(
                cur, _PUT, {"process": RETIRED, "samples": merge(samples), "now": now}
            )
        return len(gone)

    def task_states(self, now: int) -> list[tuple[str, int]]:
        """How many tasks are in each state (``ready``, ``scheduled``, ``running``,
        ``dead``), counted now."""
        rows = self.database.fetch_all(_TASK_STATES, {"now": now})
        return [(str(row[0]), int(row[1])) for row in rows]

    def instance_statuses(self) -> list[tuple[str, int]]:
        """How many instances have each status."""
        rows = self.database.fetch_all("SELECT status, count(*) FROM instances GROUP BY status")
        return [(str(row[0]), int(row[1])) for row in rows]
