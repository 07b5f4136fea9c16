"""The task queue's operations as SQLite runs them (see ``corral.db.tasks``).

SQLite runs one write transaction at a time, in the whole file: a claim inside
``BEGIN IMMEDIATE`` can never hand a row out twice, and reading the instances in
a second statement of the same transaction costs microseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from corral.db.tasks import CLAIM, CLAIMABLE, INSERT_LEASED, Leasing, TaskDatabase


class SqliteTaskDatabase(TaskDatabase):
    def claim(self, leasing: Leasing) -> list[Sequence[Any]]:
        with self.database.transaction(write=True) as cur:
            tasks = self.database.execute(
                cur, CLAIM.format(claimable=CLAIMABLE), leasing.params()
            ).fetchall()
            return self._with_instances(tasks)

    def insert_leased(
        self, instance: str, method: str, args: bytes, *, max_attempts: int, leasing: Leasing
    ) -> Sequence[Any]:
        params = leasing.hand_off_params(instance, method, args, max_attempts)
        with self.database.transaction(write=True) as cur:
            task = self.database.execute(cur, INSERT_LEASED, params).fetchone()
            (leased,) = self._with_instances([task])
        return leased

    async def listen(self, wake: Callable[[], None], *, delay_ms: Callable[[int], int]) -> None:
        """Nothing to listen to: a SQLite file has no channel to say that another
        process wrote to it. Workers poll."""

    def _with_instances(self, tasks: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
        """Each task's row followed by its instance's ``EXECUTION_COLUMNS``."""
        if not tasks:
            return []
        found = {
            row[0]: tuple(row)
            for row in self.registry.for_executions(sorted({task[1] for task in tasks}))
        }
        return [tuple(task) + found[task[1]] for task in tasks]
