"""What agent code imports. It runs inside the sandbox and never imports host code."""

from corral.sdk.agent import Agent, Twist
from corral.sdk.budget import Budget
from corral.sdk.errors import (
    AgentDefinitionError,
    CorralError,
    RateLimited,
    RequestLimitExceeded,
    UnknownMethod,
)

__all__ = [
    "Agent",
    "AgentDefinitionError",
    "Budget",
    "CorralError",
    "RateLimited",
    "RequestLimitExceeded",
    "Twist",
    "UnknownMethod",
]
