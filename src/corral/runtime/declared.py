"""What an agent class declares about itself, checked: its limits and its network allow-list.

Deploy refuses code whose declarations are wrong, with the reason; every place
that runs agent code reads them through here, so all agree on what they mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.runtime.allowlist import AllowList
from corral.sandbox.limits import Limits


@dataclass(frozen=True)
class Declared:
    limits: Limits
    network: AllowList


def declared(description: dict[str, Any], base: Limits) -> Declared:
    """The agent's limits over ``base`` and its allow-list; ``ValueError`` says what is wrong."""
    return Declared(base.override(description["limits"]), AllowList.parse(description["network"]))
