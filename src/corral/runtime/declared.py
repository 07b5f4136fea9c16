"""What an agent class declares about itself, checked: its limits and its network allow-list.

Deploy refuses code whose declarations are wrong, with the reason; every place
that runs agent code reads them through here, so all agree on what they mean.
A stored declaration is checked again where it runs (it may predate a check, or
exceed a worker's ceilings), so any value at all gives a ``ValueError`` that
says what is wrong, never another exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.runtime.allowlist import AllowList
from corral.sandbox.limits import CEILINGS, Limits


@dataclass(frozen=True)
class Declared:
    limits: Limits
    network: AllowList


def declared(
    description: dict[str, Any], defaults: Limits, ceilings: Limits = CEILINGS
) -> Declared:
    """The agent's limits over ``defaults`` (each at most its ceiling) and its allow-list."""
    return Declared(
        defaults.override(description.get("limits"), ceilings),
        AllowList.parse(description.get("network")),
    )
