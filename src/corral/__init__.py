"""Corral: a self-hosted runtime for sandboxed, event-driven, serverless Python agents.

Agent code imports from here (``from corral import Agent``); these names come from
:mod:`corral.sdk`, which is all the sandbox loads.
"""

from corral.sdk import (
    Agent,
    AgentDefinitionError,
    Budget,
    Callback,
    CorralError,
    DatabaseUnavailable,
    FetchError,
    FetchTimeout,
    Plugin,
    PluginContext,
    QuotaExceeded,
    RateLimited,
    RequestLimitExceeded,
    Response,
    ResponseTooLarge,
    Twist,
    UnknownMethod,
    WebhookRequest,
)

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentDefinitionError",
    "Budget",
    "Callback",
    "CorralError",
    "DatabaseUnavailable",
    "FetchError",
    "FetchTimeout",
    "Plugin",
    "PluginContext",
    "QuotaExceeded",
    "RateLimited",
    "RequestLimitExceeded",
    "Response",
    "ResponseTooLarge",
    "Twist",
    "UnknownMethod",
    "WebhookRequest",
    "__version__",
]
