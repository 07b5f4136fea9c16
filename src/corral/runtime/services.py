"""The one wiring: the runtime's parts, built from one configuration in one place.

Every process builds its runtime here: the CLI's commands, ``corral worker``,
``corral dev``, the benchmarks and the test fixtures (and next the server and the
authors' test harness). So a task enqueued anywhere gets the configured retries,
a deploy anywhere is held to the configured ceilings, and a new part is wired once.

Whoever builds a :class:`Services` closes it (``close``) once nothing uses it: a
worker and a server in one process share one.
"""

from __future__ import annotations

import time
from typing import Any

from corral.config import RuntimeConfig
from corral.db.raw import Database, open_database
from corral.plot.service import Plot
from corral.runtime.describe import describe_code
from corral.runtime.history import History
from corral.runtime.metrics import Metrics, Snapshots
from corral.runtime.network.fetch import Fetcher
from corral.runtime.registry import Registry
from corral.runtime.state_browser import StateBrowser
from corral.runtime.tokens import Tokens
from corral.runtime.webhooks import Webhooks
from corral.sandbox.process import AGENT_FILENAME
from corral.sandbox.zygote import Zygote
from corral.state import Sweeper
from corral.state.sql import SqlBackend
from corral.state.store import Clock
from corral.tasks.callbacks import Callbacks
from corral.tasks.queue import TaskQueue


class Services:
    """The database and what works on it, for one configuration and one clock."""

    def __init__(
        self, config: RuntimeConfig, *, clock: Clock = time.time, fetcher: Fetcher | None = None
    ) -> None:
        """Open the configured database (``DatabaseURLError``, ``SchemaOutOfDate`` and the
        database's own errors as ``open_database`` raises them).

        ``fetcher``: one of the caller's (a test's, on a fake timer); by default one
        is made from ``config.fetch`` when first used.
        """
        self.config = config
        self.clock = clock
        self.database: Database = open_database(config.database_url)
        self.queue = TaskQueue(
            self.database,
            max_attempts=config.retries.attempts,
            backoff=config.retries.backoff,
        )
        self.callbacks = Callbacks(self.database)
        self.webhooks = Webhooks(self.database, self.queue, config)
        self.history = History(self.database)
        self.plot = Plot(
            self.database,
            self.queue,
            self.history.log,
            methods_of=self._methods_of,
            quotas=config.quotas,
        )
        self.registry = Registry(self.database, self.queue, self.webhooks, self.plot)
        self.tokens = Tokens(self.database)
        #: What this process counts, and its snapshot in the database (``/metrics``).
        self.metrics = Metrics()
        self.metric_snapshots = Snapshots(self.database, self.metrics, clock)
        self.state_browser = StateBrowser(self.database)
        self._fetcher = fetcher

    def _methods_of(self, agent: str, version: int) -> frozenset[str]:
        """The methods a version defines (the registry caches versions)."""
        methods = self.registry.version(agent, version).description.get("methods")
        return frozenset(methods) if isinstance(methods, list) else frozenset()

    @property
    def fetcher(self) -> Fetcher:
        """Outbound HTTP for every execution here: one connection pool, one rate bucket
        per instance. Made on first use, inside the event loop that uses it."""
        if self._fetcher is None:
            self._fetcher = Fetcher(self.config.fetch, metrics=self.metrics)
        return self._fetcher

    def sweeper(self) -> Sweeper:
        """The chore that deletes expired store keys."""
        return Sweeper(SqlBackend(self.database), clock=self.clock)

    async def describe(
        self,
        code: str,
        *,
        insecure: bool = False,
        zygote: Zygote | None = None,
        filename: str = AGENT_FILENAME,
    ) -> dict[str, Any]:
        """What ``code`` declares, learned in a sandbox and checked against this
        configuration's limits and ceilings: what a deploy stores (``AgentCodeError``);
        ``filename`` is what its tracebacks call the code."""
        return await describe_code(
            code,
            limits=self.config.limits,
            ceilings=self.config.ceilings,
            insecure=insecure,
            zygote=zygote,
            filename=filename,
        )

    async def close(self) -> None:
        """Close the fetcher's connections; the database stays open for the process
        (``open_database`` shares it, ``close_databases`` closes it)."""
        if self._fetcher is not None:
            await self._fetcher.close()
