"""``self.fetch`` end to end (SPEC §1.3): agents in the real sandbox, run by the worker,
fetching from a real HTTP server on 127.0.0.1 that records every request it receives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from corral import codec
from corral.config import RuntimeConfig
from corral.errors import AgentCodeError
from corral.runtime.describe import describe_code
from corral.runtime.network.fetch import FetchConfig, Fetcher
from corral.sdk.operations import Op
from tests.runtime.conftest import Runtime, RuntimeFactory
from tests.support import FakeTimer, closed_port

#: How many fetches the concurrency test sends at once; the server answers none
#: of them until all have arrived.
TOGETHER = 5


class Site:
    """A local HTTP server with the routes these tests need, keeping a log of requests.

    Routes go by the last path segment, so ``/ok`` and ``/allowed/ok`` are the same.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.together = threading.Barrier(TOGETHER, timeout=10)
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site.handle(self)

            def do_POST(self) -> None:
                site.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        self.requests.append((request.command, request.path))
        url = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        route = url.path.rsplit("/", 1)[-1]
        if route == "ok":
            self.answer(request, 200, json.dumps({"hello": "world"}).encode())
        elif route == "echo":
            body = request.rfile.read(int(request.headers.get("content-length", 0)))
            echo = {
                "method": request.command,
                "headers": {k.lower(): v for k, v in request.headers.items()},
                "body": body.decode(),
            }
            self.answer(request, 200, json.dumps(echo).encode())
        elif route == "big":
            self.answer(request, 200, b"x" * int(query["n"]))
        elif route == "stream":  # no content-length: the body ends when the connection does
            request.send_response(200)
            request.end_headers()
            request.wfile.write(b"x" * int(query["n"]))
        elif route == "redirect":
            request.send_response(302)
            request.send_header("location", query["to"])
            request.send_header("content-length", "0")
            request.end_headers()
        elif route == "together":
            try:
                self.together.wait()
            except threading.BrokenBarrierError:
                self.answer(request, 503, b"not all requests arrived at once")
            else:
                self.answer(request, 200, b"together")
        elif route == "slow":
            time.sleep(float(query["s"]))
            with contextlib.suppress(BrokenPipeError):  # the client has given up by now
                self.answer(request, 200, b"late")
        else:
            self.answer(request, 404, b"no such route")

    @staticmethod
    def answer(request: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        request.send_response(status)
        request.send_header("content-type", "application/json")
        request.send_header("set-cookie", "session=site; Path=/")
        request.send_header("content-length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def running_site() -> Iterator[Site]:
    site = Site()
    yield site
    site.close()


@pytest.fixture
def site(running_site: Site) -> Site:
    running_site.requests.clear()
    running_site.together.reset()
    return running_site


AGENT = """
import asyncio
from corral import Agent, FetchError, RateLimited

class Caller(Agent):
    network = NETWORK
    limits = {"requests": 50}

    async def one(self, url):
        response = await self.fetch(url)
        return {
            "status": response.status,
            "json": response.json(),
            "type": response.headers["Content-Type"],
            "left": self.budget.requests_left,
        }

    async def post(self, url):
        response = await self.fetch(url, method="POST", json={"n": 1}, headers={"X-Test": "yes"})
        return response.json()

    async def attempt(self, urls, timeout_s=None):
        # What each fetch returned or raised, as the agent sees it.
        results = []
        for url in urls:
            try:
                response = await self.fetch(url, timeout_s=timeout_s)
            except Exception as exc:
                results.append({
                    "type": type(exc).__name__,
                    "message": str(exc),
                    "fetch_error": isinstance(exc, FetchError),
                    "connection_error": isinstance(exc, ConnectionError),
                    "timeout_error": isinstance(exc, TimeoutError),
                })
            else:
                results.append({"status": response.status, "url": response.url,
                                 "size": len(response.content)})
        return results

    async def together(self, url, n):
        responses = await asyncio.gather(*(self.fetch(url) for _ in range(n)))
        return [response.status for response in responses]

    async def burst(self, url):
        statuses = [(await self.fetch(url, timeout_s=5)).status for _ in range(3)]
        try:
            await self.fetch(url, timeout_s=0.5)
        except RateLimited as exc:
            return {"statuses": statuses, "limited": str(exc)}
        return {"statuses": statuses}
"""


def agent(network: list[str]) -> str:
    return AGENT.replace("NETWORK", repr(network))


async def start(runtime: Runtime, network: list[str], method: str, *args: Any) -> str:
    """Deploy an agent with this allow-list, install it and queue ``method(*args)``."""
    await runtime.deploy("caller", agent(network))
    instance = runtime.install("caller").id
    runtime.executor.queue.enqueue(
        instance, method, codec.encode(list(args)), now=runtime.executor.now()
    )
    return instance


async def call(runtime: Runtime, network: list[str], method: str, *args: Any) -> dict[str, Any]:
    """The record of one execution of ``method(*args)``, run by the worker."""
    instance = await start(runtime, network, method, *args)
    await runtime.idle()
    [record] = runtime.executions(instance, method)
    assert record["outcome"] == "ok", record["error"]
    return record


@pytest.mark.exercises(Op.FETCH)
async def test_a_fetch_is_one_request_and_returns_the_response(
    runtime: Runtime, site: Site
) -> None:
    record = await call(runtime, [f"{site.base}/*"], "one", f"{site.base}/ok")
    assert record["result"] == {
        "status": 200,
        "json": {"hello": "world"},
        "type": "application/json",
        "left": 49,
    }
    assert record["requests_used"] == 1
    assert site.requests == [("GET", "/ok")]


async def test_a_post_sends_its_json_body_and_headers(runtime: Runtime, site: Site) -> None:
    record = await call(runtime, [f"{site.base}/*"], "post", f"{site.base}/echo")
    echo = record["result"]
    assert echo["method"] == "POST"
    assert echo["body"] == '{"n":1}'
    assert echo["headers"]["content-type"] == "application/json"
    assert echo["headers"]["x-test"] == "yes"
    assert echo["headers"]["user-agent"].startswith("corral/")


async def test_no_cookie_set_for_one_fetch_rides_along_on_the_next(
    runtime: Runtime, site: Site
) -> None:
    await call(runtime, [f"{site.base}/*"], "one", f"{site.base}/ok")  # answers set-cookie
    record = await call(runtime, [f"{site.base}/*"], "post", f"{site.base}/echo")
    assert "cookie" not in record["result"]["headers"]


async def test_a_url_off_the_allow_list_is_refused_before_any_traffic(
    runtime: Runtime, site: Site
) -> None:
    allowed = f"{site.base}/allowed/*"
    refused = [
        f"{site.base}/secret",
        f"{site.base}/allowed/%2e%2e/secret",
        # Both reach this very server, under a name the list does not give.
        f"http://localhost:{site.port}/allowed/ok",
        f"http://127.0.0.1:{site.port}@localhost:{site.port}/allowed/ok",
    ]
    record = await call(runtime, [allowed], "attempt", [*refused, f"{site.base}/allowed/ok"])
    *errors, last = record["result"]
    assert {e["type"] for e in errors} == {"PermissionError"}
    assert errors[0]["message"] == (
        f"fetching {site.base}/secret is not allowed: no pattern of this agent's network "
        f"allow-list ['{allowed}'] allows it; add a pattern such as '{site.base}/*' to "
        "network = [...] on the agent class and deploy again"
    )
    assert last["status"] == 200  # the allowed one goes through
    assert site.requests == [("GET", "/allowed/ok")]  # and nothing else reached the server
    assert record["requests_used"] == len(refused) + 1  # a refused fetch is still a request


async def test_redirects_are_followed_only_within_the_allow_list(
    runtime: Runtime, site: Site
) -> None:
    allowed = f"{site.base}/allowed/*"
    urls = [
        f"{site.base}/allowed/redirect?to=/allowed/ok",
        f"{site.base}/allowed/redirect?to=/secret",
        f"{site.base}/allowed/redirect?to=http://localhost:{site.port}/allowed/ok",
    ]
    record = await call(runtime, [allowed], "attempt", urls)
    followed, to_secret, to_other_host = record["result"]
    assert followed == {"status": 200, "url": f"{site.base}/allowed/ok", "size": 18}
    assert to_secret["type"] == to_other_host["type"] == "PermissionError"
    assert to_secret["message"].startswith(
        f"{site.base}/allowed/redirect redirected to {site.base}/secret is not allowed: "
    )
    assert [path for _, path in site.requests] == [
        "/allowed/redirect?to=/allowed/ok",
        "/allowed/ok",
        "/allowed/redirect?to=/secret",
        f"/allowed/redirect?to=http://localhost:{site.port}/allowed/ok",
    ]


async def test_a_response_over_the_size_cap_is_refused(
    runtime_factory: RuntimeFactory, site: Site
) -> None:
    runtime = await runtime_factory(RuntimeConfig(fetch=FetchConfig(max_response_bytes=1000)))
    urls = [f"{site.base}/big?n=1000", f"{site.base}/big?n=1001", f"{site.base}/stream?n=5000"]
    record = await call(runtime, [f"{site.base}/*"], "attempt", urls)
    fits, declared, streamed = record["result"]
    assert fits == {"status": 200, "url": urls[0], "size": 1000}
    for refused, path in ((declared, "big"), (streamed, "stream")):
        assert refused["type"] == "ResponseTooLarge"
        assert refused["fetch_error"]
        assert refused["message"] == (
            f"the response from {site.base}/{path} is over 1000 bytes, the most a fetch may "
            "bring back (the operator's FetchConfig.max_response_bytes); ask the API for "
            "smaller pages"
        )


async def test_a_refused_connection_is_a_fetch_error_naming_the_url(runtime: Runtime) -> None:
    with closed_port() as port:
        closed = f"http://127.0.0.1:{port}"
        record = await call(runtime, [f"{closed}/*"], "attempt", [f"{closed}/items?page=1"])
    assert record["result"] == [
        {
            "type": "FetchError",
            "message": f"could not connect to {closed}/items (Connection refused)",
            "fetch_error": True,
            "connection_error": True,
            "timeout_error": False,
        }
    ]


async def test_a_slow_response_is_a_fetch_timeout(runtime: Runtime, site: Site) -> None:
    url = f"{site.base}/slow?s=5"
    record = await call(runtime, [f"{site.base}/*"], "attempt", [url], 0.3)
    [timeout] = record["result"]
    assert timeout["type"] == "FetchTimeout"
    assert timeout["timeout_error"]
    assert timeout["fetch_error"]
    assert timeout["message"].startswith(
        f"fetching {site.base}/slow took longer than its timeout of 0.3 s"
    )
    assert record["duration_ms"] < 5000


async def test_fetches_gathered_in_one_execution_run_at_once(runtime: Runtime, site: Site) -> None:
    # The server holds every request until all of them have arrived (or 10 s pass,
    # and then answers 503): only fetches running concurrently get 200.
    url = f"{site.base}/together"
    record = await call(runtime, [f"{site.base}/*"], "together", url, TOGETHER)
    assert record["result"] == [200] * TOGETHER
    assert record["requests_used"] == TOGETHER


async def test_over_the_rate_a_fetch_waits_for_its_slot_then_is_rate_limited(
    runtime_factory: RuntimeFactory, site: Site
) -> None:
    timer = FakeTimer()
    fetcher = Fetcher(FetchConfig(rate_per_s=1, burst=2), timer=timer)
    runtime = await runtime_factory(fetcher=fetcher)
    instance = await start(runtime, [f"{site.base}/*"], "burst", f"{site.base}/ok")
    running = asyncio.create_task(runtime.idle())

    await asyncio.wait_for(timer.sleeping(1), timeout=30)
    assert len(site.requests) == 2  # the burst; the third waits for its slot
    timer.advance(1)
    await running

    [record] = runtime.executions(instance, "burst")
    assert record["result"] == {
        "statuses": [200, 200, 200],
        "limited": "this instance's outbound requests are over their rate limit (1 a second, "
        "bursts of 2): the next one may start in 1.00 s, after this fetch's timeout of "
        "0.50 s; fetch less often, pass a longer timeout_s, or continue in a task (run_task)",
    }
    assert len(site.requests) == 3


@pytest.mark.parametrize(
    ("network", "message"),
    [
        (
            '["https://*"]',
            "network pattern 'https://*' is not valid: '*' may only stand for the leftmost "
            "labels of a host, as in *.example.com; patterns look like '*', "
            "'https://*.example.com' or 'https://api.example.com/v1/*'",
        ),
        (
            '"https://api.example.com/*"',
            "network must be a list of URL patterns such as '*', 'https://*.example.com' or "
            "'https://api.example.com/v1/*', got 'https://api.example.com/*'",
        ),
    ],
)
async def test_deploy_refuses_a_bad_network_list(sandbox: None, network: str, message: str) -> None:
    with pytest.raises(AgentCodeError) as refused:
        await describe_code(AGENT.replace("NETWORK", network))
    assert str(refused.value) == message
