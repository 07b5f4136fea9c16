"""Webhooks as agent code sees them: the request a handler gets, and the verifiers.

A webhook's handler is called with a :class:`WebhookRequest` first (then the
webhook's extra arguments). The host builds the request's wire form from what the
server received (``request_wire``) and the sandbox turns it back into the object
(``WebhookRequest.from_wire``), so both sides read bodies, headers and the query
the same way: the server's 400 for a JSON body that does not parse is the same
``parse_body`` a handler's ``request.body`` runs.

Verifiers check a sender's signature. The server checks the one given as
``create_webhook(..., verify=...)`` before it queues anything (its ``spec`` is
stored with the webhook and rebuilt on the host by ``verifier_from_spec``); agent
code may call ``.verify(request)`` itself.

This module runs inside the sandbox: it imports no host code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from corral.errors import WebhookBodyError, WebhookVerificationError


class _MultiMap(Mapping[str, str]):
    """Pairs kept in order, every value kept: ``m[name]`` is the first value of the
    name, ``get_all(name)`` all of them."""

    _fold: ClassVar[bool] = False

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.pairs: list[tuple[str, str]] = [(str(k), str(v)) for k, v in pairs]
        self._first: dict[str, str] = {}
        for name, value in self.pairs:
            self._first.setdefault(self._key(name), value)

    def _key(self, name: str) -> str:
        return name.lower() if self._fold else name

    def __getitem__(self, name: str) -> str:
        return self._first[self._key(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._first

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in the order received."""
        key = self._key(name)
        return [value for n, value in self.pairs if self._key(n) == key]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pairs!r})"


class Headers(_MultiMap):
    """A request's headers: names case-insensitive (``headers["x-github-event"]``),
    iterated in lower case; a repeated header keeps every value (``get_all``)."""

    _fold = True


class Params(_MultiMap):
    """A request's query parameters: ``params["page"]`` is the first value,
    ``get_all("tag")`` every one (``?tag=a&tag=b``)."""


@dataclass(frozen=True)
class WebhookRequest:
    """One delivery to a webhook, as its handler gets it (SPEC §1.3)."""

    method: str
    headers: Headers
    params: Params
    #: Parsed JSON when the content type says JSON; else the text; bytes when not UTF-8.
    body: Any
    #: The body exactly as received: what signatures are computed over.
    raw_body: bytes
    #: The sender's delivery id (``webhook-id``, ``X-GitHub-Delivery``, ...), else Corral's.
    delivery_id: str
    received_at: datetime

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> WebhookRequest:
        """The request ``request_wire`` describes (its body parsed here).

        A wire form that ``request_wire`` does not make raises as ``check_wire`` says; a
        JSON body that does not parse raises ``WebhookBodyError``.
        """
        check_wire(wire)
        headers = Headers(tuple(pair) for pair in wire["headers"])
        raw: bytes = wire["body"]
        return cls.received(
            method=wire["method"],
            headers=headers,
            query=wire["query"],
            raw_body=raw,
            body=parse_body(headers.get("content-type"), raw),
            delivery_id=wire["delivery_id"],
            received_at_ms=wire["received_at"],
        )

    @classmethod
    def received(
        cls,
        *,
        method: str,
        headers: Headers,
        query: str,
        raw_body: bytes,
        body: Any,
        delivery_id: str,
        received_at_ms: int,
    ) -> WebhookRequest:
        """The request from what was received, its body already parsed (``parse_body``):
        how the sandbox rebuilds it, and how the server builds the one it verifies."""
        return cls(
            method=method,
            headers=headers,
            params=Params(parse_qsl(query, keep_blank_values=True)),
            body=body,
            raw_body=raw_body,
            delivery_id=delivery_id,
            received_at=datetime.fromtimestamp(received_at_ms / 1000, UTC),
        )


_WIRE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "method": str,
    "headers": (list, tuple),
    "query": str,
    "body": bytes,
    "delivery_id": str,
    "received_at": int,
}
# Any millisecond time a datetime can hold (years 1..9999), checked before converting.
_MS_RANGE = range(-62_135_596_800_000, 253_402_300_800_000)


def check_wire(wire: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` (``ValueError`` for a time out of range) naming what is wrong
    unless ``wire`` is what ``request_wire`` makes, rather than a KeyError or
    AttributeError halfway through building the request that says nothing of where."""
    if not isinstance(wire, Mapping):
        raise TypeError(f"a webhook request's wire form is a dict, not {type(wire).__name__}")
    for name, kind in _WIRE_FIELDS.items():
        if name not in wire:
            raise TypeError(f"a webhook request's wire form has no {name!r}")
        value = wire[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(
                f"a webhook request's wire form has {name!r} of type {type(value).__name__}"
            )
    for pair in wire["headers"]:
        if not (
            isinstance(pair, (list, tuple))
            and len(pair) == 2
            and all(isinstance(part, str) for part in pair)
        ):
            raise TypeError(
                f"a webhook request's wire form has a header that is not a [name, value] "
                f"pair of str: {pair!r:.100}"
            )
    if wire["received_at"] not in _MS_RANGE:
        raise ValueError(
            f"a webhook request's wire form has 'received_at' out of range: {wire['received_at']}"
        )


def request_wire(
    *,
    method: str,
    headers: Iterable[tuple[str, str]],
    query: str,
    body: bytes,
    delivery_id: str,
    received_at_ms: int,
) -> dict[str, Any]:
    """What crosses into the sandbox for a delivery (and what a stored one rebuilds)."""
    return {
        "method": method,
        "headers": [[name, value] for name, value in headers],
        "query": query,
        "body": body,
        "delivery_id": delivery_id,
        "received_at": received_at_ms,
    }


def is_json(content_type: str | None) -> bool:
    """``application/json``, or any ``…/…+json`` (``application/vnd.github+json``)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def parse_body(content_type: str | None, raw: bytes) -> Any:
    """The body as a handler reads it: JSON parsed when the content type says JSON (an
    empty body is None), else text, else the bytes when they are not UTF-8.

    A JSON content type over a body that does not parse raises ``WebhookBodyError``
    saying why: the server answers 400 with that message and queues nothing.
    """
    if is_json(content_type):
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise WebhookBodyError(
                f"the body is not valid JSON although its Content-Type ({content_type}) "
                f"says it is: {reason}"
            ) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


class WebhookVerifier(ABC):
    """Checks that a delivery comes from its sender (a signature over the raw body).

    ``verify`` raises ``WebhookVerificationError`` saying what is wrong; it returns
    None when the request is genuine. ``spec`` is what the host stores to rebuild the
    same verifier (``verifier_from_spec``). No message and no ``repr`` shows the secret:
    they end up in logs and in the 401 a sender reads.
    """

    #: The name ``spec`` carries; one per class.
    scheme: ClassVar[str]

    @abstractmethod
    def verify(self, request: WebhookRequest, *, now: float | None = None) -> None:
        """Raise ``WebhookVerificationError`` unless ``request`` is signed as the scheme
        says; ``now``: seconds since the epoch for the timestamp checks (default: now)."""

    @abstractmethod
    def spec(self) -> dict[str, Any]:
        """``{"scheme": ..., ...}``: everything needed to build this verifier again."""

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> WebhookVerifier:
        """The verifier ``spec`` describes (its scheme is this class's); ``ValueError`` or
        ``TypeError`` when a field is missing or malformed."""

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, WebhookVerifier)
            and type(other) is type(self)
            and other.spec() == self.spec()
        )

    def __hash__(self) -> int:
        return hash((self.scheme, repr(sorted(self.spec().items()))))

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.spec().items() if k not in _HIDDEN)
        return f"{type(self).__name__}(secret=<hidden>{', ' if shown else ''}{shown})"


# Fields of a spec that are never shown.
_HIDDEN = frozenset({"scheme", "key"})

#: How far a signed timestamp may be from now, either way, by default (5 minutes).
DEFAULT_TOLERANCE_S = 300


def verifier_from_spec(spec: Mapping[str, Any]) -> WebhookVerifier:
    """The verifier ``spec`` describes (what ``WebhookVerifier.spec`` gave).

    Anything else raises ``ValueError`` saying what is wrong with it; the message never
    quotes the spec, which holds the secret.
    """
    if not isinstance(spec, Mapping):
        raise ValueError(f"a verifier spec is a dict, not {type(spec).__name__}")
    scheme = spec.get("scheme")
    cls = SCHEMES.get(scheme) if isinstance(scheme, str) else None
    if cls is None:
        known = ", ".join(sorted(SCHEMES))
        raise ValueError(
            f"a verifier spec's scheme must be one of {known}; got {scheme!r:.60}"
            if scheme is not None
            else f"a verifier spec needs a scheme (one of {known})"
        )
    try:
        return cls.from_spec(spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a malformed {scheme} verifier spec: {exc}") from None


def _key(secret: str | bytes, what: str) -> bytes:
    """The HMAC key of a secret given as text (UTF-8) or bytes; refuses an empty one."""
    if isinstance(secret, str):
        key = secret.encode()
    elif isinstance(secret, bytes):
        key = secret
    else:
        raise TypeError(f"{what}'s secret is a str or bytes, not {type(secret).__name__}")
    if not key:
        raise ValueError(f"{what}'s secret is empty: give the secret the sender signs with")
    return key


def _stored_key(spec: Mapping[str, Any], fields: frozenset[str] = frozenset()) -> bytes:
    """The key a spec stores (base64), checking it names no field its class does not read."""
    unknown = spec.keys() - {"scheme", "key"} - fields
    if unknown:
        raise ValueError(f"unknown fields {', '.join(sorted(map(str, unknown)))}")
    stored = spec.get("key")
    if not isinstance(stored, str):
        raise ValueError("'key' (the secret, base64) is missing or not a str")
    try:
        return base64.b64decode(stored, validate=True)
    except binascii.Error:
        raise ValueError("'key' is not valid base64") from None


def _mac(key: bytes, content: bytes) -> bytes:
    return hmac.new(key, content, hashlib.sha256).digest()


def _header(request: WebhookRequest, name: str, scheme: str) -> str:
    value = request.headers.get(name)
    if value is None:
        raise WebhookVerificationError(
            f"the request has no {name} header, which {scheme} signatures need"
        )
    return value


def _check_time(timestamp: int, now: float | None, tolerance_s: float, where: str) -> None:
    """Refuse a signature made too long ago (a replay) or too far ahead (a clock that is
    wrong, or a forgery made to last): either way ``tolerance_s`` at most."""
    age = (time.time() if now is None else now) - timestamp
    if age > tolerance_s:
        raise WebhookVerificationError(
            f"the signature is too old: {where} is {age:.0f} s ago, more than the "
            f"{tolerance_s:.10g} s allowed (a replayed request, or a clock that is wrong)"
        )
    if -age > tolerance_s:
        raise WebhookVerificationError(
            f"the signature's time is in the future: {where} is {-age:.0f} s ahead, more "
            f"than the {tolerance_s:.10g} s allowed (the sender's clock or this one is wrong)"
        )


def _unix_time(text: str, where: str) -> int:
    """A Unix time in whole seconds as a header carries it; nothing else (no sign, no
    fraction, no spaces: what is signed is the text, so it must be exactly this)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 12):
        raise WebhookVerificationError(f"{where} is not a Unix time in seconds: {text!r:.40}")
    return int(text)


class StandardWebhooks(WebhookVerifier):
    """The Standard Webhooks scheme (standardwebhooks.com; Svix and many others send it).

    The sender signs ``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256 and
    sends ``webhook-signature: v1,<base64>``; several space-separated signatures are
    allowed (one per key during a key rotation) and any one matching passes. The
    timestamp must be within 5 minutes of now, either way.

    ``secret``: the ``whsec_…`` string the sender shows (base64 after the prefix; the
    prefix may be left off), or the key's raw bytes.
    """

    scheme = "standard-webhooks"
    tolerance_s: ClassVar[int] = DEFAULT_TOLERANCE_S

    def __init__(self, secret: str | bytes) -> None:
        if isinstance(secret, str):
            encoded = secret.removeprefix("whsec_")
            _key(encoded, "StandardWebhooks")  # empty, after the prefix too
            try:
                self._key = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise ValueError(
                    "StandardWebhooks's secret is not valid base64 after its whsec_ prefix: "
                    "copy the whole secret the sender shows, or give the key as bytes"
                ) from None
        else:
            self._key = _key(secret, "StandardWebhooks")

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The ``webhook-signature`` value a sender with this secret sends (``v1,…``):
        for an agent's tests, which send themselves signed requests."""
        content = f"{msg_id}.{timestamp}.".encode() + body
        return "v1," + base64.b64encode(_mac(self._key, content)).decode()

    def verify(self, request: WebhookRequest, *, now: float | None = None) -> None:
        msg_id = _header(request, "webhook-id", "Standard Webhooks")
        stamp = _header(request, "webhook-timestamp", "Standard Webhooks")
        signatures = _header(request, "webhook-signature", "Standard Webhooks")
        timestamp = _unix_time(stamp, "the webhook-timestamp header")
        _check_time(timestamp, now, self.tolerance_s, "its webhook-timestamp")
        expected = _mac(self._key, f"{msg_id}.{stamp}.".encode() + request.raw_body)
        given = [
            entry.removeprefix("v1,") for entry in signatures.split() if entry.startswith("v1,")
        ]
        if not given:
            raise WebhookVerificationError(
                "the webhook-signature header holds no v1 signature (expected "
                "space-separated entries like v1,<base64>)"
            )
        if not any(hmac.compare_digest(_b64(sig), expected) for sig in given):
            raise WebhookVerificationError(
                "no signature in the webhook-signature header matches: the body, webhook-id "
                "or webhook-timestamp was changed, or the webhook's secret is not the sender's"
            )

    def spec(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "key": base64.b64encode(self._key).decode()}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> StandardWebhooks:
        return cls(_stored_key(spec))


def _b64(text: str) -> bytes:
    """Base64 to bytes; b"" for anything else (it then matches no signature)."""
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        return b""


class GitHubSignature(WebhookVerifier):
    """GitHub's scheme: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``,
    keyed with the webhook's secret as typed into GitHub. GitHub signs no timestamp:
    a replayed delivery is caught by its ``X-GitHub-Delivery`` id (Corral's dedupe)."""

    scheme = "github"

    def __init__(self, secret: str | bytes) -> None:
        self._key = _key(secret, "GitHubSignature")

    def sign(self, body: bytes) -> str:
        """The ``X-Hub-Signature-256`` value GitHub sends for ``body`` with this secret."""
        return "sha256=" + hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def verify(self, request: WebhookRequest, *, now: float | None = None) -> None:
        given = _header(request, "X-Hub-Signature-256", "GitHub")
        digest = given.removeprefix("sha256=")
        if digest == given or not _is_hex(digest, 64):
            raise WebhookVerificationError(
                "the X-Hub-Signature-256 header is not sha256= followed by 64 hex digits"
            )
        if not hmac.compare_digest(self.sign(request.raw_body), "sha256=" + digest.lower()):
            raise WebhookVerificationError(
                "the X-Hub-Signature-256 signature does not match: the body was changed, or "
                "the webhook's secret is not the one set in GitHub"
            )

    def spec(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "key": base64.b64encode(self._key).decode()}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> GitHubSignature:
        return cls(_stored_key(spec))


def _is_hex(text: str, length: int) -> bool:
    return len(text) == length and all(c in "0123456789abcdefABCDEF" for c in text)


class StripeSignature(WebhookVerifier):
    """Stripe's scheme: ``Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>…]``, the
    HMAC-SHA256 of ``{t}.{body}`` keyed with the endpoint's whole signing secret
    (``whsec_…`` as Stripe shows it, prefix included: Stripe does not decode it).

    Several ``v1`` entries (a secret being rolled) pass when any one matches; ``v0``
    (test-mode legacy) entries are ignored. ``t`` must be within ``tolerance_s`` of now,
    either way (Stripe's libraries check only the past; a time far ahead is a clock
    that is wrong, or a signature made to outlive the check).
    """

    scheme = "stripe"

    def __init__(self, secret: str | bytes, tolerance_s: float = DEFAULT_TOLERANCE_S) -> None:
        self._key = _key(secret, "StripeSignature")
        if (
            not isinstance(tolerance_s, (int, float))
            or isinstance(tolerance_s, bool)
            or not 0 < tolerance_s < float("inf")
        ):
            raise ValueError(
                f"StripeSignature's tolerance_s is a positive number of seconds; got "
                f"{tolerance_s!r:.40}"
            )
        self.tolerance_s = tolerance_s

    def sign(self, timestamp: int, body: bytes) -> str:
        """The ``Stripe-Signature`` value Stripe sends for ``body`` signed at ``timestamp``."""
        digest = hmac.new(self._key, f"{timestamp}.".encode() + body, hashlib.sha256)
        return f"t={timestamp},v1={digest.hexdigest()}"

    def verify(self, request: WebhookRequest, *, now: float | None = None) -> None:
        header = _header(request, "Stripe-Signature", "Stripe")
        fields: dict[str, list[str]] = {}
        for item in header.split(","):
            name, sep, value = item.strip().partition("=")
            if not sep:
                raise WebhookVerificationError(
                    "the Stripe-Signature header is not a list of name=value items "
                    "(t=<time>,v1=<hex>)"
                )
            fields.setdefault(name, []).append(value)
        stamps = fields.get("t", [])
        if len(stamps) != 1:
            raise WebhookVerificationError(
                "the Stripe-Signature header needs exactly one t=<Unix time> item"
            )
        timestamp = _unix_time(stamps[0], "the Stripe-Signature header's t")
        given = fields.get("v1", [])
        if not given:
            raise WebhookVerificationError("the Stripe-Signature header holds no v1 signature")
        _check_time(timestamp, now, self.tolerance_s, "its t")
        expected = _mac(self._key, f"{stamps[0]}.".encode() + request.raw_body)
        if not any(
            _is_hex(sig, 64) and hmac.compare_digest(bytes.fromhex(sig), expected) for sig in given
        ):
            raise WebhookVerificationError(
                "no v1 signature in the Stripe-Signature header matches: the body was "
                "changed, or the webhook's secret is not the endpoint's signing secret"
            )

    def spec(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "key": base64.b64encode(self._key).decode(),
            "tolerance_s": self.tolerance_s,
        }

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> StripeSignature:
        return cls(
            _stored_key(spec, frozenset({"tolerance_s"})),
            spec.get("tolerance_s", DEFAULT_TOLERANCE_S),
        )


#: The verifiers the server can rebuild from a spec, by scheme. Only these: the server
#: runs no agent code, so a subclass's own ``verify`` could never run there.
SCHEMES: dict[str, type[WebhookVerifier]] = {
    cls.scheme: cls for cls in (StandardWebhooks, GitHubSignature, StripeSignature)
}

__all__ = [
    "DEFAULT_TOLERANCE_S",
    "SCHEMES",
    "GitHubSignature",
    "Headers",
    "Params",
    "StandardWebhooks",
    "StripeSignature",
    "WebhookRequest",
    "WebhookVerifier",
    "check_wire",
    "is_json",
    "parse_body",
    "request_wire",
    "verifier_from_spec",
]
