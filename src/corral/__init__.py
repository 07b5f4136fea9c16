"""Corral: a self-hosted runtime for sandboxed, event-driven, serverless Python agents.

Agent code imports from here (``from corral import Agent``); these names come from
:mod:`corral.sdk`, which is all the sandbox loads.
"""

from corral.sdk import (
    Activity,
    ActivityType,
    Agent,
    AgentDefinitionError,
    Budget,
    Callback,
    CorralError,
    DatabaseUnavailable,
    FetchError,
    FetchTimeout,
    Note,
    Plugin,
    PluginContext,
    QuotaExceeded,
    RateLimited,
    RequestLimitExceeded,
    Response,
    ResponseTooLarge,
    Twist,
    UnknownMethod,
    Uuid,
    WebhookRequest,
)

__version__ = "0.1.0"

__all__ = [
    "Activity",
    "ActivityType",
    "Agent",
    "AgentDefinitionError",
    "Budget",
    "Callback",
    "CorralError",
    "DatabaseUnavailable",
    "FetchError",
    "FetchTimeout",
    "Note",
    "Plugin",
    "PluginContext",
    "QuotaExceeded",
    "RateLimited",
    "RequestLimitExceeded",
    "Response",
    "ResponseTooLarge",
    "Twist",
    "UnknownMethod",
    "Uuid",
    "WebhookRequest",
    "__version__",
]
