"""What the HTTP server itself bounds, over real sockets: a request's head.

A sender that streams headers without end must get a 431 and a closed connection,
not a server holding everything it sends; a request whose head is under the limit,
with a body as large as a webhook takes arriving in the same packets, must not be
mistaken for one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from corral.server.serving import MAX_HEAD_BYTES, HttpServer, Listener


async def echo(request: Request) -> PlainTextResponse:
    """How many header bytes and body bytes arrived."""
    head = sum(len(name) + len(value) for name, value in request.headers.raw)
    body = await request.body()
    return PlainTextResponse(f"{head} {len(body)}")


@pytest.fixture
async def address() -> AsyncIterator[tuple[str, int]]:
    listener = Listener("127.0.0.1", 0)
    ready = asyncio.Event()
    server = HttpServer(
        Starlette(routes=[Route("/", echo, methods=["POST"])]),
        listener,
        on_ready=ready.set,
        own_signals=False,
        grace_s=1,
    )
    running = asyncio.create_task(server.run_until_stopped())
    await ready.wait()
    yield "127.0.0.1", listener.port
    server.stop()
    await running
    listener.close()


def request(header_bytes: int, body: bytes) -> bytes:
    filler = b"x-filler: " + b"a" * max(header_bytes, 0) + b"\r\n" if header_bytes else b""
    return (
        b"POST / HTTP/1.1\r\nhost: test\r\ncontent-type: application/octet-stream\r\n"
        + filler
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


async def exchange(address: tuple[str, int], data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        return await reader.read(65536)
    finally:
        writer.close()


async def send_until_refused(writer: asyncio.StreamWriter, data: bytes, *, times: int) -> None:
    """Write ``data`` ``times`` over, or until the server closes the connection."""
    try:
        for _ in range(times):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        return


async def test_a_head_over_the_limit_is_431_and_the_connection_is_closed(
    address: tuple[str, int],
) -> None:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"POST / HTTP/1.1\r\nhost: test\r\n")
    # Headers without end: the server answers once the limit is passed, and stops reading.
    line = b"x-more: " + b"a" * 1000 + b"\r\n"
    await send_until_refused(writer, line, times=10 * MAX_HEAD_BYTES // len(line))
    answer = await asyncio.wait_for(reader.read(), timeout=30)  # no answer: a failure
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b'"code": "headers_too_large"' in answer
    # The server serves on.
    assert (await exchange(address, request(0, b"ok"))).startswith(b"HTTP/1.1 200 ")


async def test_a_head_under_the_limit_with_a_large_body_in_the_same_packets_is_served(
    address: tuple[str, int],
) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, sent with the head in one write
    answer = await exchange(address, request(MAX_HEAD_BYTES // 2, body))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b" %d" % len(body))


async def test_each_request_on_a_connection_has_the_whole_limit(
    address: tuple[str, int],
) -> None:
    """The count starts again with each request of a kept-alive connection."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        for n in range(3):
            writer.write(request(MAX_HEAD_BYTES * 3 // 4, b"%d" % n))
            await writer.drain()
            answer = await reader.read(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
            assert answer.endswith(b" 1")
    finally:
        writer.close()
