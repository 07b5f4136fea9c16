"""The network allow-list: URLs match on their parsed parts, never as text (docs/fetch.md)."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.errors import NetworkPatternError
from corral.runtime.network.allowlist import AllowList


def allowed(pattern: str, url: str) -> bool:
    return AllowList.parse([pattern]).allows(httpx.URL(url))


@pytest.mark.parametrize(
    ("pattern", "url"),
    [
        ("*", "https://anything.example.net:8443/x?y=1"),
        ("*", "http://127.0.0.1:8765/items"),
        ("https://api.example.com/*", "https://api.example.com/"),
        ("https://api.example.com/*", "https://api.example.com"),
        ("https://api.example.com/*", "https://API.Example.com/v1/items?page=2"),
        ("https://api.example.com/*", "https://api.example.com:443/x"),  # the default port
        ("https://api.example.com/*", "https://api.example.com./x"),  # the same host
        ("https://api.example.com/*", "https://user:secret@api.example.com/x"),
        ("https://api.example.com", "https://api.example.com/any/path"),
        ("https://*.example.com", "https://api.example.com/x"),
        ("https://*.example.com", "https://a.b.example.com/x"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/items/7"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/a%2Fb"),
        ("https://api.example.com/v1/*", "https://api.example.com/v2/../v1/x"),
        ("http://127.0.0.1:8765/items", "http://127.0.0.1:8765/items?page=3"),
        ("http://[::1]:8080/*", "http://[::1]:8080/x"),
        ("https://bücher.example/*", "https://xn--bcher-kva.example/x"),
    ],
)
def test_allowed(pattern: str, url: str) -> None:
    assert allowed(pattern, url)


@pytest.mark.parametrize(
    ("pattern", "url"),
    [
        # Another host that starts with the allowed one, or names it as a user.
        ("https://api.example.com/*", "https://api.example.com.evil.net/"),
        ("https://api.example.com/*", "https://api.example.com@evil.net/"),
        ("https://api.example.com/*", "https://api.example.com:x@evil.net/"),
        ("https://api.example.com/*", "https://api.example.com\\@evil.net/"),
        ("https://api.example.com/*", "https://evil.net/https://api.example.com/"),
        ("https://api.example.com/*", "https://evil.net/?https://api.example.com/"),
        ("https://api.example.com/*", "https://evilapi.example.com/"),
        # Another scheme or port.
        ("https://api.example.com/*", "http://api.example.com/"),
        ("https://api.example.com/*", "https://api.example.com:8443/"),
        ("https://api.example.com/*", "https://api.example.com:0/"),
        ("http://127.0.0.1:8765/*", "http://127.0.0.1/"),
        ("http://127.0.0.1:8765/*", "http://localhost:8765/"),
        # Subdomains only, and whole labels.
        ("https://*.example.com", "https://example.com/"),
        ("https://*.example.com", "https://badexample.com/"),
        ("https://*.example.com", "https://example.com.evil.net/"),
        # Paths: whole segments, as sent and as a decoding server reads them.
        ("https://api.example.com/v1/*", "https://api.example.com/v1beta/x"),
        ("https://api.example.com/v1/*", "https://api.example.com/v2/"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/../admin"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/%2e%2e/admin"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/..%2fadmin"),
        ("https://api.example.com/v1/*", "https://api.example.com/v1/..%5cadmin"),
        ("https://api.example.com/v1/*", "https://api.example.com/%76%31/x"),
        ("http://127.0.0.1:8765/items", "http://127.0.0.1:8765/items/1"),
        ("http://127.0.0.1:8765/items", "http://127.0.0.1:8765/"),
        # Not http.
        ("*", "ftp://api.example.com/"),
        ("*", "file:///etc/passwd"),
    ],
)
def test_refused(pattern: str, url: str) -> None:
    assert not allowed(pattern, url)


def test_an_empty_list_allows_nothing() -> None:
    assert not AllowList.parse([]).allows(httpx.URL("https://example.com/"))


LEFTMOST = "'*' may only stand for the leftmost labels of a host, as in *.example.com"


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("api.example.com/*", "it does not start with http:// or https://"),
        ("ftp://files.example.com/*", "only http and https URLs can be fetched"),
        ("https://", "it names no host"),
        ("https://*", LEFTMOST),
        ("https://api.*.com", LEFTMOST),
        ("https://*example.com", LEFTMOST),
        ("https://*.10.0.0.1", "'*.' goes before a domain name, not an IP address"),
        ("https://api.example.com:99999/", "the port '99999' is not a number from 1 to 65535"),
        ("https://user@api.example.com/", "a pattern names no user or password"),
        ("https://api.example.com/v1?key=1", "a pattern has no query, fragment or spaces"),
        ("https://api.example.com/v*", "'*' may only end a path, as in /v1/*"),
        ("https://api.example.com/*/items", "'*' may only end a path, as in /v1/*"),
        (
            "https://api.example.com/a%20b",
            "write the path without percent-escapes or characters a URL would escape",
        ),
        ("https://api.example.com/v1/../admin/*", "the path has '.' or '..' segments"),
    ],
)
def test_bad_patterns_are_refused_with_the_reason(pattern: str, reason: str) -> None:
    with pytest.raises(NetworkPatternError) as refused:
        AllowList.parse([pattern])
    assert str(refused.value) == (
        f"network pattern {pattern!r} is not valid: {reason}; patterns look like '*', "
        "'https://*.example.com' or 'https://api.example.com/v1/*'"
    )


@pytest.mark.parametrize("value", ["https://api.example.com/*", None, [1], {"a": 1}])
def test_network_must_be_a_list_of_str(value: object) -> None:
    with pytest.raises(NetworkPatternError, match="network must be a list of URL patterns"):
        AllowList.parse(value)


def test_a_refusal_names_the_url_the_list_and_the_fix() -> None:
    allow = AllowList.parse(["https://api.example.com/v1/*"])
    with pytest.raises(PermissionError) as refused:
        allow.check(httpx.URL("https://user:pw@api.example.com/v2/x?token=secret"))
    assert str(refused.value) == (
        "fetching https://api.example.com/v2/x is not allowed: no pattern of this agent's "
        "network allow-list ['https://api.example.com/v1/*'] allows it; add a pattern such as "
        "'https://api.example.com/*' to network = [...] on the agent class and deploy again"
    )
    with pytest.raises(PermissionError, match="this agent declares no network allow-list"):
        AllowList.parse([]).check(httpx.URL("https://example.com/"))


# Whatever follows the allowed origin in the text, the URL is only allowed when the
# host the request would go to is that host, on that scheme and port.
SUFFIX = st.text(alphabet="/@:.?#\\%2eExample-com0123456789", max_size=40)


@given(SUFFIX)
def test_a_url_is_allowed_only_for_the_host_it_goes_to(suffix: str) -> None:
    try:
        url = httpx.URL("https://api.example.com" + suffix)
    except httpx.InvalidURL:
        return
    if AllowList.parse(["https://api.example.com/*"]).allows(url):
        assert url.scheme == "https"
        assert url.raw_host.rstrip(b".") == b"api.example.com"
        assert url.port in (None, 443)


@given(SUFFIX)
def test_a_path_pattern_allows_only_urls_under_it(suffix: str) -> None:
    try:
        url = httpx.URL("https://api.example.com/v1" + suffix)
    except httpx.InvalidURL:
        return
    if AllowList.parse(["https://api.example.com/v1/*"]).allows(url):
        assert url.raw_host == b"api.example.com"
        path = url.raw_path.split(b"?")[0]
        assert path == b"/v1" or path.startswith(b"/v1/")
        assert ".." not in url.path.replace("\\", "/").split("/")
