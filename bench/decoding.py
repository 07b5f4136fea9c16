"""What a hostile frame costs the host to decode, and how long it holds up the event loop.

A sandboxed process controls the bytes of every frame it sends, and the host decodes
each tool call's arguments (and a stored value's bytes, to check them) on the event
loop that serves every other execution. This script sends ``corral.codec`` the worst
payloads we know of, each near the 4 MiB frame limit, and measures for each:

- **CPU**: the host's CPU time for the decode (or the refusal).
- **stall**: the longest the event loop went without a turn meanwhile, seen by a
  task that does nothing but yield (``await asyncio.sleep(0)``) and time the gaps.
  It is what another execution's store call can be held up by.

Each payload is decoded two ways: **paced**, as the host decodes frames past
``corral.sandbox.process.DECODE_AT_ONCE`` bytes of values in one turn of its loop (in a
greenlet, ``codec.Pacing`` with ``bridge.pause``: a turn for the loop every
millisecond); and **at once**, a plain ``codec.decode`` inside one loop callback,
which is how the host decoded every frame before pacing and still decodes the first
``DECODE_AT_ONCE`` bytes of a turn. The last row is that budget's worst case.

What pacing cannot split is one C call: a run of scalars in one list, one pass over a
large set's members, and the garbage collector's passes over the containers built so
far (the process's other objects included: the heap size is printed). The machine
has 2 noisy cores, so each figure is the median of ``--runs`` runs with the spread.

Run: ``.venv/bin/python bench/decoding.py [--runs N]``. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgpack

from corral import codec
from corral.db import bridge
from corral.errors import DecodeLimitExceeded
from corral.sandbox import process, protocol
from tables import DASH, Figures, ms, progress, render

HASH_MODULUS = 2**61 - 1  # an int's hash is the int modulo this: its multiples collide


def _big_int(n: int) -> msgpack.ExtType:
    return msgpack.ExtType(1, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True))


def colliding_set(members: int) -> bytes:
    ints = [_big_int(k * HASH_MODULUS) for k in range(members)]
    return bytes(msgpack.packb(msgpack.ExtType(3, msgpack.packb(ints))))


def colliding_tuples(members: int) -> bytes:
    tuples = [
        msgpack.ExtType(2, msgpack.packb([_big_int(k * HASH_MODULUS)])) for k in range(members)
    ]
    return bytes(msgpack.packb(msgpack.ExtType(4, msgpack.packb(tuples))))


def distinct_int_set(members: int) -> bytes:
    ints = list(range(2**24, 2**24 + members))  # 5 bytes each
    return bytes(msgpack.packb(msgpack.ExtType(3, msgpack.packb(ints))))


def nested_tuples(depth: int, inner: bytes) -> bytes:
    data = bytes(msgpack.packb(inner))
    for _ in range(depth):
        data = bytes(msgpack.packb(msgpack.ExtType(2, b"\x91" + data)))
    return data


@dataclass(frozen=True)
class Payload:
    name: str
    data: bytes
    #: Decoded at once only: the sizes the host never paces.
    at_once_only: bool = False


def payloads() -> list[Payload]:
    limit = protocol.MAX_FRAME - 1024  # room for the rest of a CALL frame
    return [
        Payload("colliding set, 40,000 members", colliding_set(40_000)),
        Payload("colliding set, frame-sized", colliding_set(limit // 14)),
        Payload("colliding tuples in a frozenset, frame-sized", colliding_tuples(limit // 17)),
        Payload("empty lists, frame-sized (over the cap)", msgpack.packb([[]] * (limit - 8))),
        Payload("empty lists, 2**20 - 1 (the cap)", msgpack.packb([[]] * (2**20 - 1))),
        Payload("2-char strings, frame-sized", msgpack.packb(["ab"] * (limit // 3))),
        Payload("distinct ints in a set, frame-sized", distinct_int_set(limit // 5)),
        Payload("100 nested tuples around 1 MiB of bytes", nested_tuples(99, b"x" * 2**20)),
        Payload(
            f"empty lists, {process.DECODE_AT_ONCE:,} bytes",
            msgpack.packb([[]] * (process.DECODE_AT_ONCE - 5)),
            at_once_only=True,
        ),
    ]


async def measure(decode: Callable[[], None], *, paced: bool) -> tuple[float, float, str]:
    """(host CPU ms, worst loop stall ms, outcome) of one decode."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[str] = loop.create_future()
    gaps: list[float] = []

    async def yielder() -> None:
        while not done.done():
            started = time.perf_counter()
            await asyncio.sleep(0)
            gaps.append((time.perf_counter() - started) * 1000)

    def outcome() -> str:
        try:
            decode()
        except DecodeLimitExceeded as exc:
            return f"refused: {str(exc)[:40]}..."
        return "decoded"

    watcher = asyncio.ensure_future(yielder())
    await asyncio.sleep(0)
    cpu = time.process_time()
    if paced:
        bridge.start(outcome, None, done, lambda: None)
    else:
        loop.call_soon(lambda: done.set_result(outcome()))
    result = await done
    cpu_ms = (time.process_time() - cpu) * 1000
    await watcher
    return cpu_ms, max(gaps), result


async def bench(runs: int) -> tuple[Figures, dict[str, str]]:
    figures = Figures()
    outcomes: dict[str, str] = {}
    cases = payloads()
    for run in range(runs):
        progress(f"run {run + 1}/{runs}")
        for payload in cases:
            data = payload.data
            modes = [False] if payload.at_once_only else [True, False]
            for paced in modes:

                def decode(data: bytes = data, paced: bool = paced) -> None:
                    codec.decode(data, pacing=codec.Pacing(bridge.pause) if paced else None)

                cpu, stall, outcome = await measure(decode, paced=paced)
                key = f"{payload.name}|{'paced' if paced else 'at once'}"
                figures.add(f"{key}|cpu", cpu)
                figures.add(f"{key}|stall", stall)
                outcomes[key] = outcome
        gc.collect()
    return figures, outcomes


def report(figures: Figures, outcomes: dict[str, str], runs: int) -> str:
    rows = []
    for payload in payloads():
        modes = ["at once"] if payload.at_once_only else ["paced", "at once"]
        for mode in modes:
            key = f"{payload.name}|{mode}"
            cpu, stall = figures[f"{key}|cpu"], figures[f"{key}|stall"]
            rows.append(
                [
                    payload.name if mode == modes[0] else "",
                    f"{len(payload.data) / 2**20:.2f}" if mode == modes[0] else "",
                    mode,
                    f"{ms(cpu.median)} ({ms(cpu.low)}{DASH}{ms(cpu.high)})",
                    f"{ms(stall.median)} ({ms(stall.low)}{DASH}{ms(stall.high)})",
                    outcomes[key],
                ]
            )
    header = ["payload", "MiB", "decoded", "host CPU ms", "worst stall ms", "outcome"]
    context = (
        f"Python {platform.python_version()}, msgpack {msgpack.version}, "
        f"{len(gc.get_objects()):,} objects tracked by the collector, median of {runs} runs"
    )
    return f"{context}\n\n{render(header, rows, left=(0, 2, 5))}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="repetitions per figure")
    args = parser.parse_args()
    figures, outcomes = asyncio.run(bench(args.runs))
    print(report(figures, outcomes, args.runs))


if __name__ == "__main__":
    main()
