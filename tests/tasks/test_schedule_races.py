"""Keyed schedules made at the same moment by several processes (executions on several
workers, a burst of webhooks debouncing into one task): one pending task per key, and
none of the calls fails."""

from __future__ import annotations

import threading

from corral import codec
from corral.db.raw import Database
from corral.tasks.queue import TaskQueue

CALLERS = 8
ROUNDS = 20


def test_concurrent_schedules_of_one_key_leave_one_task_and_raise_nothing(sql_url: str) -> None:
    databases = [Database(sql_url) for _ in range(CALLERS)]
    start = threading.Barrier(CALLERS)
    errors: list[BaseException] = []

    def schedule(database: Database, caller: int) -> None:
        queue = TaskQueue(database)
        start.wait()
        for n in range(ROUNDS):
            try:
                queue.schedule(
                    "racer",
                    f"debounce-{n}",
                    "flush",
                    codec.encode([caller]),
                    run_at=10_000 - caller,
                    now=0,
                    coalesce=caller % 2 == 0,
                )
            except BaseException as exc:  # every failure is the finding
                errors.append(exc)

    threads = [
        threading.Thread(target=schedule, args=(database, caller))
        for caller, database in enumerate(databases)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        pending = TaskQueue(databases[0]).list("racer")
        assert sorted(task.key or "" for task in pending) == sorted(
            f"debounce-{n}" for n in range(ROUNDS)
        )
    finally:
        for database in databases:
            database.close()
