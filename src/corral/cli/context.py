"""What every ``corral`` command is given: the database URL and the parts built on it."""

from __future__ import annotations

import time

import click

from corral.db import resolve_url
from corral.db.raw import Database, open_database
from corral.errors import QuotaConfigError
from corral.quotas import Quotas
from corral.runtime.executor import RuntimeConfig
from corral.runtime.registry import Registry
from corral.state import Store, open_store
from corral.tasks.queue import TaskQueue


class Context:
    """The ``--db`` option, resolved; each command opens only what it uses."""

    def __init__(self, db: str | None) -> None:
        self.explicit_url = db
        self.url = resolve_url(db)

    def database(self) -> Database:
        return open_database(self.url)

    def registry(self) -> Registry:
        database = self.database()
        return Registry(database, TaskQueue(database))

    def queue(self) -> TaskQueue:
        return TaskQueue(self.database())

    def store(self, scope: str, quotas: Quotas | None = None) -> Store:
        return open_store(self.url, scope, quotas=quotas)


def runtime_config() -> RuntimeConfig:
    """The configuration of a command that runs agents (``corral dev``, ``worker``,
    ``exec``), from the environment; a bad value is one clear line, no traceback."""
    try:
        return RuntimeConfig.from_environment()
    except QuotaConfigError as exc:
        raise click.ClickException(str(exc)) from None


def now_ms() -> int:
    return int(time.time() * 1000)
