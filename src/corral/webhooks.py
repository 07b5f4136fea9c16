"""Webhooks for agent code: the request a handler gets and the senders' signature checks.

``from corral.webhooks import GitHubSignature`` and pass it to
``create_webhook(..., verify=GitHubSignature(secret))``: the server then refuses an
unsigned or tampered delivery (401) before anything is queued. A handler may also
call ``.verify(request)`` itself, for a sender whose secret it learns later.

The names live in :mod:`corral.sdk.webhooks`, which runs inside the sandbox; this
module only gives them their public address, and imports no host code either.
"""

from corral.errors import WebhookBodyError, WebhookError, WebhookVerificationError
from corral.sdk.webhooks import (
    GitHubSignature,
    Headers,
    Params,
    StandardWebhooks,
    StripeSignature,
    WebhookRequest,
    WebhookVerifier,
)

__all__ = [
    "GitHubSignature",
    "Headers",
    "Params",
    "StandardWebhooks",
    "StripeSignature",
    "WebhookBodyError",
    "WebhookError",
    "WebhookRequest",
    "WebhookVerificationError",
    "WebhookVerifier",
]
