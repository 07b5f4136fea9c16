"""Webhooks: URLs that turn an HTTP request into an execution of an instance's method.

A webhook belongs to its instance; its token is the capability (whoever holds the
URL can deliver). Every delivery is stored as received before it is answered:
an async one with its task in the same transaction, so a 202 always means a task
that will run; a sync one alone, then its answer with its execution's record, so
a repeat gets the same answer. The delivery log derives each delivery's status,
latency and execution from the executions it caused (``executions.delivery_id``)
and its task, at read time: nothing is kept twice.

Methods here are synchronous database work: async callers (the server, the
tools) run them through ``Database.call`` so that what is answered has been
committed durably first.
"""

from __future__ import annotations

import builtins
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from corral import codec
from corral.config import RuntimeConfig
from corral.db.history import HistoryDatabase
from corral.db.raw import Database
from corral.db.webhooks import (
    DELIVERY_COLUMNS,
    INSERTED_COLUMNS,
    WEBHOOK_COLUMNS,
    WebhookDatabase,
)
from corral.errors import UnknownDelivery, UnknownWebhook
from corral.quotas import Quotas, webhooks_exceeded
from corral.runtime.history import record_rows
from corral.runtime.records import ExecutionRecord
from corral.runtime.registry import Instance, instance_from_row
from corral.sdk.webhooks import Headers, request_wire, verifier_from_spec
from corral.tasks.queue import ClaimedTask, TaskQueue

MODES = ("async", "sync")
#: What one webhook may keep of an agent's: its extra arguments (encoded) and its
#: verifier (as JSON; a secret of a few hundred bytes fits many times over). The
#: quota counts webhooks, so without these an instance's few webhooks could hold
#: gigabytes of the database.
MAX_ARGS_BYTES = 64 * 1024
MAX_VERIFY_BYTES = 4 * 1024
#: The most deliveries ``corral webhooks deliveries`` lists at once, newest first (the
#: admin API pages through all of them).
MAX_LISTED = 1000
#: What a delivery task carries: the delivery's id, alone.
DELIVERY_PREFIX = "dl_"

Kind = Literal["webhook", "tick"]


@dataclass(frozen=True)
class Webhook:
    id: str
    token: str
    instance: str
    #: The method a delivery runs (a callback's, resolved when the webhook was made).
    method: str
    #: Encoded list of extra arguments, given after the request.
    args: bytes
    mode: str
    kind: str
    #: ``verifier.spec()`` of the verifier intake checks, or None.
    verify: dict[str, Any] | None
    max_body_bytes: int | None
    created_at: int
    #: When it was deleted (its URL answers 410), or None while it is live.
    deleted_at: int | None

    def url(self, public_url: str) -> str:
        return f"{public_url.rstrip('/')}/hooks/{self.token}"

    @property
    def trigger(self) -> str:
        """The trigger of the executions its deliveries cause."""
        return "tick" if self.kind == "tick" else "webhook"


@dataclass(frozen=True)
class Response:
    """What a sync delivery's sender was answered: repeated to its duplicates."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True)
class Delivery:
    id: str
    webhook_id: str
    instance: str
    #: The sender's delivery id, when it gave one (``[webhooks] dedupe_headers``).
    dedupe_key: str | None
    received_at: int
    method: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    mode: str
    replay_of: str | None
    #: The token of the task an async delivery was queued as (its state, while it lasts).
    task_token: str | None
    execution_id: str | None
    response: Response | None
    #: Repeats answered from this delivery.
    duplicates: int
    answered_at: int | None = None

    @property
    def delivery_id(self) -> str:
        """The id its handler sees: the sender's when given, else Corral's."""
        return self.dedupe_key or self.id

    def request_wire(self) -> dict[str, Any]:
        """What crosses into the sandbox for it (``WebhookRequest.from_wire``)."""
        return request_wire(
            method=self.method,
            headers=self.headers,
            query=self.query,
            body=self.body,
            delivery_id=self.delivery_id,
            received_at_ms=self.received_at,
        )


@dataclass(frozen=True)
class Arrival:
    """A request to a webhook as the server read it, checked, and about to be stored."""

    webhook: Webhook
    instance: Instance
    method: str
    headers: Sequence[tuple[str, str]]
    query: str
    body: bytes
    #: The sender's delivery id (``Webhooks.dedupe_key``), if it gave one.
    dedupe_key: str | None
    #: A delivery with the same sender's id received since then is this one again.
    dedupe_since: int
    received_at: int


@dataclass(frozen=True)
class DeliveryView:
    """One line of the delivery log."""

    delivery: Delivery
    #: ``queued``, ``running``, ``dead``, ``cancelled``, ``not_run``, or the outcome of its
    #: latest execution (``ok``, ``error``, ``timeout``...).
    status: str
    #: Received to answered (sync), or to the end of its latest execution (async).
    latency_ms: float | None
    #: Its latest execution's id.
    execution: str | None

    @property
    def code(self) -> int | None:
        """The HTTP status its sender got: a sync one's stored answer, 202 for an async
        one; None while a sync one runs, and for a replay, which nobody sent."""
        if self.delivery.response is not None:
            return self.delivery.response.status
        if self.delivery.mode == "async" and self.delivery.replay_of is None:
            return 202
        return None


def dedupe_key(headers: Iterable[tuple[str, str]], names: Sequence[str]) -> str | None:
    """The sender's delivery id: the value of the first of ``names`` present
    (``Webhooks.dedupe_key`` reads the configured ones)."""
    found = Headers(headers)
    return next((found[name] for name in names if found.get(name)), None)


def delivery_of(task: ClaimedTask) -> str | None:
    """The delivery a task runs for: a webhook's, or a tick's posted to its endpoint
    (a timer tick carries no arguments)."""
    if task.trigger not in ("webhook", "tick"):
        return None
    args = codec.decode(task.args)
    if len(args) == 1 and isinstance(args[0], str) and args[0].startswith(DELIVERY_PREFIX):
        return args[0]
    return None


def new_token() -> str:
    """A new webhook's token: 32 random bytes, URL-safe. Never one that starts with
    ``-`` (1 in 64 of them would): ``corral webhooks deliveries TOKEN`` would take it
    for an option and refuse it."""
    token = secrets.token_urlsafe(32)
    while token.startswith("-"):
        token = secrets.token_urlsafe(32)
    return token


def token_of(url_or_token: str) -> str:
    """The token of a webhook URL (``…/hooks/<token>``), or the token itself."""
    _, found, after = url_or_token.rpartition("/hooks/")
    token = after if found else url_or_token
    return token.split("?", 1)[0].split("#", 1)[0].strip("/")


class Webhooks:
    """Webhooks and deliveries, for agents' tools, the server's intake and operators."""

    def __init__(self, database: Database, queue: TaskQueue, config: RuntimeConfig) -> None:
        self.database = database
        self.queue = queue
        self.config = config
        self._db = WebhookDatabase(database)
        self._history = HistoryDatabase(database)

    @property
    def public_url(self) -> str:
        """The base every webhook URL is given out under."""
        return self.config.server.effective_public_url

    # -- for the tools ----------------------------------------------------------------

    def create(
        self,
        instance: str,
        method: str,
        args: bytes,
        *,
        mode: str,
        verify: dict[str, Any] | None,
        max_body_bytes: int | None,
        now: int,
        quotas: Quotas | None,
        kind: Kind = "webhook",
    ) -> Webhook:
        """A new webhook of the instance; ``ValueError`` naming what is wrong with a
        mode, verifier or body cap, ``QuotaExceeded`` over the instance's quota (with
        ``quotas``; the platform's tick endpoint is not counted)."""
        verify_json = self._checked(mode, verify, max_body_bytes, args)
        webhook = Webhook(
            id="wh_" + secrets.token_urlsafe(9),
            token=new_token(),
            instance=instance,
            method=method,
            args=args,
            mode=mode,
            kind=kind,
            verify=verify,
            max_body_bytes=max_body_bytes,
            created_at=now,
            deleted_at=None,
        )
        row = {
            **{column: getattr(webhook, column) for column in WEBHOOK_COLUMNS},
            "verify": verify_json,
        }
        with self.database.transaction(write=True):
            if quotas is not None:
                made = self._db.count_live(instance, quotas.webhooks)
                if made >= quotas.webhooks:
                    raise webhooks_exceeded(quotas, made)
            self._db.insert(row)
        return webhook

    def _checked(
        self, mode: str, verify: dict[str, Any] | None, max_body_bytes: int | None, args: bytes
    ) -> str | None:
        """``ValueError`` naming what is wrong with a webhook's settings; else its
        verifier as stored (JSON), or None."""
        if len(args) > MAX_ARGS_BYTES:
            raise ValueError(
                f"a webhook's extra arguments take {len(args):,} bytes encoded; at most "
                f"{MAX_ARGS_BYTES:,} are kept: store the data and pass its key"
            )
        if mode not in MODES:
            raise ValueError(f"a webhook's mode is 'async' or 'sync', got {mode!r}")
        ceiling = self.config.webhooks.max_body_bytes
        if max_body_bytes is not None and (
            type(max_body_bytes) is not int or not 1 <= max_body_bytes <= ceiling
        ):
            raise ValueError(
                f"max_body_bytes must be a whole number from 1 to {ceiling:,} (the server's "
                f"maximum, [webhooks] max_body_bytes), or None, got {max_body_bytes!r}"
            )
        if verify is not None:
            if not isinstance(verify, dict):
                raise ValueError(
                    "verify must be a verifier from corral.webhooks (StandardWebhooks, "
                    f"GitHubSignature, StripeSignature), got {type(verify).__name__}"
                )
            verifier_from_spec(verify)  # ValueError for a spec no verifier gives
            stored = json.dumps(verify)
            if len(stored) > MAX_VERIFY_BYTES:
                raise ValueError(
                    f"the verifier takes {len(stored):,} bytes as stored; at most "
                    f"{MAX_VERIFY_BYTES:,} are kept: is its secret really that long?"
                )
            return stored
        return None

    def delete(self, instance: str, url_or_token: str, *, now: int) -> None:
        """Tombstone one of the instance's webhooks (its URL answers 410); one it does
        not have is no error."""
        self._db.tombstone(instance, token_of(url_or_token), now=now)

    def list(self, instance: str) -> list[Webhook]:
        """The instance's own live webhooks (not its tick endpoint), oldest first."""
        return [_webhook(row) for row in self._db.agents_live(instance)]

    def delete_all(self, instance: str, *, now: int) -> None:
        """Tombstone every webhook of the instance (an uninstall), in the caller's
        transaction."""
        self._db.tombstone_all(instance, now=now)

    # -- for intake -------------------------------------------------------------------

    def dedupe_key(self, headers: Iterable[tuple[str, str]]) -> str | None:
        """The sender's delivery id, from the first of the configured headers present
        (``[webhooks] dedupe_headers``)."""
        return dedupe_key(headers, self.config.webhooks.dedupe_header_names)

    def lookup(self, token: str) -> tuple[Webhook, Instance] | None:
        """The webhook with this token (live or a tombstone) and its instance."""
        return _with_instance(self._db.with_instance(token=token))

    def find_duplicate(self, webhook_id: str, dedupe_key: str, since_ms: int) -> Delivery | None:
        """The first delivery to the webhook with this sender's id received since
        ``since_ms``, counted as repeated once more; None if there is none."""
        row = self._db.find_duplicate(webhook_id, dedupe_key, since_ms)
        if row is None:
            return None
        first = _delivery(row)
        return replace(first, duplicates=first.duplicates + 1)

    def receive(self, arrival: Arrival) -> tuple[Delivery, bool]:
        """A delivery taken in by the server: the first one with the sender's id since
        ``arrival.dedupe_since``, counted as a repeat (True; nothing stored), else a new
        one stored as ``accept`` stores it (False).

        One transaction, under the sender's id's turn: two copies arriving at once on
        any servers are one delivery and one repeat, never two deliveries.
        """
        with self.database.transaction(write=True):
            if arrival.dedupe_key is not None:
                first = self.find_duplicate(
                    arrival.webhook.id, arrival.dedupe_key, arrival.dedupe_since
                )
                if first is not None:
                    return first, True
            delivery = self.accept(
                arrival.webhook,
                arrival.instance,
                method=arrival.method,
                headers=arrival.headers,
                query=arrival.query,
                body=arrival.body,
                dedupe_key=arrival.dedupe_key,
                now=arrival.received_at,
            )
            return delivery, False

    def receive_all(self, arrivals: Sequence[Arrival]) -> Sequence[tuple[Delivery, bool]]:
        """``receive`` of each, in order, in one transaction: one commit for all (the
        server's group commit, ``corral.db.group_commit``). A later arrival sees what an
        earlier one stored, so copies in one batch are still one delivery."""
        with self.database.transaction(write=True):
            return [self.receive(arrival) for arrival in arrivals]

    def accept(
        self,
        webhook: Webhook,
        instance: Instance,
        *,
        method: str,
        headers: Sequence[tuple[str, str]],
        query: str,
        body: bytes,
        dedupe_key: str | None,
        now: int,
        replay_of: str | None = None,
        mode: str | None = None,
    ) -> Delivery:
        """Store a delivery as received. Async: with its task, one transaction. Sync:
        alone, waiting for ``answer``. ``mode``: the webhook's unless given (a replay
        is always queued)."""
        mode = mode or webhook.mode
        delivery = Delivery(
            id=DELIVERY_PREFIX + secrets.token_urlsafe(12),
            webhook_id=webhook.id,
            instance=instance.id,
            dedupe_key=dedupe_key,
            received_at=now,
            method=method,
            query=query,
            headers=[(str(name), str(value)) for name, value in headers],
            body=bytes(body),
            mode=mode,
            replay_of=replay_of,
            task_token=None,
            execution_id=None,
            response=None,
            duplicates=0,
        )
        with self.database.transaction(write=True):
            if mode == "async":
                token = self.queue.enqueue(
                    instance.id,
                    webhook.method,
                    codec.encode([delivery.id]),
                    now=now,
                    trigger=webhook.trigger,
                    with_token=True,
                )
                delivery = replace(delivery, task_token=token)
            self._db.insert_delivery(
                {
                    **{column: getattr(delivery, column) for column in INSERTED_COLUMNS},
                    "headers": _encoded_pairs(delivery.headers),
                }
            )
        return delivery

    def answer(
        self,
        delivery_id: str,
        record: ExecutionRecord | None,
        version: int | None,
        status: int,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        now: int,
    ) -> None:
        """A sync delivery's execution record (with its log lines) and the response its
        sender got, one commit; ``record`` None when nothing ran (the instance was
        suspended on the way)."""
        with self.database.transaction(write=True):
            if record is not None:
                self._history.insert(*record_rows([(record, version, None)]))
            self._db.answer(
                delivery_id,
                execution_id=None if record is None else record.id,
                status=status,
                headers=_encoded_pairs(headers),
                body=bytes(body),
                now=now,
            )

    # -- for the executor -------------------------------------------------------------

    def delivery(self, delivery_id: str) -> tuple[Delivery, builtins.list[Any]] | None:
        """A delivery and its webhook's extra arguments (decoded); None if either is gone."""
        found = self._db.delivery(delivery_id)
        if found is None:
            return None
        row, extra = found
        return _delivery(row), codec.decode(extra)

    # -- for operators ----------------------------------------------------------------

    def webhooks(self, instance: str | None = None) -> builtins.list[Webhook]:
        """Every live webhook, tick endpoints too, of one instance or all."""
        return [_webhook(row) for row in self._db.live(instance)]

    def webhook(self, ref: str) -> Webhook:
        """The webhook ``ref`` names: its id, its token or its URL."""
        ref = ref.strip()
        row = self._db.by_id_or_token(token_of(ref) if "/hooks/" in ref else ref)
        if row is None:
            raise UnknownWebhook(
                f"there is no webhook {ref!r}: give its id (wh_...), token or URL "
                "(see corral webhooks)"
            )
        return _webhook(row)

    def deliveries(self, webhook_ref: str, *, limit: int = 50) -> builtins.list[DeliveryView]:
        """The webhook's newest deliveries first, each with its status, latency and
        latest execution."""
        if not 1 <= limit <= MAX_LISTED:
            raise ValueError(f"limit must be from 1 to {MAX_LISTED}, got {limit}")
        return self.deliveries_page(webhook_ref, limit=limit)

    def webhooks_page(
        self, instance: str | None = None, *, before: tuple[int, str] | None = None, limit: int
    ) -> builtins.list[Webhook]:
        """Live webhooks (tick endpoints too), of one instance or all, newest first;
        ``before`` (created_at, id): the page after that one."""
        return [_webhook(row) for row in self._db.live_page(instance, before=before, limit=limit)]

    def deliveries_page(
        self, webhook_ref: str, *, before: tuple[int, str] | None = None, limit: int
    ) -> builtins.list[DeliveryView]:
        """The webhook's deliveries, newest first, each with its status, latency and
        latest execution; ``before`` (received_at, id): the page after that delivery."""
        webhook = self.webhook(webhook_ref)
        with self.database.transaction(write=False):
            rows = self._db.deliveries_page(webhook.id, before=before, limit=limit)
            executions = self._db.executions([row[0] for row in rows])
        latest = {row[0]: (row[1], row[2], row[3], row[4]) for row in executions}
        return [_view(_delivery(row[:-1]), row[-1], latest.get(row[0])) for row in rows]

    def replay(self, delivery_id: str, *, now: int) -> Delivery:
        """A new delivery like this one (``replay_of`` it), queued to run as a task."""
        found = self._db.delivery(delivery_id)
        if found is None:
            raise UnknownDelivery(
                f"there is no delivery {delivery_id!r} (see corral webhooks deliveries WEBHOOK; "
                f"deliveries are kept {self.config.retention.deliveries_days} days)"
            )
        original = _delivery(found[0])
        found_webhook = _with_instance(self._db.with_instance(webhook_id=original.webhook_id))
        assert found_webhook is not None  # the join above found it
        webhook, instance = found_webhook
        if webhook.deleted_at is not None:
            raise UnknownWebhook(
                f"delivery {delivery_id!r} cannot be replayed: its webhook {webhook.id} was "
                "deleted (or its instance uninstalled)"
            )
        return self.accept(
            webhook,
            instance,
            method=original.method,
            headers=original.headers,
            query=original.query,
            body=original.body,
            dedupe_key=original.dedupe_key,
            now=now,
            replay_of=original.id,
            mode="async",
        )

    def purge(self, before_ms: int) -> int:
        """Delete deliveries received and tombstones made before ``before_ms``; how many
        deliveries went. Safe to run from every worker at once."""
        return self._db.purge(before_ms)


def _webhook(row: Sequence[Any]) -> Webhook:
    values = dict(zip(WEBHOOK_COLUMNS, row, strict=True))
    values["args"] = bytes(values["args"])
    values["verify"] = None if values["verify"] is None else json.loads(values["verify"])
    return Webhook(**values)


def _with_instance(
    found: tuple[Sequence[Any], Sequence[Any]] | None,
) -> tuple[Webhook, Instance] | None:
    if found is None:
        return None
    webhook, instance = found
    return _webhook(webhook), instance_from_row(instance)


def _delivery(row: Sequence[Any]) -> Delivery:
    values = dict(zip(DELIVERY_COLUMNS, row, strict=True))
    status = values.pop("response_status")
    headers = values.pop("response_headers")
    body = values.pop("response_body")
    values["headers"] = _decoded_pairs(values["headers"])
    values["body"] = bytes(values["body"])
    values["response"] = (
        None
        if status is None
        else Response(
            int(status),
            _decoded_pairs(headers),
            bytes(body),
        )
    )
    return Delivery(**values)


def _view(
    delivery: Delivery, task_state: str | None, latest: tuple[str, str, int, float] | None
) -> DeliveryView:
    """A delivery's status and latency, derived from what it caused."""
    if delivery.mode == "sync":
        if delivery.answered_at is None:
            return DeliveryView(delivery, "running", None, None)
        latency = float(delivery.answered_at - delivery.received_at)
        if latest is None:
            return DeliveryView(delivery, "not_run", latency, None)
        return DeliveryView(delivery, latest[1], latency, latest[0])
    if task_state == "dead":
        status = "dead"
    elif latest is not None and task_state != "running":
        status = latest[1]
    elif task_state is not None:
        status = "running" if task_state == "running" else "queued"
    else:
        status = "cancelled"
    if latest is None:
        return DeliveryView(delivery, status, None, None)
    execution, _, started, took = latest
    return DeliveryView(delivery, status, started + took - delivery.received_at, execution)


def _encoded_pairs(pairs: Iterable[tuple[str, str]]) -> bytes:
    """Headers as stored: every (name, value), in order."""
    return codec.encode([list(pair) for pair in pairs])


def _decoded_pairs(stored: bytes) -> list[tuple[str, str]]:
    return [(name, value) for name, value in codec.decode(bytes(stored))]
