"""An agent's ``network = [...]``: which URLs its fetches may reach.

A URL is matched on its parsed parts (scheme, host, port, path), the very
``httpx.URL`` the host then sends, never as a string: a glob over the text would
let ``https://api.example.com.evil.net/`` or ``https://api.example.com@evil.net/``
through ``https://api.example.com/*``. The rules, with examples, are in
docs/fetch.md; in short:

- ``*`` allows every http and https URL.
- ``SCHEME://HOST[:PORT][PATH]``: the scheme exactly (http or https); the port
  exactly, the scheme's default when none is written; the host exactly, or with
  ``*.`` in front, any host *below* it (``*.example.com`` is not ``example.com``).
- No path, or ``/``, allows every path; ``/v1/*`` allows ``/v1`` and everything
  under ``/v1/``; any other path allows that path only. Queries never matter.

A path is matched both as sent (percent-encoded, dot segments removed) and as a
server that decodes it would read it; both must be inside the pattern, so
``/v1/%2e%2e/admin`` is not under ``/v1/``.
"""

from __future__ import annotations

import functools
import string
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from corral.errors import NetworkPatternError

DEFAULT_PORTS = {"http": 80, "https": 443}
_EXAMPLES = "'*', 'https://*.example.com' or 'https://api.example.com/v1/*'"
# What a pattern's path may hold: characters that travel unencoded in a URL path.
_PATH_CHARS = frozenset(string.ascii_letters + string.digits + "-._~!$&'()+,;=:@/")


_Refusal = Callable[[str], NetworkPatternError]
"""Builds the error for one pattern from the reason it is refused."""


@dataclass(frozen=True)
class _Pattern:
    scheme: str
    host: str
    subdomains: bool  # ``*.host``: hosts below ``host``, not ``host`` itself
    port: int
    path: str | None  # None: every path
    under: bool  # the path and everything below it, not the path alone

    def matches(self, scheme: str, host: str, port: int, paths: tuple[str, str]) -> bool:
        if scheme != self.scheme or port != self.port:
            return False
        if not (host.endswith("." + self.host) if self.subdomains else host == self.host):
            return False
        if self.path is None:
            return True
        if self.under:
            return all(p == self.path or p.startswith(self.path + "/") for p in paths)
        return all(p == self.path for p in paths)


@dataclass(frozen=True)
class AllowList:
    patterns: tuple[str, ...]
    _parsed: tuple[_Pattern, ...]
    _anything: bool

    @classmethod
    def parse(cls, patterns: object) -> AllowList:
        """The checked list; ``NetworkPatternError`` says what is wrong and how to write it."""
        if not isinstance(patterns, list | tuple) or not all(isinstance(p, str) for p in patterns):
            raise NetworkPatternError(
                f"network must be a list of URL patterns such as {_EXAMPLES}, got {patterns!r}"
            )
        return _parse(tuple(patterns))

    def check(self, url: httpx.URL, *, redirected_from: httpx.URL | None = None) -> None:
        """Return if the URL may be fetched; else ``PermissionError`` saying how to allow it."""
        if self.allows(url):
            return
        how = (
            f"{display(redirected_from)} redirected to {display(url)}"
            if redirected_from is not None
            else f"fetching {display(url)}"
        )
        if not self.patterns:
            listed = "this agent declares no network allow-list, so it may fetch nothing"
        else:
            listed = (
                f"no pattern of this agent's network allow-list {list(self.patterns)!r} allows it"
            )
        raise PermissionError(
            f"{how} is not allowed: {listed}; add a pattern such as "
            f"'{suggestion(url)}' to network = [...] on the agent class and deploy again"
        )

    def allows(self, url: httpx.URL) -> bool:
        if url.scheme not in DEFAULT_PORTS or not url.raw_host:
            return False
        if self._anything:
            return True
        host = url.raw_host.decode("ascii").lower().rstrip(".")
        port = DEFAULT_PORTS[url.scheme] if url.port is None else url.port  # 0 is not 443
        paths = (url.raw_path.split(b"?", 1)[0].decode("ascii"), _resolved(url.path))
        return any(p.matches(url.scheme, host, port, paths) for p in self._parsed)


@functools.lru_cache(maxsize=1024)
def _parse(patterns: tuple[str, ...]) -> AllowList:
    # Cached: the executor reads a version's list for every execution.
    parsed = [_pattern(text) for text in patterns if text != "*"]
    return AllowList(patterns, tuple(parsed), "*" in patterns)


def _pattern(text: str) -> _Pattern:
    def bad(reason: str) -> NetworkPatternError:
        return NetworkPatternError(
            f"network pattern {text!r} is not valid: {reason}; patterns look like {_EXAMPLES}"
        )

    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise bad("it does not start with http:// or https://")
    if scheme not in DEFAULT_PORTS:
        raise bad("only http and https URLs can be fetched")
    if any(c in text for c in "?#") or any(c.isspace() for c in text):
        raise bad("a pattern has no query, fragment or spaces")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        raise bad("a pattern names no user or password")
    host, port = _split_authority(authority, bad)
    subdomains = host.startswith("*.")
    if subdomains:
        host = host[2:]
    if "*" in host:
        raise bad("'*' may only stand for the leftmost labels of a host, as in *.example.com")
    host = _canonical_host(scheme, host, bad)
    if subdomains and (":" in host or host.rsplit(".", 1)[-1].isdigit()):
        raise bad("'*.' goes before a domain name, not an IP address")
    path = slash + path
    under = path.endswith("/*")
    if under:
        path = path[:-2]
    if "*" in path:
        raise bad("'*' may only end a path, as in /v1/*")
    if not set(path) <= _PATH_CHARS:
        raise bad("write the path without percent-escapes or characters a URL would escape")
    if path and _resolved(path) != path:
        raise bad("the path has '.' or '..' segments")
    if path in ("", "/"):
        return _Pattern(scheme, host, subdomains, port or DEFAULT_PORTS[scheme], None, True)
    return _Pattern(scheme, host, subdomains, port or DEFAULT_PORTS[scheme], path, under)


def _split_authority(authority: str, bad: _Refusal) -> tuple[str, int | None]:
    if authority.startswith("["):  # an IPv6 literal: [::1]:8080
        host, _, after = authority.partition("]")
        host += "]"
        if after and not after.startswith(":"):
            raise bad("text after the IPv6 address")
        port_text = after[1:] if after else None
    elif ":" in authority:
        host, _, port_text = authority.rpartition(":")
    else:
        host, port_text = authority, None
    if not host:
        raise bad("it names no host")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise bad(f"the port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def _canonical_host(scheme: str, host: str, bad: _Refusal) -> str:
    """The host as a URL's ``raw_host`` spells it: lower case, IDNA, no trailing dot."""
    try:
        parsed = httpx.URL(f"{scheme}://{host}/")
    except httpx.InvalidURL as exc:
        raise bad(f"the host is not valid ({exc})") from None
    raw = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if not raw:
        raise bad("it names no host")
    return raw


def _resolved(path: str) -> str:
    """The path as a server that decodes it would read it: ``.`` and ``..`` applied,
    backslashes taken as slashes (some servers do), empty segments kept."""
    segments: list[str] = []
    for segment in path.replace("\\", "/").split("/")[1:]:
        if segment == "..":
            if segments:
                segments.pop()
        elif segment != ".":
            segments.append(segment)
    return "/" + "/".join(segments)


def display(url: httpx.URL) -> str:
    """The URL for messages and logs: without user, password or query (they may hold secrets)."""
    return str(url.copy_with(userinfo=b"", query=None, fragment=None))


def suggestion(url: httpx.URL) -> str:
    """A pattern that would allow ``url``'s host: what to add to the list."""
    if url.scheme not in DEFAULT_PORTS or not url.raw_host:
        return "https://api.example.com/*"
    netloc = url.netloc.decode("ascii").rpartition("@")[2]
    return f"{url.scheme}://{netloc}/*"
