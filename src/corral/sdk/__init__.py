"""What agent code imports. It runs inside the sandbox and never imports host code."""

from corral.activities import Activity, ActivityType, Note, Uuid
from corral.errors import (
    AgentDefinitionError,
    CorralError,
    DatabaseUnavailable,
    FetchError,
    FetchTimeout,
    QuotaExceeded,
    RateLimited,
    RequestLimitExceeded,
    ResponseTooLarge,
    UnknownMethod,
)
from corral.sdk.agent import Agent, Callback, Twist
from corral.sdk.budget import Budget
from corral.sdk.http import Response
from corral.sdk.plugin import Plugin, PluginContext
from corral.sdk.webhooks import WebhookRequest

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
]
