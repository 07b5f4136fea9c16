"""What a webhook's sender gets: a sync handler's return value as an HTTP answer, and
the answers Corral gives itself (errors, 202, 504).

A sync handler's return value becomes the response (SPEC §1.3): ``dict``/``list`` →
JSON, ``str`` → ``text/plain``, ``bytes`` → ``application/octet-stream``, ``None`` →
204, ``(status, body)`` and ``(status, body, headers)`` → as given. The agent's code
chose that value, so a value that cannot be sent (a status out of range, a header
with a line break, a dict holding a datetime) is the agent's mistake: the sender
gets Corral's generic 500 and the instance's log says why (``HandlerReturnError``),
never a traceback and never a malformed answer on the wire.

An :class:`Answer` is plain data (status, header pairs, body bytes) because a sync
answer is stored with its delivery and given again, byte for byte, to a duplicate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from corral.errors import HandlerReturnError

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"

#: An HTTP header name (RFC 9110 ``token``).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: What a header value may hold: visible characters, spaces and tabs, in Latin-1.
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
#: Headers the server writes itself: an agent setting them would break the framing.
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})
#: Statuses whose answer has no body (RFC 9110 §6.4.1).
_BODILESS = frozenset({204, 304})


@dataclass(frozen=True)
class Answer:
    """A response as it is sent and stored."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def response(self) -> Response:
        response = Response(self.body, status_code=self.status)
        # Starlette set Content-Length (none for 204 and 304); the rest is ours.
        for name, value in self.headers:
            response.headers.append(name, value)
        return response


def json_answer(status: int, value: Any, *, headers: Sequence[tuple[str, str]] = ()) -> Answer:
    """``value`` (plain JSON data Corral built) as a JSON answer."""
    body = json.dumps(value, separators=(",", ":")).encode()
    return Answer(status, (("content-type", JSON), *headers), body)


def error_answer(
    status: int, code: str, message: str, *, headers: Sequence[tuple[str, str]] = ()
) -> Answer:
    """Corral's error shape: ``{"error": {"code": ..., "message": ...}}``."""
    return json_answer(status, {"error": {"code": code, "message": message}}, headers=headers)


#: A sync handler raised, or its execution broke a limit: what it was is the owner's
#: to read in the instance's log, not the sender's.
HANDLER_FAILED = error_answer(
    500,
    "handler_failed",
    "the webhook's handler failed; its owner can see why in the instance's log",
)
#: The handler ran past the response deadline (or its own timeout) and was stopped.
DEADLINE_PASSED = error_answer(
    504,
    "deadline_exceeded",
    "the webhook's handler did not answer in time; its owner can see it in the instance's log",
)


def handler_answer(value: Any) -> Answer:
    """The answer a sync handler's return value stands for; ``HandlerReturnError``
    when it stands for none."""
    if isinstance(value, tuple):
        if len(value) not in (2, 3):
            raise HandlerReturnError(
                f"a webhook handler may return a tuple (status, body) or (status, body, "
                f"headers), not one of {len(value)} items"
            )
        status = _status(value[0])
        content_type, body = _body(value[1], "the body of the returned (status, body)")
        headers = _headers(value[2]) if len(value) == 3 else []
        if status in _BODILESS and body:
            raise HandlerReturnError(f"status {status} has no body, but the handler gave one")
        typed = any(name.lower() == "content-type" for name, _ in headers)
        if content_type is not None and status not in _BODILESS and not typed:
            headers.insert(0, ("content-type", content_type))
        return Answer(status, tuple(headers), body)
    content_type, body = _body(value, "the return value")
    if content_type is None:
        return Answer(204, (), b"")
    return Answer(200, (("content-type", content_type),), body)


def _body(value: Any, what: str) -> tuple[str | None, bytes]:
    """(content type, bytes) of a body; (None, b"") for None."""
    if value is None:
        return None, b""
    if isinstance(value, bytes):
        return OCTETS, value
    if isinstance(value, str):
        return TEXT, _utf8(value, what)
    if isinstance(value, dict | list):
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise HandlerReturnError(f"{what} cannot be sent as JSON: {exc}") from None
        except RecursionError:
            raise HandlerReturnError(f"{what} is nested too deeply to send as JSON") from None
        return JSON, _utf8(text, what)
    raise HandlerReturnError(
        f"{what} is a {type(value).__name__}; a webhook handler returns a dict or list "
        "(JSON), a str (text), bytes, None (204), or (status, body[, headers])"
    )


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise HandlerReturnError(
            f"{what} holds {text[exc.start : exc.end]!r}, which is no character UTF-8 can send"
        ) from None


def _status(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise HandlerReturnError(
            f"the status of the returned (status, body) is {value!r}, not a whole number"
        )
    if not 200 <= value <= 599:
        raise HandlerReturnError(
            f"the status of the returned (status, body) is {value}; it must be from 200 to 599"
        )
    return value


def _headers(value: Any) -> list[tuple[str, str]]:
    """The returned headers (a mapping, or a sequence of (name, value) pairs), checked."""
    pairs: list[Any]
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, list | tuple):
        pairs = list(value)
    else:
        raise HandlerReturnError(
            f"the headers of the returned (status, body, headers) are a "
            f"{type(value).__name__}, not a dict or a list of (name, value) pairs"
        )
    checked: list[tuple[str, str]] = []
    for pair in pairs:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise HandlerReturnError(f"the returned header {pair!r} is not a (name, value) pair")
        name, field_value = pair
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise HandlerReturnError(f"the returned header name {name!r} is not a valid name")
        if name.lower() in _FRAMING:
            raise HandlerReturnError(
                f"the returned header {name} is the server's to set, not the handler's"
            )
        if not isinstance(field_value, str) or not _FIELD_VALUE.fullmatch(field_value):
            raise HandlerReturnError(
                f"the value of the returned header {name} is {field_value!r}: a header value "
                "is a str of Latin-1 characters without line breaks or control characters"
            )
        checked.append((name, field_value))
    return checked
