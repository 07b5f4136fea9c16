"""``self.tools``: the platform's tool groups, as the seeds name them
(``self.tools.network.create_webhook``, ``self.tools.plot.create_activities``).

This module runs inside the sandbox: it imports no host code.
"""

from __future__ import annotations

from corral.sdk.channel import ToolChannel
from corral.sdk.network import NetworkTools, Target
from corral.sdk.plot import PlotTools


class Tools:
    """The tool groups of one agent object, bound to its execution's channel."""

    def __init__(self, channel: ToolChannel, target: Target) -> None:
        self.network = NetworkTools(channel, target)
        self.plot = PlotTools(channel)


__all__ = ["Tools"]
