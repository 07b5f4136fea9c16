"""``self.fetch`` as agent code sees it: one request out, one response back.

The sandbox has no sockets; the host does the HTTP. This side only turns the
author's arguments into one tool request (body encoded here, so a mistake raises
at the author's line) and the host's reply into a :class:`Response`. The host
checks every field again: only its checks hold against a hostile agent.
"""

from __future__ import annotations

import json as jsonlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

#: A request body crosses the sandbox channel in one frame (at most 4 MiB) with the rest.
MAX_REQUEST_BODY = 2 * 1024 * 1024

Body = str | bytes | bytearray | Mapping[str, Any] | list[tuple[str, Any]]


def request(
    url: str,
    method: str,
    headers: Mapping[str, str] | list[tuple[str, str]] | None,
    json: Any,
    data: Body | None,
    timeout_s: float | None,
) -> dict[str, Any]:
    """The tool request for one fetch: what the host needs, already encoded."""
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    if not isinstance(method, str):
        raise TypeError(f"method must be a str such as 'GET', got {type(method).__name__}")
    pairs = _header_pairs(headers)
    if json is not None and data is not None:
        raise ValueError("pass json= or data=, not both: they are two ways to give the body")
    body: bytes | None = None
    content_type = None
    if json is not None:
        body = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":")).encode()
        content_type = "application/json"
    elif isinstance(data, str):
        body = data.encode()
        content_type = "text/plain; charset=utf-8"
    elif isinstance(data, bytes | bytearray):
        body = bytes(data)
    elif data is not None:
        body = urlencode(data).encode()
        content_type = "application/x-www-form-urlencoded"
    if body is not None and len(body) > MAX_REQUEST_BODY:
        raise ValueError(
            f"the request body is {len(body)} bytes; a fetch may send at most "
            f"{MAX_REQUEST_BODY} (send it in parts)"
        )
    if content_type and not any(name.lower() == "content-type" for name, _ in pairs):
        pairs.append(["content-type", content_type])
    if timeout_s is not None and (
        type(timeout_s) not in (int, float) or not math.isfinite(timeout_s) or timeout_s <= 0
    ):
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    return {
        "url": url,
        "method": method.upper(),
        "headers": pairs,
        "body": body,
        "timeout_s": timeout_s,
    }


def _header_pairs(
    headers: Mapping[str, str] | list[tuple[str, str]] | None,
) -> list[list[str]]:
    items = headers.items() if isinstance(headers, Mapping) else headers or []
    pairs = []
    for item in items:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise TypeError(
                f"headers must be a dict or a list of (name, value) pairs, got {item!r}"
            )
        name, value = item
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"header names and values must be str, got {name!r}: {value!r}")
        pairs.append([name, value])
    return pairs


class Headers(Mapping[str, str]):
    """Response headers: names are case-insensitive; a repeated header reads as one
    value joined by ``", "`` (``get_list`` keeps them apart, e.g. for ``set-cookie``)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs
        joined: dict[str, str] = {}
        for name, value in pairs:
            key = name.lower()
            joined[key] = f"{joined[key]}, {value}" if key in joined else value
        self._joined = joined

    def __getitem__(self, name: str) -> str:
        return self._joined[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._joined)

    def __len__(self) -> int:
        return len(self._joined)

    def get_list(self, name: str) -> list[str]:
        key = name.lower()
        return [value for n, value in self._pairs if n.lower() == key]

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"


@dataclass(frozen=True)
class Response:
    """What a fetch returned. Any status is a response: check ``status`` yourself."""

    status: int
    headers: Headers
    content: bytes
    #: Where the response came from: the fetched URL, or the last redirect's target.
    url: str

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> Response:
        pairs = [(str(name), str(value)) for name, value in reply["headers"]]
        return cls(int(reply["status"]), Headers(pairs), bytes(reply["content"]), str(reply["url"]))

    @property
    def text(self) -> str:
        """The body decoded with the charset the response names, else UTF-8."""
        charset = "utf-8"
        for param in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip("\"'")
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:  # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON; ``ValueError`` when it is not JSON."""
        return jsonlib.loads(self.content)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.url} ({len(self.content)} bytes)>"
