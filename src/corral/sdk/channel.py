"""What an agent object needs from the execution running it.

The sandbox's child runtime implements this; ``corral.testing`` will too. Keeping
it a small protocol is what lets the SDK stay free of host-side imports.
"""

from __future__ import annotations

from typing import Any, Protocol


class ToolChannel(Protocol):
    async def call(self, op: str, *args: Any) -> Any:
        """Ask the host to run tool operation ``op``; counts as one request."""

    @property
    def requests_left(self) -> int: ...

    @property
    def time_left_ms(self) -> int: ...

    @property
    def cpu_left_ms(self) -> int: ...
