"""What an agent class declares about itself, checked: its class and methods, its
limits, its network allow-list and a plugin's tick.

The description comes out of the sandbox, from a process that ran the agent's
code, so none of it is trusted. Deploy refuses code whose declarations are wrong,
with the reason; every place that runs agent code reads them through here, so all
agree on what they mean. A stored declaration is checked again where it runs (it
may predate a check, or exceed a worker's ceilings), so any value at all gives a
``ValueError`` that says what is wrong, never another exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.errors import DeclarationError
from corral.runtime.network.allowlist import AllowList
from corral.sandbox.limits import CEILINGS, Limits, quoted

#: A plugin's timer: at most a tick a day apart.
MAX_TICK_MS = 86_400_000


@dataclass(frozen=True)
class Declared:
    class_name: str
    methods: frozenset[str]
    limits: Limits
    network: AllowList


def declared(
    description: dict[str, Any], defaults: Limits, ceilings: Limits = CEILINGS
) -> Declared:
    """The agent's class, methods, limits over ``defaults`` (each at most its ceiling)
    and allow-list; its tick checked too."""
    class_name, methods = description.get("class"), description.get("methods")
    if not isinstance(class_name, str):
        raise DeclarationError(f"the agent's class must have a name, got {quoted(class_name)}")
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise DeclarationError(
            f"the agent's methods must be a list of names, got {quoted(methods)}"
        )
    tick_ms(description)
    return Declared(
        class_name,
        frozenset(methods),
        defaults.override(description.get("limits"), ceilings),
        AllowList.parse(description.get("network")),
    )


def tick_ms(description: dict[str, Any]) -> int | None:
    """A plugin's milliseconds between ticks; None for an agent without a timer."""
    tick = description.get("tick_ms")
    if tick is None:
        return None
    if isinstance(tick, bool) or not isinstance(tick, int) or not 1 <= tick <= MAX_TICK_MS:
        raise DeclarationError(
            f"tick_ms must be a whole number of milliseconds from 1 to {MAX_TICK_MS}, or None "
            f"for ticks that are only posted, got {quoted(tick)}"
        )
    return tick
