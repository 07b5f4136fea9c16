"""Group commit: writes that arrive while one commit is on its way share the next.

A durable commit waits for the disk (1.5-2.5 ms on PostgreSQL on these machines),
and PostgreSQL serialises the commits of transactions that notify listeners (a
queued task notifies the workers): webhook intake committing each delivery alone
took about 550 a second, whatever the number of servers. Items written together
pay for one commit: while a batch is being written, new items wait and go in the
next, so a lone item is written at once and a crowd shares commits.

One item's failure must not fail the others (they may belong to other tenants):
a batch that fails for a reason other than an outage is written again one item
at a time, so only the item at fault hears its error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from corral.db.raw import Database
from corral.errors import DatabaseUnavailable

_I = TypeVar("_I")
_R = TypeVar("_R")

#: The most items one commit writes: a batch's statements are sent together, and one
#: batch should not hold the write lock (SQLite) for long.
MAX_BATCH = 64


class GroupCommit(Generic[_I, _R]):
    """``write(items) -> results`` (one result per item, in order, in one transaction),
    called through ``Database.call`` for batches of the items ``submit`` is given."""

    def __init__(self, database: Database, write: Callable[[Sequence[_I]], Sequence[_R]]) -> None:
        self._database = database
        self._write = write
        self._waiting: list[tuple[_I, asyncio.Future[_R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: _I) -> _R:
        """``item``'s result once the commit that wrote it is done (its error if it
        could not be written)."""
        done: asyncio.Future[_R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_waiting())
        return await done

    async def _write_waiting(self) -> None:
        try:
            while self._waiting:
                batch = self._waiting[:MAX_BATCH]
                del self._waiting[:MAX_BATCH]
                await self._commit(batch)
        finally:
            self._writer = None

    async def _commit(self, batch: list[tuple[_I, asyncio.Future[_R]]]) -> None:
        try:
            results = await self._database.call(self._write, [item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, DatabaseUnavailable):
                for _, done in batch:
                    if not done.done():  # a submitter that went away is told nothing
                        done.set_exception(exc)
                return
            for one in batch:  # which item failed it? each alone, so only it hears
                await self._commit([one])
            return
        for (_, done), result in zip(batch, results, strict=True):
            if not done.done():
                done.set_result(result)
