"""PostgreSQL LISTEN: an idle worker claims work that another process enqueued at once.

Migration 0003 makes every inserting statement on ``tasks`` notify channel
``corral_tasks`` when it commits. Without this, work enqueued by the CLI, a
webhook or another worker waits for the next poll. The listener is only a
shortcut: if its connection fails, the worker says so and keeps polling, and the
listener tries again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg

from corral.db.raw import Database

log = logging.getLogger("corral.wakeups")

CHANNEL = "corral_tasks"


async def listen(database: Database, wake: Callable[[], None], *, retry_s: float = 5.0) -> None:
    """Call ``wake`` on every notification until cancelled."""
    url = database.engine.url.set(drivername="postgresql")
    conninfo = url.render_as_string(hide_password=False)
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {CHANNEL}")
                wake()  # whatever was enqueued before the LISTEN took effect
                async for _ in conn.notifies():
                    wake()
        except psycopg.Error as exc:
            log.warning(
                "not listening for new tasks (%s); polling instead, retrying in %.0f s",
                str(exc).strip() or type(exc).__name__,
                retry_s,
            )
        await asyncio.sleep(retry_s)
