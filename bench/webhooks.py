"""Webhook intake over HTTP, against a bare Starlette endpoint measured in the same run.

DESIGN §5's webhook bar is a ratio: Corral's overhead over the framework's floor.
This script measures, each beside the same measurement of a bare Starlette app
that does nothing (one route, same uvicorn, same settings: httptools, no access
log), served the same way:

1. **Sync round trip**: one connection, one request at a time, to a sync webhook
   whose handler is a no-op (``return None``: 204). Each request is looked up,
   stored, run in the server's warm sandbox, answered and its answer stored. p50
   and p99 over ``--requests`` requests after a warm-up. The bare endpoint answers
   204 at once.
2. **Async intake**: ``--connections`` keep-alive connections posting a small JSON
   body as fast as answers come, for ``--seconds``, to an async webhook; each 202
   means the delivery and its task were committed first (durably). Requests/s
   with 1 and with 2 server processes (each its own port; the load is spread
   round-robin over connections). The bare endpoint reads the body and answers 202
   with the same JSON shape. No worker runs: only intake is measured.

Servers are real ``corral serve`` processes on a fresh database (a SQLite file in
a temporary directory, or ``--db postgresql://…``, whose tables get the bench's
rows); the bare app runs in a process of this script (``--bare``, a hidden mode).
Load comes from a separate process (``--load``, hidden), with raw asyncio sockets
so the client costs little. On 2 shared cores the client, the servers and the
database compete for CPU alike in both measurements, which is why the ratios are
the figures to read, not the absolute numbers.

Run: ``.venv/bin/python bench/webhooks.py [--quick] [--db URL]`` (about 40 s;
``--quick``: about 15 s). Progress goes to stderr, the report to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tables import progress

CORRAL = str(Path(sys.executable).with_name("corral"))
#: The default rate limits (200 executions per 5 minutes per instance) would suspend the
#: bench's instance: raised out of reach. The counting queries still run, as ever.
UNLIMITED = {
    "CORRAL_RATE_LIMITS_PER_5MIN": "1000000000",
    "CORRAL_RATE_LIMITS_PER_24H": "1000000000",
}

AGENT = """
from corral import Agent

class Bench(Agent):
    async def noop(self, request):
        return None
"""
BODY = b'{"event":"bench","n":1}'


# -- the load generator (a process of its own) ---------------------------------------


def request_bytes(target: str, *, body: bytes) -> bytes:
    parts = urlsplit(target)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> int:
    """Send one request on a keep-alive connection; its status, once its body is read."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def open_connection(target: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(target)
    return await asyncio.open_connection(parts.hostname, parts.port)


async def latencies(target: str, requests: int, warmup: int) -> dict[str, Any]:
    reader, writer = await open_connection(target)
    request = request_bytes(target, body=BODY)
    timings = []
    statuses: set[int] = set()
    for n in range(warmup + requests):
        started = time.perf_counter()
        statuses.add(await exchange(reader, writer, request))
        if n >= warmup:
            timings.append((time.perf_counter() - started) * 1000)
    writer.close()
    timings.sort()
    return {
        "p50_ms": statistics.median(timings),
        "p99_ms": timings[min(len(timings) - 1, round(len(timings) * 0.99))],
        "statuses": sorted(statuses),
    }


async def throughput(targets: list[str], connections: int, seconds: float) -> dict[str, Any]:
    done = 0
    statuses: set[int] = set()
    stop_at = 0.0

    async def client(target: str) -> None:
        nonlocal done
        reader, writer = await open_connection(target)
        request = request_bytes(target, body=BODY)
        await exchange(reader, writer, request)  # warm: the connection is made
        await ready.wait()
        while time.perf_counter() < stop_at:
            statuses.add(await exchange(reader, writer, request))
            done += 1
        writer.close()

    ready = asyncio.Event()
    clients = [asyncio.create_task(client(targets[n % len(targets)])) for n in range(connections)]
    await asyncio.sleep(0.2)  # let every connection open before the clock starts
    started = time.perf_counter()
    stop_at = started + seconds
    ready.set()
    await asyncio.gather(*clients)
    return {"per_s": done / (time.perf_counter() - started), "statuses": sorted(statuses)}


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    if spec["kind"] == "latency":
        return asyncio.run(latencies(spec["targets"][0], spec["requests"], spec["warmup"]))
    return asyncio.run(throughput(spec["targets"], spec["connections"], spec["seconds"]))


def load(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load in a process of its own; what it measured."""
    out = subprocess.run(
        [sys.executable, __file__, "--load", json.dumps(spec)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


# -- the servers ------------------------------------------------------------------------


def serve_bare() -> None:
    """A bare Starlette app on the same uvicorn settings as ``corral serve``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from corral.server.serving import STOP_MARGIN_S, HttpServer, Listener

    async def sync(request: Request) -> Response:
        await request.body()
        return Response(status_code=204)

    async def intake(request: Request) -> Response:
        await request.body()
        return JSONResponse({"queued": True, "delivery_id": "dl_bare"}, status_code=202)

    app = Starlette(
        routes=[Route("/sync", sync, methods=["POST"]), Route("/async", intake, methods=["POST"])]
    )
    listener = Listener("127.0.0.1", 0)
    server = HttpServer(
        app,
        listener,
        on_ready=lambda: print(f"server: {listener.url}", flush=True),
        grace_s=STOP_MARGIN_S,
    )
    asyncio.run(server.run_until_stopped())


class Server:
    """A server process that prints ``server: URL`` once it serves."""

    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **UNLIMITED},
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("server: "):
                self.url = line.split(" ", 1)[1].strip()
                return
        raise RuntimeError(f"{' '.join(args)} exited before it served")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def corral(db: str, *args: str) -> str:
    return subprocess.run(
        [CORRAL, "--db", db, *args], check=True, capture_output=True, text=True
    ).stdout


def prepare(db: str, folder: Path) -> dict[str, str]:
    """The bench agent deployed and installed; the paths of its sync and async webhooks."""
    from corral import codec
    from corral.config import RuntimeConfig
    from corral.runtime.services import Services

    agent = folder / "bench_hooks.py"
    agent.write_text(AGENT)
    corral(db, "deploy", str(agent))
    instance = json.loads(corral(db, "install", "bench-hooks", "--json"))["id"]
    webhooks = Services(RuntimeConfig(database_url=db)).webhooks
    paths = {}
    for mode in ("sync", "async"):
        made = webhooks.create(
            instance,
            "noop",
            codec.encode([]),
            mode=mode,
            verify=None,
            max_body_bytes=None,
            now=int(time.time() * 1000),
            quotas=None,
        )
        paths[mode] = f"/hooks/{made.token}"
    return paths


# -- the report -------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = args.db or f"sqlite:///{folder}/bench.db"
        paths = prepare(db, Path(folder))
        progress(f"database: {db}")
        latency = {"kind": "latency", "requests": args.requests, "warmup": args.requests // 10}
        rate = {"kind": "rate", "connections": args.connections, "seconds": args.seconds}
        results: dict[str, Any] = {}
        for processes in (1, 2):
            corral_servers = [
                Server([CORRAL, "--db", db, "serve", "--port", "0"]) for _ in range(processes)
            ]
            bare_servers = [Server([sys.executable, __file__, "--bare"]) for _ in range(processes)]
            try:
                if processes == 1:
                    progress("sync round trip: corral, then bare")
                    results["sync corral"] = load(
                        {**latency, "targets": [corral_servers[0].url + paths["sync"]]}
                    )
                    results["sync bare"] = load(
                        {**latency, "targets": [bare_servers[0].url + "/sync"]}
                    )
                progress(f"async intake, {processes} server process(es): corral, then bare")
                results[f"async corral {processes}"] = load(
                    {**rate, "targets": [s.url + paths["async"] for s in corral_servers]}
                )
                results[f"async bare {processes}"] = load(
                    {**rate, "targets": [s.url + "/async" for s in bare_servers]}
                )
            finally:
                for server in corral_servers + bare_servers:
                    server.stop()
    report(results, args)


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    for name, result in results.items():
        expected = [204] if name.startswith("sync") else [202]
        if result["statuses"] != expected:
            sys.exit(f"{name}: answered {result['statuses']}, expected {expected}")
    corral_sync, bare_sync = results["sync corral"], results["sync bare"]
    print(f"webhooks over HTTP ({os.cpu_count()} CPUs; bench/webhooks.py)")
    print(f"  sync round trip, no-op handler, {args.requests} requests, one connection:")
    print(
        f"    corral  p50 {corral_sync['p50_ms']:.2f} ms  p99 {corral_sync['p99_ms']:.2f} ms\n"
        f"    bare    p50 {bare_sync['p50_ms']:.2f} ms  p99 {bare_sync['p99_ms']:.2f} ms\n"
        f"    ratio   p50 {corral_sync['p50_ms'] / bare_sync['p50_ms']:.1f}x  "
        f"p99 {corral_sync['p99_ms'] / bare_sync['p99_ms']:.1f}x"
    )
    print(
        f"  async intake (stored durably before 202), {args.connections} connections, "
        f"{args.seconds:g} s:"
    )
    for processes in (1, 2):
        mine = results[f"async corral {processes}"]["per_s"]
        bare = results[f"async bare {processes}"]["per_s"]
        print(
            f"    {processes} process{'es' if processes > 1 else '  '}: corral {mine:,.0f}/s, "
            f"bare {bare:,.0f}/s, ratio {mine / bare:.2f} of bare"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer requests")
    parser.add_argument("--db", help="the database (default: a SQLite file in a temp folder)")
    parser.add_argument("--requests", type=int, help="sync round trips (default 1000)")
    parser.add_argument("--seconds", type=float, help="seconds of async load (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="async load connections")
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.requests = args.requests or (200 if args.quick else 1000)
    args.seconds = args.seconds or (1.5 if args.quick else 5.0)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.bare:
        serve_bare()
    elif args.load:
        print(json.dumps(run_load(json.loads(args.load))))
    else:
        measure(args)


if __name__ == "__main__":
    main()
