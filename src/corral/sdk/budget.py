"""Where an execution stands against its limits, so it can stop in time."""

from __future__ import annotations

from corral.sdk.channel import ToolChannel


class Budget:
    """Read-only view of the running execution's remaining budget.

    The seeds tell authors to "check if approaching timeout" and hand the rest of
    the work to ``run_task``; these figures let them do it without guessing.
    """

    def __init__(self, channel: ToolChannel) -> None:
        self._channel = channel

    @property
    def requests_left(self) -> int:
        return self._channel.requests_left

    @property
    def time_left_ms(self) -> int:
        return self._channel.time_left_ms

    @property
    def cpu_left_ms(self) -> int:
        return self._channel.cpu_left_ms

    def __repr__(self) -> str:
        return (
            f"Budget(requests_left={self.requests_left}, time_left_ms={self.time_left_ms}, "
            f"cpu_left_ms={self.cpu_left_ms})"
        )
