"""Executions through the real zygote and sandboxed processes: records, limits, budget.

Each test starts its own zygote, so a test that breaks a process cannot affect
another. The agent code is a string, as it is when stored in the database.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest

from corral import codec
from corral.runtime.tools import store_tools
from corral.sandbox.limits import Limits, Outcome
from corral.sandbox.pool import SandboxPool
from corral.sandbox.process import SandboxProcess
from corral.sandbox.zygote import Zygote
from corral.state import DEFAULT_MAX_VALUE_BYTES, Store, StoreBackend, open_store
from tests.sandbox.conftest import NO_MEMCG, unavailable

AGENT = """
import asyncio
from corral.sdk import Agent, RequestLimitExceeded

class Demo(Agent):
    async def hello(self, name="world"):
        n = (await self.get("count") or 0) + 1
        await self.set("count", n)
        print(f"hello {name} #{n}")
        return {"greeting": f"hello {name}", "n": n, "left": self.budget.requests_left}

    def plain(self, x):
        return ("sync", x)

    async def spend(self, n):
        done = 0
        try:
            for i in range(n):
                await self.store.set(f"k{i}", i)
                done += 1
        except RequestLimitExceeded as exc:
            return {"done": done, "error": str(exc)}
        return {"done": done}

    async def spend_uncaught(self, n):
        for i in range(n):
            await self.store.set(f"k{i}", i)

    async def gather(self, n):
        await asyncio.gather(*(self.store.set(f"g{i}", i) for i in range(n)))
        return await self.store.get_many([f"g{i}" for i in range(n)])

    async def boom(self):
        raise ValueError("bad input: 42")

    async def store_object(self):
        await self.set("x", {"items": [1, 2, 3, object()]})

    async def sleep(self, s):
        await asyncio.sleep(s)

    def spin(self):
        while True:
            pass

    def hog(self):
        return len(bytearray(2 * 1024**3))

    def remember(self):
        global seen
        seen = globals().get("seen", 0) + 1
        return seen

    async def raw_call(self, op, *args):
        return await self._channel.call(op, *args)

    def touch(self, mb):
        return len(b"x" * (mb * 1024 * 1024))

    def background(self):
        async def forever():
            await self.set("late", True)
        asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(forever()))
        return "started"
"""


@pytest.fixture
async def zygote() -> AsyncIterator[Zygote]:
    z = await Zygote.start()
    yield z
    await z.close()


@pytest.fixture
def store() -> Store:
    return open_store(None, "inst-a")


async def run(
    process: SandboxProcess, store: Store, method: str, *args: Any, limits: Limits | None = None
) -> Any:
    return await process.execute(AGENT, method, list(args), limits or Limits(), store_tools(store))


async def test_ok_execution_is_recorded_with_usage_and_logs(zygote: Zygote, store: Store) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, store, "hello", "ann")
    assert result.outcome is Outcome.OK
    assert result.result == {"greeting": "hello ann", "n": 1, "left": 998}
    assert result.requests_used == 2
    assert result.logs == [("info", "hello ann #1")]
    assert result.cpu_ms > 0
    assert result.peak_rss_bytes > 1_000_000
    assert result.duration_ms > 0
    assert await store.get("count") == 1


async def test_plain_def_handlers_and_tuple_results(zygote: Zygote, store: Store) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, store, "plain", {"a": (1, 2)})
    assert result.result == ("sync", {"a": (1, 2)})


async def test_a_raised_exception_is_an_error_with_its_traceback(
    zygote: Zygote, store: Store
) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, store, "boom")
    assert result.outcome is Outcome.ERROR
    assert result.error is not None
    assert (result.error["type"], result.error["message"]) == ("ValueError", "bad input: 42")
    assert 'raise ValueError("bad input: 42")' in result.error["traceback"]
    assert (await run(process, store, "plain", 1)).outcome is Outcome.OK  # process serves on


async def test_unstorable_value_fails_at_the_agents_line(zygote: Zygote, store: Store) -> None:
    result = await run(await zygote.spawn(Limits()), store, "store_object")
    assert result.error is not None
    assert result.error["message"] == (
        "value['items'][3]: cannot store an object of type object; store its fields as a dict"
        " (key 'x': nothing was written)"
    )
    assert result.requests_used == 0  # refused before it was sent
    assert await store.keys() == []


async def test_unknown_method_names_the_real_ones(zygote: Zygote, store: Store) -> None:
    result = await run(await zygote.spawn(Limits()), store, "set")
    assert result.error is not None
    assert result.error["type"] == "UnknownMethod"
    assert "Demo has no method 'set' that can be invoked" in result.error["message"]
    assert "hello" in result.error["message"]


async def test_request_budget_stops_the_call_past_it_and_keeps_earlier_work(
    zygote: Zygote, store: Store
) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, store, "spend", 10, limits=Limits(requests=4))
    assert result.outcome is Outcome.OK  # the agent caught RequestLimitExceeded
    assert result.result["done"] == 4
    assert "request budget" in result.result["error"]
    assert await store.keys() == ["k0", "k1", "k2", "k3"]

    uncaught = await run(process, store, "spend_uncaught", 10, limits=Limits(requests=3))
    assert uncaught.outcome is Outcome.REQUEST_LIMIT
    assert uncaught.requests_used == 3


async def test_concurrent_tool_calls_each_count(zygote: Zygote, store: Store) -> None:
    result = await run(await zygote.spawn(Limits()), store, "gather", 20)
    assert result.result == list(range(20))
    assert result.requests_used == 21


class LaterTools:
    """Tool calls answered by futures resolved later, as a PostgreSQL database call is."""

    def __init__(self) -> None:
        self.pending: list[asyncio.Future[Any]] = []

    def __call__(self, op: str, args: list[Any]) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        loop = asyncio.get_running_loop()
        if op == "later.echo":
            loop.call_soon(future.set_result, args[0])
        elif op == "later.fail":
            loop.call_soon(future.set_exception, ValueError(f"no such thing: {args[0]}"))
        return future  # "later.never": left pending


async def test_a_tool_answered_later_replies_with_its_value_or_error(zygote: Zygote) -> None:
    process = await zygote.spawn(Limits())
    tools = LaterTools()
    echoed = await process.execute(AGENT, "raw_call", ["later.echo", "hi"], Limits(), tools)
    assert (echoed.outcome, echoed.result) == (Outcome.OK, "hi")
    failed = await process.execute(AGENT, "raw_call", ["later.fail", "x"], Limits(), tools)
    assert failed.outcome is Outcome.ERROR
    assert failed.error is not None
    assert failed.error["message"] == "no such thing: x"


async def test_an_answer_still_pending_when_the_execution_ends_is_dropped(
    zygote: Zygote,
) -> None:
    process = await zygote.spawn(Limits())
    tools = LaterTools()
    limits = Limits(timeout_s=0.2)
    hung = await process.execute(AGENT, "raw_call", ["later.never"], limits, tools)
    assert hung.outcome is Outcome.TIMEOUT
    assert tools.pending[0].cancelled()  # nobody waits for it any more


async def test_wall_timeout_kills_and_the_next_process_works(zygote: Zygote, store: Store) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, store, "sleep", 30, limits=Limits(timeout_s=0.3))
    assert result.outcome is Outcome.TIMEOUT
    assert result.error is not None
    assert "wall-clock timeout" in result.error["message"]
    assert not process.alive
    assert (await run(await zygote.spawn(Limits()), store, "plain", 1)).outcome is Outcome.OK


async def test_cpu_budget_stops_a_busy_loop(zygote: Zygote, store: Store) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, store, "spin", limits=Limits(cpu_s=0.3, timeout_s=20))
    assert result.outcome is Outcome.CPU_LIMIT
    assert result.cpu_ms >= 300
    assert result.error is not None
    assert "CPU budget" in result.error["message"]


async def test_memory_limit_is_recorded(zygote: Zygote, store: Store) -> None:
    process = await zygote.spawn(Limits(memory_mb=64))
    result = await run(process, store, "hog", limits=Limits(memory_mb=64))
    assert result.outcome is Outcome.MEMORY_LIMIT
    assert result.error is not None
    assert result.error["message"] == "the execution ran out of memory (limit 64 MiB)"
    assert result.breached


@pytest.mark.parametrize(
    ("op", "args", "error"),
    [
        ("store._backend", [], "there is no tool operation 'store._backend'"),
        ("store.__class__", [], "there is no tool operation 'store.__class__'"),
        ("db.execute", ["select 1"], "there is no tool operation 'db.execute'"),
        ("store.get_encoded", ["count", "inst-b"], "takes 2 positional arguments but 3 were given"),
    ],
)
async def test_no_rpc_trick_reaches_another_scope(
    zygote: Zygote, op: str, args: list[Any], error: str
) -> None:
    other = open_store(None, "inst-b")
    await other.set("count", 99)
    mine = open_store(None, "inst-a")
    result = await run(await zygote.spawn(Limits()), mine, "raw_call", op, *args)
    assert result.outcome is Outcome.ERROR
    assert result.error is not None
    assert error in result.error["message"]


async def test_work_left_running_is_cancelled_when_the_execution_ends(
    zygote: Zygote, store: Store
) -> None:
    process = await zygote.spawn(Limits())
    assert (await run(process, store, "background")).result == "started"
    # The next execution round-trips after the 50 ms timer would have fired.
    await run(process, store, "sleep", 0.1)
    assert not await store.has("late")


async def test_pool_reuses_a_warm_process_per_instance(zygote: Zygote) -> None:
    pool = SandboxPool(zygote)
    tools_a = store_tools(open_store(None, "a"))
    tools_b = store_tools(open_store(None, "b"))
    seen = [
        (await pool.execute(inst, "v1", AGENT, "remember", [], Limits(), tools)).result
        for inst, tools in [("a", tools_a), ("a", tools_a), ("b", tools_b), ("a", tools_a)]
    ]
    assert seen == [1, 2, 1, 3]  # warm per instance; never shared between instances
    assert pool.spawned == 2
    new_version = await pool.execute("a", "v2", AGENT, "remember", [], Limits(), tools_a)
    assert new_version.result == 1  # a new version gets a fresh process
    assert await pool.retire_idle() == 0
    await pool.close()


async def test_strict_pool_gives_every_execution_a_fresh_process(zygote: Zygote) -> None:
    pool = SandboxPool(zygote, strict=True)
    tools = store_tools(open_store(None, "a"))
    seen = [
        (await pool.execute("a", "v1", AGENT, "remember", [], Limits(), tools)).result
        for _ in range(3)
    ]
    assert seen == [1, 1, 1]
    assert pool.spawned == 3
    assert len(pool) == 0


async def test_pool_retires_after_a_breach_and_evicts_least_recently_used(
    zygote: Zygote,
) -> None:
    pool = SandboxPool(zygote, max_processes=2)
    tools = store_tools(open_store(None, "a"))
    timeout = Limits(timeout_s=0.2)
    breached = await pool.execute("a", "v1", AGENT, "sleep", [5], timeout, tools)
    assert breached.outcome is Outcome.TIMEOUT
    assert len(pool) == 0
    for inst in ("a", "b", "c"):
        await pool.execute(inst, "v1", AGENT, "plain", [1], Limits(), tools)
    assert len(pool) == 2
    again = await pool.execute("a", "v1", AGENT, "remember", [], Limits(), tools)
    assert again.result == 1  # "a" was evicted as least recently used
    await pool.close()


async def test_concurrent_executions_of_one_instance_each_get_a_warm_process(
    zygote: Zygote,
) -> None:
    # Up to per_instance processes are kept warm for overlapping executions (a task
    # scheduling the next one); beyond that, a process serves once and is retired.
    pool = SandboxPool(zygote, per_instance=2)
    tools = store_tools(open_store(None, "a"))
    results = await asyncio.gather(
        *(pool.execute("a", "v1", AGENT, "sleep", [0.05], Limits(), tools) for _ in range(3))
    )
    assert all(r.outcome is Outcome.OK for r in results)
    assert (pool.spawned, len(pool)) == (3, 2)
    again = await asyncio.gather(
        *(pool.execute("a", "v1", AGENT, "remember", [], Limits(), tools) for _ in range(2))
    )
    assert sorted(r.result for r in again) == [1, 1]  # each warm process's first remember
    assert pool.spawned == 3  # both ran warm
    await pool.close()
    assert zygote._exits == {}  # the one-off and both warm processes exited and were reaped


def test_frame_header_is_big_endian_length() -> None:
    from corral.sandbox import protocol

    frame = protocol.pack(["log", "info", "x"])
    (size,) = struct.unpack(">I", frame[:4])
    assert protocol.unpack(frame[4 : 4 + size]) == ["log", "info", "x"]


THREADED = """
import threading
from corral.sdk import Agent

class T(Agent):
    def start(self):
        threading.Thread(target=threading.Event().wait, daemon=True).start()
        return threading.active_count()
"""


async def test_a_thread_left_running_retires_the_process(zygote: Zygote) -> None:
    pool = SandboxPool(zygote)
    tools = store_tools(open_store(None, "a"))
    result = await pool.execute("a", "v1", THREADED, "start", [], Limits(), tools)
    assert result.outcome is Outcome.OK
    assert len(pool) == 0  # not kept warm: the thread cannot be stopped


async def test_peak_memory_is_each_executions_own(zygote: Zygote, store: Store) -> None:
    if zygote.memory_cgroups is None:
        unavailable(NO_MEMCG)
    process = await zygote.spawn(Limits())
    big = await run(process, store, "touch", 40)
    small = await run(process, store, "plain", 1)
    assert big.peak_rss_bytes >= 40 * 1024 * 1024
    assert small.peak_rss_bytes < 20 * 1024 * 1024  # the 40 MiB was the previous execution's


async def test_encoded_values_from_the_sandbox_are_checked(zygote: Zygote, store: Store) -> None:
    # The SDK sends values already encoded; a hostile agent can send any bytes.
    process = await zygote.spawn(Limits())
    result = await run(process, store, "raw_call", "store.set_encoded", "k", b"\xc1garbage")
    assert result.error is not None
    assert (result.error["type"], result.error["message"]) == (
        "ValueError",
        "the value for key 'k' is not a value encoded by corral.codec (nothing was written)",
    )
    result = await run(process, store, "raw_call", "store.set_many_encoded", [("k", "text")])
    assert result.error is not None
    assert result.error["message"] == "an encoded value must be bytes, got str"
    assert await store.keys() == []
    assert (await run(process, store, "hello", "ann")).outcome is Outcome.OK


GOOD = ["good", codec.encode(1)]
HOSTILE_BATCHES = [
    ([GOOD, ["bad", b"\xc1garbage"]], "ValueError",
     "the value for key 'bad' is not a value encoded by corral.codec (nothing was written)"),
    ([GOOD, ["big", codec.encode(b"x" * DEFAULT_MAX_VALUE_BYTES)]], "ValueError",
     f"the value for key 'big' is {DEFAULT_MAX_VALUE_BYTES + 5} bytes encoded; the limit is "
     f"{DEFAULT_MAX_VALUE_BYTES}: split it across several keys (nothing was written)"),
    ([GOOD, ["k", "text"]], "TypeError", "an encoded value must be bytes, got str"),
    ([GOOD, ["k"]], "TypeError",
     "set_many takes a dict or a list of (key, value) pairs; item 1 is ['k']"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("pairs", "kind", "message"), HOSTILE_BATCHES, ids=["undecodable", "too-big", "str", "no-pair"]
)
async def test_a_hostile_batch_is_refused_whole_with_a_clear_error(
    zygote: Zygote, backend: StoreBackend, pairs: list[Any], kind: str, message: str
) -> None:
    # The SDK encodes in the sandbox, so the host cannot trust a batch's bytes: one bad
    # value in it must stop the whole batch before anything is written.
    store = Store(backend, "inst-a")
    process = await zygote.spawn(Limits())
    result = await run(process, store, "raw_call", "store.set_many_encoded", pairs)
    assert result.error is not None
    assert (result.error["type"], result.error["message"]) == (kind, message)
    assert await store.keys() == []
    assert (await run(process, store, "hello", "ann")).outcome is Outcome.OK


async def test_concurrent_first_executions_of_an_instance_leave_no_process_behind(
    zygote: Zygote, store: Store
) -> None:
    # Both find no warm process and spawn one; only one may be pooled, and the other
    # must be retired after its execution, not orphaned with its pidfd open.
    pool = SandboxPool(zygote, per_instance=1)
    tools = store_tools(store)
    results = await asyncio.gather(
        *(pool.execute("inst", "v1", AGENT, "plain", [i], Limits(), tools) for i in range(2))
    )
    assert [r.result for r in results] == [("sync", 0), ("sync", 1)]
    assert (pool.spawned, len(pool)) == (2, 1)
    await pool.close()
    assert zygote._exits == {}  # every process it spawned has exited and been reaped


async def test_closing_the_zygote_closes_the_processes_left_open() -> None:
    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = descriptors()
    zygote = await Zygote.start()
    process = await zygote.spawn(Limits())
    await zygote.close()  # the process was never closed by its user
    assert descriptors() == before  # its socket and pidfd went with the zygote
    assert process.exited.done()
