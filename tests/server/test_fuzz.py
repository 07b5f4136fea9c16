"""No request to ``/hooks`` gets a 5xx (SPEC §1.3: a 5xx means Corral failed).

Hypothesis writes raw HTTP/1.1 requests (so that they can lie: a Content-Length
that is not the body's, a chunked body that is not chunked, methods and paths no
client library would send) to a real ``corral serve`` process, on SQLite and on
PostgreSQL, with live webhooks among the tokens it picks (async, sync, one with a
small cap, one verified). Every answer's status must be under 500, and the
server must log no traceback. The test prints how many requests it sent.
"""

from __future__ import annotations

import re
import signal
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.conftest import Process, prepare_hooks, start_server

EXAMPLES = 500
STATUS = re.compile(rb"^HTTP/1\.[01] (\d{3}) ", re.MULTILINE)

_TOKEN_TEXT = st.text(
    alphabet=st.characters(codec="latin-1", exclude_characters="\r\n #?"), max_size=60
)
_LATIN = st.text(alphabet=st.characters(codec="latin-1"), max_size=40)
_HEADER_NAMES = st.sampled_from(
    [
        "Content-Type",
        "webhook-id",
        "X-GitHub-Delivery",
        "Idempotency-Key",
        "X-Hub-Signature-256",
        "webhook-signature",
        "webhook-timestamp",
        "Stripe-Signature",
        "Transfer-Encoding",
        "Expect",
        "X-Anything",
    ]
)
_HEADER_VALUES = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/vnd.github+json; charset=utf-8",
            "text/plain",
            "application/octet-stream",
            "chunked",
            "100-continue",
            "sha256=00",
            "v1,AAAA",
            "t=1,v1=00",
            "",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0x01, max_codepoint=0xFF), max_size=30),
)


def _write(request: dict[str, object]) -> bytes:
    """The raw bytes of one request as the strategy described it."""
    body: bytes = request["body"]  # type: ignore[assignment]
    lines = [f"{request['method']} {request['target']} HTTP/1.1", "Host: fuzz"]
    lines += [f"{name}: {value}" for name, value in request["headers"]]  # type: ignore[attr-defined]
    length = request["length"]
    if length == "true":
        lines.append(f"Content-Length: {len(body)}")
    elif isinstance(length, int):
        lines.append(f"Content-Length: {length}")
    lines.append("Connection: close")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + body


def _send(address: tuple[str, int], raw: bytes, *, lies_longer: bool) -> list[int]:
    """Send one request; the statuses of the answers read until the server closes."""
    with socket.create_connection(address, timeout=30) as conn:
        conn.sendall(raw)
        if lies_longer:  # the server waits for bytes that never come: say there are none
            conn.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return [int(status) for status in STATUS.findall(received)]


def _mostly(
    common: st.SearchStrategy[object], odd: st.SearchStrategy[object], *, rare: int = 2
) -> st.SearchStrategy[object]:
    """``odd`` in ``rare`` draws of ten, else ``common``."""
    return st.integers(0, 9).flatmap(lambda n: odd if n < rare else common)


def _requests(paths: list[str]) -> st.SearchStrategy[dict[str, object]]:
    # Mostly what a parser lets through, so that most requests reach Corral's code.
    known = ["POST", "PUT", "PATCH", "GET", "DELETE", "HEAD", "OPTIONS", "TRACE"]
    method = _mostly(
        st.sampled_from(known),
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=10),
    )
    token = _mostly(
        st.sampled_from(paths),
        st.one_of(
            _TOKEN_TEXT.map(lambda text: "/hooks/" + quote(text, safe="")),
            _TOKEN_TEXT.map(lambda text: "/hooks/" + text.replace("%", "%25")),
            st.sampled_from(["/hooks/", "/hooks", "/", "/healthz", "/hooks/a/b", "/hooks/%00"]),
        ),
        rare=4,
    )
    query = st.one_of(
        st.just(""),
        # Not ?shape=raise: a sync handler that raises is a 500 by design (SPEC §1.3).
        st.sampled_from(["?shape=dict", "?shape=none", "?shape=pair", "?a=1&a=2"]),
        st.text(alphabet="abc=&%0129+;", max_size=30).map(lambda q: "?" + q),
    )
    return st.fixed_dictionaries(
        {
            "method": method,
            "target": st.tuples(token, query).map("".join),
            "headers": _mostly(
                st.lists(st.tuples(_HEADER_NAMES, _HEADER_VALUES), max_size=4),
                st.lists(st.tuples(_LATIN.map(lambda t: t[:20]), _LATIN), max_size=3)
                .filter(lambda pairs: all(not set("\r\n:") & set(n + v) for n, v in pairs))
                .map(lambda pairs: [(name or "X", value) for name, value in pairs]),
            ),
            "body": st.one_of(
                st.binary(max_size=400),
                st.sampled_from([b"{}", b'{"a": [1, 2]}', b"{", b"\xff\xfe"]),
            ),
            # Mostly the truth, so that most requests get past the parser to Corral.
            "length": st.one_of(
                st.sampled_from(["true", "true", "true", "true", "none"]),
                st.integers(min_value=0, max_value=2000),
            ),
        }
    )


def test_no_request_to_hooks_gets_a_5xx(
    db_url: str, processes: Callable[..., Process], tmp_path: Path
) -> None:
    paths = list(prepare_hooks(db_url, tmp_path, "async", "sync", "small", "github").values())
    server, url = start_server(processes, db_url)
    address = urlsplit(url)
    target = (address.hostname or "", address.port or 0)
    statuses: Counter[int | None] = Counter()
    sent = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(request=_requests(paths))
    def send(request: dict[str, object]) -> None:
        nonlocal sent
        sent += 1
        lies_longer = isinstance(request["length"], int) and request["length"] > len(
            request["body"]  # type: ignore[arg-type]
        )
        answers = _send(target, _write(request), lies_longer=lies_longer)
        statuses.update(answers or [None])
        assert all(status < 500 for status in answers), (request, answers)

    send()
    fives = sum(n for status, n in statuses.items() if status is not None and status >= 500)
    print(
        f"\nfuzzed /hooks with {sent} requests: {fives} answered 5xx; the statuses of "
        f"every answer (None: the server closed without one): {dict(statuses)}"
    )
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert "Traceback" not in "".join(server.stderr), "".join(server.stderr)
    assert fives == 0
    assert sent >= EXAMPLES
