"""The host's side of ``self.fetch``: check, throttle, send, and bring back a bounded reply.

Sandboxed code has no sockets, so every outbound request is made here, in the
worker, after the instance's allow-list has said yes and the instance's rate
limit has given it a slot. One :class:`Fetcher` (one connection pool, one set of
buckets) serves every execution of a worker; :meth:`Fetcher.bind` gives each
execution the tool that knows its instance, its allow-list and its deadline.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from corral import __version__
from corral.errors import FetchError, FetchTimeout, RateLimited, ResponseTooLarge
from corral.runtime.metrics import Metrics
from corral.runtime.network.allowlist import AllowList, display
from corral.runtime.network.throttle import SystemTimer, Throttle, Timer
from corral.sandbox.protocol import MAX_FRAME

FetchTool = Callable[[list[Any]], Awaitable[dict[str, Any]]]
"""One execution's fetch: the tool request's arguments in, the reply for the SDK out."""

#: A response crosses the sandbox channel in one frame, with its headers.
MAX_RESPONSE_CEILING = MAX_FRAME - 256 * 1024
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Headers the runtime sets: ``host`` comes from the (checked) URL, the rest from the body.
RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REQUEST_FIELDS = {"url", "method", "headers", "body", "timeout_s"}


@dataclass(frozen=True)
class FetchConfig:
    """How much outbound traffic an instance may make (docs/fetch.md)."""

    #: Sustained requests a second per instance, after a burst of ``burst`` at once.
    rate_per_s: float = 10.0
    burst: int = 20
    #: A fetch's timeout unless it passes ``timeout_s``; never past the execution's end.
    timeout_s: float = 30.0
    #: Largest response body (after decompression) a fetch brings into the sandbox.
    max_response_bytes: int = 2 * 1024 * 1024
    #: Redirects followed per fetch, each checked against the allow-list.
    max_redirects: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.max_response_bytes <= MAX_RESPONSE_CEILING:
            raise ValueError(
                f"max_response_bytes must be from 1 to {MAX_RESPONSE_CEILING} (a response "
                f"crosses the sandbox channel in one frame), got {self.max_response_bytes}"
            )
        if not self.timeout_s > 0 or self.max_redirects < 0:
            raise ValueError("timeout_s must be positive and max_redirects not negative")


@dataclass(frozen=True)
class _Request:
    url: httpx.URL
    method: str
    headers: list[tuple[str, str]]
    body: bytes | None
    timeout_s: float | None


class Fetcher:
    """Outbound HTTP for every execution of a worker; close it when the worker stops."""

    def __init__(
        self,
        config: FetchConfig | None = None,
        *,
        timer: Timer | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """``metrics``: where each fetch is counted by outcome (the process's own)."""
        self.config = config or FetchConfig()
        self._metrics = metrics or Metrics()
        self._timer = timer or SystemTimer()
        self._throttle = Throttle(self.config.rate_per_s, self.config.burst, self._timer)
        # Redirects are followed by hand, so each hop meets the allow-list; timeouts
        # come from the fetch's own deadline. One client serves every instance, so
        # it keeps no cookies: what one response set must not ride along on another
        # instance's request (an agent that needs a cookie sends the header itself).
        # The worker's proxy and CA settings (HTTPS_PROXY, SSL_CERT_FILE, ...) apply.
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            timeout=None,
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
            headers={"user-agent": f"corral/{__version__}"},
        )

    def bind(self, instance: str, allow_list: AllowList, *, time_left_s: float) -> FetchTool:
        """The fetch tool of one execution, which ends ``time_left_s`` from now."""
        deadline = self._timer.now() + time_left_s

        async def fetch(args: list[Any]) -> dict[str, Any]:
            try:
                if len(args) != 1:
                    raise TypeError(f"network.fetch takes one request, got {len(args)} arguments")
                reply = await self._fetch(instance, allow_list, deadline, _checked(args[0]))
            except BaseException as exc:
                self._metrics.fetched(_outcome(exc))
                raise
            self._metrics.fetched("ok")
            return reply

        return fetch

    async def close(self) -> None:
        await self._client.aclose()

    async def _fetch(
        self, instance: str, allow_list: AllowList, deadline: float, request: _Request
    ) -> dict[str, Any]:
        allow_list.check(request.url)  # before the rate limit: a refusal costs no slot
        url = display(request.url)
        timeout = min(request.timeout_s or self.config.timeout_s, deadline - self._timer.now())
        if timeout <= 0:
            raise FetchTimeout(f"no time is left in this execution to fetch {url}")
        waited = await self._throttle.take(instance, within_s=timeout)
        try:
            async with asyncio.timeout(timeout - waited):
                return await self._send(request, allow_list)
        except TimeoutError:
            raise FetchTimeout(
                f"fetching {url} took longer than its timeout of {timeout:.3g} s "
                "(pass timeout_s to wait longer, within what is left of the execution)"
            ) from None
        except httpx.HTTPError as exc:  # every transport failure
            if isinstance(exc, httpx.ConnectError):
                raise FetchError(f"could not connect to {url} ({_root_cause(exc)})") from None
            raise FetchError(f"fetching {url} failed ({_root_cause(exc)})") from None

    async def _send(self, request: _Request, allow_list: AllowList) -> dict[str, Any]:
        sent = self._client.build_request(
            request.method, request.url, headers=request.headers, content=request.body
        )
        for _ in range(self.config.max_redirects + 1):
            response = await self._client.send(sent, stream=True)
            redirect = response.next_request
            try:
                if redirect is None:
                    return {
                        "status": response.status_code,
                        "headers": [list(pair) for pair in response.headers.multi_items()],
                        "content": await self._body(response),
                        "url": str(response.url),
                    }
            finally:
                await response.aclose()
            allow_list.check(redirect.url, redirected_from=sent.url)
            sent = redirect
        raise FetchError(
            f"fetching {display(request.url)} was redirected more than "
            f"{self.config.max_redirects} times"
        )

    async def _body(self, response: httpx.Response) -> bytes:
        """The body, decompressed, refused as soon as it is known to be over the limit."""
        limit = self.config.max_response_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(response.url, limit)
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if received > limit:
                raise _too_large(response.url, limit)
            chunks.append(chunk)
        return b"".join(chunks)


def _outcome(exc: BaseException) -> str:
    """A failed fetch's outcome, as ``corral_fetch_requests_total`` labels it."""
    if isinstance(exc, PermissionError):
        return "blocked"  # the allow-list refused the URL, or a redirect's
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, FetchTimeout):
        return "timeout"
    if isinstance(exc, ResponseTooLarge):
        return "too_large"
    if isinstance(exc, TypeError | ValueError):
        return "invalid"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"  # its execution ended first (a timeout, a stop)
    return "error"  # no connection, a broken one, too many redirects


def _root_cause(exc: BaseException) -> str:
    """What went wrong at the bottom: "Connection refused", not "All connection attempts failed"."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return os.strerror(exc.errno)
    if isinstance(exc, OSError) and exc.strerror:  # name resolution: negative errno
        return exc.strerror
    return str(exc) or type(exc).__name__


def _too_large(url: httpx.URL, limit: int) -> ResponseTooLarge:
    return ResponseTooLarge(
        f"the response from {display(url)} is over {limit} bytes, the most a fetch may "
        "bring back (the operator's FetchConfig.max_response_bytes); ask the API for "
        "smaller pages"
    )


def _checked(raw: object) -> _Request:
    """The request the sandbox sent, every field checked: the sandbox may be hostile."""
    if type(raw) is not dict or set(raw) != _REQUEST_FIELDS:
        raise TypeError(f"a fetch request is a dict of {sorted(_REQUEST_FIELDS)}")
    url, method, headers = raw["url"], raw["method"], raw["headers"]
    body, timeout_s = raw["body"], raw["timeout_s"]
    if type(url) is not str:
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"{url!r} is not a URL that can be fetched: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    if type(method) is not str or method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(sorted(METHODS))}, got {method!r}")
    return _Request(parsed, method, _headers(headers), _body(body), _timeout(timeout_s))


def _headers(headers: object) -> list[tuple[str, str]]:
    if type(headers) is not list:
        raise TypeError("headers must be a list of [name, value] pairs")
    checked = []
    for pair in headers:
        if type(pair) is not list or len(pair) != 2 or not all(type(s) is str for s in pair):
            raise TypeError(f"a header is a [name, value] pair of str, got {pair!r}")
        name, value = pair
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"the value of header {name!r} has a line break or NUL")
        if name.lower() in RESERVED_HEADERS:
            raise ValueError(f"the {name} header is set by the runtime from the URL and body")
        checked.append((name, value))
    return checked


def _body(body: object) -> bytes | None:
    if body is not None and type(body) is not bytes:
        raise TypeError(f"a request body must be bytes, got {type(body).__name__}")
    return body


def _timeout(timeout_s: object) -> float | None:
    if timeout_s is None:
        return None
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not math.isfinite(timeout_s)
        or timeout_s <= 0
    ):
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    return float(timeout_s)
