"""What every ``corral`` command is given: the configuration, and the runtime built
from it, each made only when a command first needs it (``corral doctor`` needs none)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import click
import sqlalchemy as sa

from corral.activities import priority_name
from corral.config import RuntimeConfig, without_password
from corral.db import DEFAULT_URL, create_engine
from corral.db.engine import refuse_missing_folder
from corral.quotas import Quotas
from corral.runtime.registry import Instance
from corral.runtime.services import Services
from corral.state import Store, open_store


class Context:
    """The configuration (``--db`` and ``--config`` over ``CORRAL_*`` over the file over
    the defaults, :mod:`corral.config`) and the services every command shares."""

    def __init__(self, db: str | None, config_file: Path | None) -> None:
        self._db = db
        self._config_file = config_file
        self._checked = False

    @cached_property
    def config(self) -> RuntimeConfig:
        """Loaded once; a bad setting is a ``ConfigError`` naming it."""
        return RuntimeConfig.load(config_file=self._config_file, database_url=self._db)

    @property
    def url(self) -> str:
        return self.config.database_url

    @property
    def shown_url(self) -> str:
        """The URL as messages print it: its password, if any, as ``***``."""
        return without_password(self.url)

    def usable_url(self) -> str:
        """The URL, once it is known not to name a SQLite file in a missing folder (a
        URL someone typed; the default's folder is made)."""
        if not self._checked and self.url != DEFAULT_URL:
            refuse_missing_folder(self.url)
        self._checked = True
        return self.url

    def engine(self) -> sa.Engine:
        return create_engine(self.usable_url())

    @cached_property
    def services(self) -> Services:
        """The one wiring (``corral.runtime.services``), on the checked URL."""
        self.usable_url()
        return Services(self.config)

    def instance(self, instance_id: str) -> Instance:
        """The instance, uninstalled ones included (their history stays); an id that
        names none raises ``UnknownInstance``, so no command answers a mistyped id
        with an empty listing."""
        return self.services.registry.instance(instance_id)

    def listed_instance(self, words: Sequence[str]) -> str | None:
        """A listing's optional INSTANCE argument: None for all, else an id checked to
        name an instance (``UnknownInstance`` otherwise)."""
        if len(words) > 1:
            raise click.UsageError("give at most one INSTANCE")
        if not words:
            return None
        self.instance(words[0])
        return words[0]

    def store(self, scope: str, quotas: Quotas | None = None) -> Store:
        return open_store(self.usable_url(), scope, quotas=quotas)


def now_ms() -> int:
    return int(time.time() * 1000)


def checked_priority(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A ``--priority`` option's callback: the name if it is one, else a usage error
    saying the rule (a name with a space would otherwise fail deep in an install)."""
    if value is None:
        return None
    try:
        return priority_name(value, "--priority")
    except ValueError as exc:
        raise click.UsageError(str(exc), ctx=ctx) from None


F = TypeVar("F", bound=Callable[..., Any])


def priority_option(help: str) -> Callable[[F], F]:
    """``--priority NAME`` (default ``default``), checked by ``checked_priority``."""
    return click.option(
        "--priority",
        metavar="NAME",
        default="default",
        show_default=True,
        callback=checked_priority,
        help=help,
    )
