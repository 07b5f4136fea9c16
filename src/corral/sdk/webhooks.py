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

import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from corral.errors import WebhookBodyError


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
        return cls(
            method=wire["method"],
            headers=headers,
            params=Params(parse_qsl(wire["query"], keep_blank_values=True)),
            body=parse_body(headers.get("content-type"), raw),
            raw_body=raw,
            delivery_id=wire["delivery_id"],
            received_at=datetime.fromtimestamp(wire["received_at"] / 1000, UTC),
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
    same verifier (``verifier_from_spec``).
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


#: Every verifier class, by its scheme.
SCHEMES: dict[str, type[WebhookVerifier]] = {}


def verifier_from_spec(spec: Mapping[str, Any]) -> WebhookVerifier:
    """The verifier ``spec`` describes; ``ValueError`` for a spec no class gives."""
    raise NotImplementedError  # filled in with the verifier classes


__all__ = [
    "Headers",
    "Params",
    "WebhookRequest",
    "WebhookVerifier",
    "check_wire",
    "is_json",
    "parse_body",
    "request_wire",
    "verifier_from_spec",
]
