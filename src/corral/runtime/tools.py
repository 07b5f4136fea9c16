"""The host's implementation of the tool operations a sandboxed agent may call.

The sandbox sends an operation name and arguments; this module decides whether
the name is a real operation and runs it against the instance's own store (the
scope was bound when the store was opened, never taken from the agent).
"""

from __future__ import annotations

from typing import Any

from corral.sandbox.host import ToolHandler
from corral.state import Store
from corral.state.store import OPERATIONS


class UnknownOperation(PermissionError):
    """The sandbox asked for an operation that does not exist."""


def store_tools(store: Store) -> ToolHandler:
    def handle(op: str, args: list[Any]) -> Any:
        family, _, name = op.partition(".")
        if family != "store" or name not in OPERATIONS:
            raise UnknownOperation(f"there is no tool operation {op!r}")
        return store.perform(name, args)

    return handle
