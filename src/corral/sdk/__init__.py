"""What agent code imports. It runs inside the sandbox and never imports host code."""

from corral.sdk.agent import Agent, Callback, Twist
from corral.sdk.budget import Budget
from corral.sdk.errors import (
    AgentDefinitionError,
    CorralError,
    RateLimited,
    RequestLimitExceeded,
    UnknownMethod,
)
from corral.sdk.plugin import Plugin, PluginContext

__all__ = [
    "Agent",
    "AgentDefinitionError",
    "Budget",
    "Callback",
    "CorralError",
    "Plugin",
    "PluginContext",
    "RateLimited",
    "RequestLimitExceeded",
    "Twist",
    "UnknownMethod",
]
