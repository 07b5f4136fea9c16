"""Values a hostile agent crafts so that decoding them stalls the host.

The host decodes every tool call's arguments, and a store value's bytes to check
them, on the event loop that serves every other instance's executions. An agent
controls its process, so it can send bytes no encoder would write: a set whose
members all have the same hash (quadratic to build: 40,000 members once froze the
worker for 13 s), a dict keyed so, or a frame of nothing but empty lists (a
container per byte). Each test runs through a real, fully confined zygote and
checks what the agent sees, that the host paid little for it, that another
instance's execution running at the same time is not held up, and that the
process goes on serving.

"Not held up" is checked in the host's CPU time: the most the host process
computed between two turns of its event loop (:class:`LoopWatch`). That is what
another instance waits for, and unlike the wall-clock time the bystander sees,
it does not grow when other processes (a parallel test run) share the cores.
The bystander's own latencies are printed (``pytest -s``); the stall in wall-clock
time is measured by bench/decoding.py.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from corral import codec
from corral.runtime.tools import store_tools
from corral.sandbox.limits import ExecutionResult, Limits, Outcome
from corral.sandbox.process import SandboxProcess, ToolHandler
from corral.sandbox.zygote import Zygote
from corral.state import SqlBackend, Store

AGENT = r'''
import asyncio
import time

from corral.sdk import Agent


class Hostile(Agent):
    async def call_encoded(self, op, encoded):
        """A tool call whose argument bytes were made by hand: the SDK's own channel,
        without its encoder. Returns what the agent sees."""
        runtime = self._channel
        call_id = next(runtime._ids)
        reply = asyncio.get_running_loop().create_future()
        runtime._pending[call_id] = reply
        runtime._send(["call", call_id, op, encoded])
        try:
            return {"returned": await reply}
        except Exception as exc:
            return {"saw": f"{type(exc).__name__}: {exc}"}

    async def attack(self, op, encoded, times):
        return [await self.call_encoded(op, encoded) for _ in range(times)]

    async def timed_calls(self, seconds):
        """The bystander: store calls in a row for ``seconds``, each timed in here (ms)."""
        latencies = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            started = time.perf_counter()
            await self.store.set("tick", len(latencies))
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies

    async def set_many_then_get(self, values):
        """A large call, and a small one sent right behind it without waiting."""
        pairs = {f"k{i}": value for i, value in enumerate(values)}
        _, first = await asyncio.gather(self.store.set_many(pairs), self.store.get("k0"))
        return first

    def give(self, value):
        return value

    async def plain(self):
        await self.store.set("served", True)
        return "served"
'''

#: Python hashes an int modulo this prime: every multiple of it hashes to 0, on any
#: interpreter, whatever its hash secret.
HASH_MODULUS = 2**61 - 1
#: As many members as the set that froze the worker for 13 s.
MEMBERS = 40_000
#: The host's longest hold of its event loop while a colliding set is sent, in CPU
#: time; unfixed, 10 s.
MAX_HOLD_MS = 200.0
#: Its longest hold while a frame of empty lists is decoded in steps; unfixed (decoded
#: at once), 2 s. The garbage collector's passes over the up to a million lists built
#: so far are the one hold pacing cannot split: about 100 ms, more in a long test
#: session, whose own objects each pass visits too.
MAX_HOLD_MS_PACED = 500.0


# -- what the attacker sends: bytes made by hand, as no encoder would write them --------


def _ext(code: int, payload: bytes) -> msgpack.ExtType:
    """A corral.codec extension (type codes: 1 big int, 2 tuple, 3 set, 4 frozenset)."""
    return msgpack.ExtType(code, payload)


def _big_int(n: int) -> msgpack.ExtType:
    return _ext(1, n.to_bytes((n.bit_length() + 8) // 8, "big", signed=True))


def _colliding(n: int) -> list[msgpack.ExtType]:
    return [_big_int(k * HASH_MODULUS) for k in range(n)]


def colliding_set(n: int = MEMBERS) -> bytes:
    return msgpack.packb(_ext(3, msgpack.packb(_colliding(n))))


def colliding_frozenset_of_tuples(n: int = MEMBERS) -> bytes:
    # A tuple's hash follows from its items' hashes: these collide too.
    tuples = [_ext(2, msgpack.packb([member])) for member in _colliding(n)]
    return msgpack.packb(_ext(4, msgpack.packb(tuples)))


def dict_with_colliding_keys(n: int = MEMBERS) -> bytes:
    return msgpack.packb(dict.fromkeys(_colliding(n), 0))


def empty_lists(n: int) -> bytes:
    """A list of ``n`` empty lists: a container per byte."""
    return msgpack.packb([[]] * n)


SET_REFUSED = (
    "a set has 39,999 members whose hash equals another member's; at most 8 may "
    "(each one makes building the set slower)"
)
CASES = [
    ("a set of ints", "store.get_encoded", [colliding_set()],
     f"ValueError: the arguments of 'store.get_encoded' cannot be decoded: {SET_REFUSED}"),
    ("a frozenset of tuples", "store.get_encoded", [colliding_frozenset_of_tuples()],
     f"ValueError: the arguments of 'store.get_encoded' cannot be decoded: {SET_REFUSED}"),
    ("a dict keyed so", "store.get_encoded", [dict_with_colliding_keys()],
     "ValueError: the arguments of 'store.get_encoded' cannot be decoded: "
     "int is not allowed for map key when strict_map_key=True"),
    ("a set inside a value to store", "store.set_encoded",
     [codec.encode("k"), codec.encode(colliding_set())],
     f"ValueError: the value for key 'k' cannot be stored: {SET_REFUSED} (nothing was written)"),
]  # fmt: skip


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture
async def zygote() -> AsyncIterator[Zygote]:
    z = await Zygote.start()
    assert not z.report["insecure"]
    yield z
    await z.close()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[SqlBackend]:
    opened = SqlBackend.open(f"sqlite:///{tmp_path / 'corral.db'}")
    yield opened
    opened.close()


@pytest.fixture
def attacker_store(backend: SqlBackend) -> Store:
    return Store(backend, "attacker")


@pytest.fixture
def bystander_store(backend: SqlBackend) -> Store:
    return Store(backend, "bystander")


async def run(
    process: SandboxProcess, tools: ToolHandler, method: str, *args: Any, timeout_s: float = 60
) -> ExecutionResult:
    limits = Limits(requests=100_000, timeout_s=timeout_s, cpu_s=timeout_s)
    return await process.execute(AGENT, method, list(args), limits, tools)


async def assert_serves(process: SandboxProcess, store: Store) -> None:
    result = await run(process, store_tools(store), "plain")
    assert (result.outcome, result.result) == (Outcome.OK, "served"), result.error
    assert await store.get("served") is True


def summary(latencies: list[float]) -> str:
    return (
        f"{len(latencies)} calls, median {statistics.median(latencies):.2f} ms, "
        f"max {max(latencies):.1f} ms"
    )


class Bystander:
    """Another instance's execution: store calls in a row, timed inside its sandbox."""

    def __init__(self, process: SandboxProcess, store: Store) -> None:
        self._process = process
        self._handler = store_tools(store)
        self.calling = asyncio.Event()

    def _tools(self, op: str, args: list[Any]) -> Any:
        self.calling.set()
        return self._handler(op, args)

    async def latencies(self, seconds: float) -> list[float]:
        self.calling.clear()
        result = await run(self._process, self._tools, "timed_calls", seconds)
        assert result.outcome is Outcome.OK, result.error
        latencies: list[float] = result.result
        return latencies


class LoopWatch:
    """The most CPU time the host process spent between two turns of its event loop.

    A timer every millisecond reads ``time.process_time()``: between two of its turns
    the process computes about a millisecond, unless one callback holds the loop, and
    then the gap is what that callback cost. Processes that share the cores make the
    turns later in wall-clock time, not the gap larger: the host computes nothing while
    it waits for a core. All the host's threads count, so a decode moved to a thread
    that holds the GIL would be seen too.
    """

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._last = time.process_time()
        self.longest_ms = 0.0
        self._timer = self._loop.call_later(0.001, self._turn)

    def _measure(self) -> None:
        now = time.process_time()
        self.longest_ms = max(self.longest_ms, (now - self._last) * 1000)
        self._last = now

    def _turn(self) -> None:
        self._measure()
        self._timer = self._loop.call_later(0.001, self._turn)

    def stop(self) -> float:
        """Stop watching; the longest gap seen (the one up to now included), in ms."""
        self._timer.cancel()
        self._measure()
        return self.longest_ms


async def under_attack(
    bystander: Bystander, attacker: SandboxProcess, store: Store, *attack: Any
) -> tuple[list[float], list[float], ExecutionResult, float]:
    """The bystander's latencies alone, then while ``attacker`` runs ``attack``; and the
    host's longest hold of its event loop meanwhile (:class:`LoopWatch`), in ms."""
    alone = await bystander.latencies(1.0)
    during = asyncio.ensure_future(bystander.latencies(1.5))
    await bystander.calling.wait()  # it is calling: the attack lands in the middle
    watch = LoopWatch()
    attacked = await run(attacker, store_tools(store), *attack)
    held_ms = watch.stop()
    return alone, await during, attacked, held_ms


def report(what: str, alone: list[float], during: list[float], held_ms: float) -> None:
    print(
        f"\n{what}: bystander alone {summary(alone)}; under attack {summary(during)}; "
        f"the host held its loop up to {held_ms:.1f} ms of CPU"
    )


# -- the tests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "encoded", "seen"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_a_value_built_to_collide_is_refused_before_it_is_built(
    zygote: Zygote, attacker_store: Store, op: str, encoded: list[bytes], seen: str
) -> None:
    process = await zygote.spawn(Limits())
    cpu_before = time.process_time()  # this process is the host
    result = await run(process, store_tools(attacker_store), "call_encoded", op, encoded)
    host_cpu_s = time.process_time() - cpu_before
    assert result.outcome is Outcome.OK, result.error
    assert result.result == {"saw": seen}
    # Unfixed, building the set took 13 s; refusing it takes milliseconds.
    assert host_cpu_s < 0.5, f"the host spent {host_cpu_s:.2f} s of CPU on one call"
    assert await attacker_store.keys() == []  # nothing was written
    await assert_serves(process, attacker_store)
    await process.close()


async def test_a_colliding_set_does_not_hold_up_another_instance(
    zygote: Zygote, attacker_store: Store, bystander_store: Store
) -> None:
    attacker = await zygote.spawn(Limits())
    bystander = Bystander(await zygote.spawn(Limits()), bystander_store)
    alone, during, attacked, held_ms = await under_attack(
        bystander, attacker, attacker_store, "attack", "store.get_encoded", [colliding_set()], 2
    )
    report("colliding set", alone, during, held_ms)
    assert attacked.outcome is Outcome.OK, attacked.error
    expected = f"ValueError: the arguments of 'store.get_encoded' cannot be decoded: {SET_REFUSED}"
    assert attacked.result == [{"saw": expected}] * 2
    assert held_ms < MAX_HOLD_MS, f"the host held its loop for {held_ms:.1f} ms of CPU"
    await assert_serves(attacker, attacker_store)
    await attacker.close()


async def test_a_frame_of_empty_lists_is_decoded_in_steps_beside_another_instance(
    zygote: Zygote, attacker_store: Store, bystander_store: Store
) -> None:
    # Nearly the 4 MiB frame limit, a list per byte: past the containers a value may
    # hold, which the host finds out while the event loop keeps serving the bystander.
    attacker = await zygote.spawn(Limits())
    bystander = Bystander(await zygote.spawn(Limits()), bystander_store)
    encoded = [empty_lists(4_000_000)]
    alone, during, attacked, held_ms = await under_attack(
        bystander, attacker, attacker_store, "attack", "store.get_encoded", encoded, 1
    )
    report("empty lists", alone, during, held_ms)
    assert attacked.outcome is Outcome.OK, attacked.error
    assert attacked.result == [
        {
            "saw": "ValueError: the arguments of 'store.get_encoded' cannot be decoded: "
            "more than 1,048,576 lists, dicts, tuples, sets and other containers; split the "
            "value across several keys"
        }
    ]
    assert held_ms < MAX_HOLD_MS_PACED, f"the host held its loop for {held_ms:.1f} ms of CPU"
    await assert_serves(attacker, attacker_store)
    await attacker.close()


async def test_calls_behind_a_large_one_are_answered_in_the_order_sent(
    zygote: Zygote, attacker_store: Store
) -> None:
    # The set_many frame is large enough to be decoded, and its values checked, in
    # steps (tens of milliseconds); the get sent right behind it waits its turn, so it
    # reads what the set_many wrote.
    process = await zygote.spawn(Limits())
    values = [{"n": i, "items": list(range(50))} for i in range(20_000)]
    result = await run(process, store_tools(attacker_store), "set_many_then_get", values)
    assert (result.outcome, result.result) == (Outcome.OK, values[0]), result.error
    assert await attacker_store.get("k19999") == values[19999]
    await process.close()


async def test_a_large_result_is_decoded_in_steps_and_comes_back_whole(
    zygote: Zygote, attacker_store: Store
) -> None:
    process = await zygote.spawn(Limits())
    # 907 KB encoded: under the 1 MiB a result may be, far over what is decoded at once.
    value = [[i, (i, str(i)), {"i": i}] for i in range(40_000)]
    result = await run(process, store_tools(attacker_store), "give", value)
    assert result.outcome is Outcome.OK, result.error
    assert result.result == value
    await assert_serves(process, attacker_store)
    await process.close()
