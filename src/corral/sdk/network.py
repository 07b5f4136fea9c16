"""``self.tools.network``: the webhooks an agent makes for itself (SPEC §1.3).

A webhook is a public URL that calls one of the agent's methods with the
``WebhookRequest`` first (then the webhook's extra arguments). The host makes,
deletes and lists them; this client checks what it can before sending, so a
mistake is raised at the agent's own line, and the host checks everything again
(it trusts nothing from the sandbox).

This module runs inside the sandbox: it imports no host code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from corral import codec
from corral.sdk.channel import ToolChannel
from corral.sdk.operations import Op
from corral.sdk.webhooks import SCHEMES, WebhookVerifier

#: What ``create_webhook`` accepts as ``mode``.
MODES = ("async", "sync")

#: Resolves a method or callback to what the host stores (``Agent._target``).
Target = Callable[[Any], str | list[str]]


class NetworkTools:
    """The instance's webhooks: made, deleted and listed through the host."""

    def __init__(self, channel: ToolChannel, target: Target) -> None:
        self._channel = channel
        self._target = target

    async def create_webhook(
        self,
        method_or_callback: Any,
        *extra_args: Any,
        mode: Literal["async", "sync"] = "async",
        verify: WebhookVerifier | None = None,
        max_body_bytes: int | None = None,
    ) -> str:
        """A new webhook of this instance; returns its public URL (``…/hooks/<token>``).

        The URL is the capability: anyone who has it can deliver, so hand it only to
        the sender (and set ``verify`` when the sender signs). Each delivery calls
        ``method(request, *extra_args)``: ``method_or_callback`` is a method of this agent
        (``self.on_issue``), or a callback token from ``self.callback(method, *extra_args)``,
        which carries its own extra arguments (then pass none here). As with ``run_task``,
        a str is a callback token, not a method's name.

        ``mode="async"``: the sender gets 202 at once and the handler runs as a durable
        task. ``mode="sync"``: the handler runs while the sender waits, under a
        deadline, and its return value is the response. ``verify``: a verifier from
        ``corral.webhooks``; the server refuses (401) deliveries it rejects, before
        queueing anything. ``max_body_bytes``: a lower body cap than the server's.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be 'async' or 'sync'; got {mode!r:.40}")
        if verify is not None and type(verify) not in SCHEMES.values():
            names = ", ".join(cls.__name__ for cls in SCHEMES.values())
            raise TypeError(
                f"verify must be a verifier from corral.webhooks ({names}) or None; "
                f"got {type(verify).__name__}"
                + (
                    ": the server rebuilds the verifier from its scheme, so a subclass's "
                    "own code would not run there"
                    if isinstance(verify, WebhookVerifier)
                    else ""
                )
            )
        if max_body_bytes is not None and (
            not isinstance(max_body_bytes, int)
            or isinstance(max_body_bytes, bool)
            or max_body_bytes < 1
        ):
            raise ValueError(
                f"max_body_bytes must be a positive whole number of bytes or None; "
                f"got {max_body_bytes!r:.40}"
            )
        target = self._target(method_or_callback)
        if isinstance(target, str) and extra_args:
            raise TypeError(
                "a callback carries its own extra arguments: pass them to self.callback(...), "
                "or pass the method itself to create_webhook with them"
            )
        args = codec.encode(list(extra_args), path="webhook arguments")
        spec = verify.spec() if verify is not None else None
        return str(
            await self._channel.call(Op.WEBHOOK_CREATE, target, args, mode, spec, max_body_bytes)
        )

    async def delete_webhook(self, url: str) -> None:
        """Delete a webhook of this instance by the URL ``create_webhook`` gave: from then
        on it answers 410. No error if it is already gone or never was this instance's."""
        if not isinstance(url, str):
            raise TypeError(
                f"delete_webhook takes the webhook's URL (a str); got {type(url).__name__}"
            )
        await self._channel.call(Op.WEBHOOK_DELETE, url)

    async def list_webhooks(self) -> list[dict[str, Any]]:
        """This instance's live webhooks: ``{"url", "method", "mode", "created_at"}`` each."""
        return list(await self._channel.call(Op.WEBHOOK_LIST))


__all__ = ["MODES", "NetworkTools"]
