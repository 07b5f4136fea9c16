"""Persistent, per-scope key-value stores: the only memory an agent has.

``open_store`` is the host-side entry point and the ``state_factory`` building
block for plugins. Backends for the same URL are shared within a process, so
opening many scopes costs one engine, not one each.
"""

from __future__ import annotations

from corral.db.raw import close_databases, open_database
from corral.errors import DatabaseURLError
from corral.quotas import Quotas
from corral.state.backend import StoreBackend
from corral.state.memory import MemoryBackend
from corral.state.sql import SqlBackend
from corral.state.store import DEFAULT_MAX_VALUE_BYTES, MAX_KEY_BYTES, Clock, Store
from corral.state.sweeper import Sweeper

__all__ = [
    "DEFAULT_MAX_VALUE_BYTES",
    "MAX_KEY_BYTES",
    "Clock",
    "MemoryBackend",
    "SqlBackend",
    "Store",
    "StoreBackend",
    "Sweeper",
    "close_backends",
    "open_backend",
    "open_store",
]


def open_backend(url: str | None) -> StoreBackend:
    """A fresh in-memory backend for None, else a backend on this process's database."""
    if url is None:
        return MemoryBackend()
    if not isinstance(url, str):
        raise DatabaseURLError(f"a store URL must be a str or None, got {type(url).__name__}")
    return SqlBackend(open_database(url))


def open_store(
    url: str | None,
    scope: str,
    *,
    clock: Clock | None = None,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    quotas: Quotas | None = None,
) -> Store:
    """A store for ``scope`` on ``url`` (None: a private in-memory store).

    ``sqlite:///path`` and ``postgresql://...`` create or upgrade the schema on
    first use, so the call works on a fresh database. ``quotas``: what the scope's
    writes may not take it over (docs/store.md § Quotas); none by default.
    """
    backend = open_backend(url)
    return Store(backend, scope, clock=clock, max_value_bytes=max_value_bytes, quotas=quotas)


def close_backends() -> None:
    """Dispose of every shared database (connections, pools)."""
    close_databases()
