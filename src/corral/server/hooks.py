"""Webhook intake: ``/hooks/<token>``, in SPEC §1.3's order.

1. an unknown (or malformed) token → 404, saying nothing more; a method other than
   POST, PUT, PATCH, GET and DELETE → 405;
2. a deleted webhook, or one whose instance is uninstalled → 410;
3. a body over the cap → 413: from ``Content-Length`` before reading anything, else
   as soon as the stream passes the cap (chunked bodies);
4. a ``verify`` set and the signature missing, wrong or stale → 401, nothing stored;
5. the instance suspended → 503 with ``Retry-After``;
6. a JSON content type over a body that does not parse → 400; a sync webhook whose
   instance has as many sync runs here as it may → 503 ``busy`` (``SyncSlots``);
7. a delivery id seen within the dedupe window → the first answer again, nothing run;
8. the delivery written durably, then: async → 202 and a task a worker runs; sync →
   the handler run here under the response deadline, its return value the answer.

Every check that refuses a request comes before anything is written, and the
delivery is committed before any 2xx: a webhook accepted is never lost. Bad input
of any kind is a 4xx; a 5xx means Corral itself failed. Nothing here is kept
between requests, so any number of servers may share one database.
"""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from corral import codec
from corral.db.group_commit import GroupCommit
from corral.errors import (
    DatabaseUnavailable,
    HandlerReturnError,
    WebhookBodyError,
    WebhookVerificationError,
)
from corral.runtime.executor import Executor
from corral.runtime.records import ExecutionRecord
from corral.runtime.registry import REMOVED, SUSPENDED, UNINSTALLING, Instance
from corral.runtime.services import Services
from corral.runtime.webhooks import Arrival, Delivery, Webhook
from corral.sandbox.limits import Outcome
from corral.sdk.webhooks import Headers, WebhookRequest, parse_body, verifier_from_spec
from corral.server.responses import (
    DEADLINE_PASSED,
    HANDLER_FAILED,
    Answer,
    error_answer,
    handler_answer,
    json_answer,
)

log = logging.getLogger("corral.server")

METHODS = ("POST", "PUT", "PATCH", "GET", "DELETE")
#: What a token can be: ``secrets.token_urlsafe`` characters, not absurdly long. Anything
#: else is unknown without asking the database.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: The longest sender's delivery id kept for dedupe; a longer one is refused (400).
MAX_DELIVERY_ID = 256
#: A sync delivery still running is answered 409 for this many times the deadline; after
#: that its server is taken to be gone, and a repeat runs it again.
STALE_RUNS = 2
#: Seconds a sender is asked to wait before trying a suspended instance again.
SUSPENDED_RETRY_S = 60
#: Where ``answer`` notes the mode of the webhook a request reached, in its ASGI scope.
_MODE = "corral.webhook_mode"

NOT_FOUND = error_answer(404, "not_found", "no such webhook")
GONE = error_answer(410, "gone", "this webhook was deleted")
SUSPENDED_ANSWER = error_answer(
    503,
    "suspended",
    "the webhook's instance is suspended; try again later",
    headers=[("retry-after", str(SUSPENDED_RETRY_S))],
)
STILL_RUNNING = error_answer(
    409,
    "in_progress",
    "a delivery with this id is still being handled; try again shortly",
    headers=[("retry-after", "1")],
)


BUSY = error_answer(
    503,
    "busy",
    "this webhook's instance has as many sync deliveries running as it may; try again shortly",
    headers=[("retry-after", "1")],
)


class SyncSlots:
    """How many sync handlers this server runs at once: at most ``per_instance`` for one
    instance and ``total`` in all.

    Each runs in a sandboxed process of its own while its sender waits; without a
    bound, a burst of sync deliveries would fork a process for each (up to 256 MiB
    apiece) and one tenant could take the host's memory from every other. Past a
    bound the sender hears 503 with ``Retry-After`` before anything is stored.
    """

    def __init__(self, *, total: int, per_instance: int) -> None:
        self.total = total
        self.per_instance = per_instance
        self._running: dict[str, int] = {}
        self._all = 0

    def take(self, instance: str) -> bool:
        """A slot for one of the instance's sync runs; False when none is free."""
        mine = self._running.get(instance, 0)
        if mine >= self.per_instance or self._all >= self.total:
            return False
        self._running[instance] = mine + 1
        self._all += 1
        return True

    def give(self, instance: str) -> None:
        mine = self._running[instance] - 1
        if mine:
            self._running[instance] = mine
        else:
            del self._running[instance]
        self._all -= 1


class Intake:
    """The ``/hooks/{token}`` endpoint, over the services and an executor for sync runs."""

    def __init__(
        self,
        services: Services,
        executor: Callable[[], Executor],
        *,
        on_accept: Callable[[], None] | None = None,
        on_record: Callable[[ExecutionRecord], None] | None = None,
    ) -> None:
        self.services = services
        self.webhooks = services.webhooks
        self.database = services.database
        self.config = services.config.webhooks
        self._executor = executor
        #: Deliveries arriving while one commit is written share the next.
        self._receiving: GroupCommit[Arrival, tuple[Delivery, bool]] = GroupCommit(
            self.database, self.webhooks.receive_all
        )
        #: Told of each async delivery queued (``corral dev``: wake the worker beside us).
        self._on_accept = on_accept
        #: Told of each sync execution once written (``corral dev`` prints it).
        self._on_record = on_record

    def now(self) -> int:
        return math.floor(self.services.clock() * 1000)

    @functools.cached_property
    def _sync_slots(self) -> SyncSlots:
        """As many sync runs as the sandbox pool keeps processes: per instance, in all."""
        pool = self._executor().pool
        return SyncSlots(total=pool.max_processes, per_instance=pool.per_instance)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The endpoint, as an ASGI app: a route to a function takes GET alone unless
        told its methods, and this one answers every method (405 for most)."""
        request = Request(scope, receive)
        try:
            answer = await self.answer(request)
        except Exception as exc:  # the app's handlers answer it: 503 or 500
            status = 503 if isinstance(exc, DatabaseUnavailable) else 500
            self.services.metrics.webhook_request(scope.get(_MODE, "none"), status)
            raise
        self.services.metrics.webhook_request(scope.get(_MODE, "none"), answer.status)
        await answer.response()(scope, receive, send)

    async def answer(self, request: Request) -> Answer:
        """The answer to one request, each check in the order the module lists."""
        method = request.method
        if method not in METHODS:
            return error_answer(
                405,
                "method_not_allowed",
                f"a webhook takes {', '.join(METHODS)}, not {method}",
                headers=[("allow", ", ".join(METHODS))],
            )
        token = request.path_params["token"]
        found = (
            await self.database.call(self.webhooks.lookup, token)
            if _TOKEN.fullmatch(token)
            else None
        )
        if found is None:
            return NOT_FOUND
        webhook, instance = found
        request.scope[_MODE] = webhook.mode  # for the count of requests by mode and code
        if webhook.deleted_at is not None or instance.status in (UNINSTALLING, REMOVED):
            return GONE
        cap = webhook.max_body_bytes or self.config.max_body_bytes
        body = await _read_body(request, cap)
        if isinstance(body, Answer):
            return body
        received_at = self.now()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        query = request.scope["query_string"].decode("latin-1")
        sender_id = self.webhooks.dedupe_key(headers)
        refused = self._refusal(
            webhook, instance, method, headers, query, body, sender_id, received_at
        )
        if refused is not None:
            return refused
        arrival = Arrival(
            webhook,
            instance,
            method,
            headers,
            query,
            body,
            dedupe_key=sender_id,
            dedupe_since=received_at - math.floor(self.config.dedupe_window_h * 3600 * 1000),
            received_at=received_at,
        )
        if webhook.mode != "sync":
            return await self._take(arrival)
        if not self._sync_slots.take(instance.id):
            return BUSY  # before anything is stored, like every refusal
        try:
            return await self._take(arrival)
        finally:
            self._sync_slots.give(instance.id)

    async def _take(self, arrival: Arrival) -> Answer:
        """Store the delivery (or find it a repeat), then answer: queued, or run here."""
        delivery, repeat = await self._receiving.submit(arrival)
        webhook, instance = arrival.webhook, arrival.instance
        if repeat:
            self.services.metrics.webhook_duplicates.inc()
            return await self._repeat(webhook, instance, delivery, arrival.received_at)
        if webhook.mode != "sync":
            if self._on_accept is not None:
                self._on_accept()
            return _queued(delivery.id)
        return await self._run(webhook, instance, delivery)

    def _refusal(
        self,
        webhook: Webhook,
        instance: Instance,
        method: str,
        headers: list[tuple[str, str]],
        query: str,
        body: bytes,
        sender_id: str | None,
        received_at: int,
    ) -> Answer | None:
        """Steps 4 to 6, once the body is read: a bad signature (401), a suspended
        instance (503), a body or delivery id that cannot be taken (400)."""
        if "\x00" in query:
            return error_answer(400, "bad_request", "the query string holds a NUL character")
        received = Headers(headers)
        try:
            parsed: Any = parse_body(received.get("content-type"), body)
            unparsed: WebhookBodyError | None = None
        except WebhookBodyError as exc:
            parsed, unparsed = body, exc
        if webhook.verify is not None:
            seen = WebhookRequest.received(
                method=method,
                headers=received,
                query=query,
                raw_body=body,
                body=parsed,
                delivery_id=sender_id or "",
                received_at_ms=received_at,
            )
            try:
                verifier_from_spec(webhook.verify).verify(seen, now=self.services.clock())
            except WebhookVerificationError as exc:
                return error_answer(401, "unauthorized", str(exc))
        if instance.status == SUSPENDED:
            return SUSPENDED_ANSWER
        if unparsed is not None:
            return error_answer(400, "bad_body", str(unparsed))
        if sender_id is not None and len(sender_id) > MAX_DELIVERY_ID:
            return error_answer(
                400,
                "bad_delivery_id",
                f"the delivery id is {len(sender_id)} characters long; at most "
                f"{MAX_DELIVERY_ID} are taken",
            )
        return None

    async def _repeat(
        self, webhook: Webhook, instance: Instance, first: Delivery, now: int
    ) -> Answer:
        """The answer to a delivery id seen within the window: the first one's again."""
        if first.mode != "sync":
            return _queued(first.id, duplicate=True)
        if first.response is not None:
            said = first.response
            return Answer(said.status, tuple((n, v) for n, v in said.headers), said.body)
        stale_ms = STALE_RUNS * self.config.sync_deadline_s * 1000
        if now - first.received_at > stale_ms:
            # Its server stopped mid-run, so its sender never had an answer: run it again.
            return await self._run(webhook, instance, first)
        return STILL_RUNNING

    async def _run(self, webhook: Webhook, instance: Instance, delivery: Delivery) -> Answer:
        """Run a sync delivery's handler here; its answer, written with the delivery."""
        executor = self._executor()
        version = await self.database.call(self.services.registry.current_version, instance.agent)
        record = await executor.run_inline(
            instance,
            version,
            webhook.method,
            [delivery.request_wire(), *codec.decode(webhook.args)],
            delivery_id=delivery.id,
            deadline_s=self.config.sync_deadline_s,
        )
        problem: str | None = None
        if record is None:  # the run would have gone over the rate limit: suspended
            answer = SUSPENDED_ANSWER
        elif record.result.outcome is Outcome.TIMEOUT:
            answer = DEADLINE_PASSED
        elif record.result.outcome is not Outcome.OK:
            answer = HANDLER_FAILED
        else:
            try:
                answer = handler_answer(record.result.result)
            except HandlerReturnError as exc:
                answer = HANDLER_FAILED
                problem = (
                    f"webhook {webhook.id}: delivery {delivery.id} was answered 500: the "
                    f"handler's return value cannot be sent: {exc}"
                )
        now = self.now()
        await self.database.call(
            self.webhooks.answer,
            delivery.id,
            record,
            version.number,
            answer.status,
            list(answer.headers),
            answer.body,
            now,
        )
        if problem is not None:
            log.warning("%s: %s", instance.id, problem)
            await self.database.call(
                self.services.history.log, instance.id, "warning", problem, now=now
            )
        if record is not None:
            self.services.metrics.executed(instance.agent, record, fate=None)
            if self._on_record is not None:
                self._on_record(record)
        return answer


def _queued(delivery_id: str, *, duplicate: bool = False) -> Answer:
    body: dict[str, Any] = {"queued": True, "delivery_id": delivery_id}
    if duplicate:
        body["duplicate"] = True
    return json_answer(202, body)


async def _read_body(request: Request, cap: int) -> bytes | Answer:
    """The body, or the 413 (or 400) that refuses it: from ``Content-Length`` before
    reading, else as soon as what arrives passes ``cap``."""
    too_large = error_answer(
        413, "too_large", f"the body is over this webhook's limit of {cap:,} bytes"
    )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            return error_answer(400, "bad_request", "Content-Length is not a whole number")
        if int(declared) > cap:
            return too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                return too_large
            chunks.append(chunk)
    except ClientDisconnect:
        return error_answer(400, "bad_request", "the client went away before the body ended")
    return b"".join(chunks)
