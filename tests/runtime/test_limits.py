"""An agent's declared limits as a worker meets them (SPEC §1.6).

Deploy refuses limits out of range (tests/test_cli.py), but a version may hold
them anyway, or a description no agent class gives: stored before deploy
checked them, or over the ceilings of the worker that claims its task. Such a
task cannot start; it is dead-lettered at once with the reason, and the worker
goes on serving every other instance.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from corral import codec
from corral.config import RuntimeConfig
from corral.errors import ConfigError
from corral.sandbox.limits import Limits
from tests.runtime.conftest import Runtime, RuntimeFactory

AGENT = """
from corral.sdk import Agent

class Steady(Agent):
    async def activate(self, priority):
        await self.store.set("activated", priority)

    async def work(self, n):
        await self.store.set(f"n{n}", n)
        return n
"""

#: What the ranges read like: each message below names the limit and its range.
SECONDS = "a number of seconds from 0.001 to 900 (the operator's ceiling)"
MIB = "a whole number of MiB from 16 to 4096 (the operator's ceiling)"


def _store_declaration(runtime: Runtime, agent: str, declared: dict[str, Any]) -> None:
    """Give the agent's stored version these declarations, as a version deployed
    before deploy checked them holds them; nothing checks this write."""
    [(stored,)] = runtime.database.fetch_all(
        "SELECT description FROM versions WHERE agent = :agent", {"agent": agent}
    )
    description = {**json.loads(stored), **declared}
    runtime.database.write(
        "UPDATE versions SET description = :description WHERE agent = :agent",
        {"description": json.dumps(description), "agent": agent},
    )


async def _serve_beside_a_bad_version(
    runtime: Runtime, declared: dict[str, Any]
) -> tuple[str, str]:
    """A healthy instance and one whose stored version declares ``declared``, each with
    work queued; the worker runs until idle. Their ids, healthy first."""
    await runtime.deploy("steady", AGENT)
    await runtime.deploy("brittle", AGENT)
    _store_declaration(runtime, "brittle", declared)
    healthy, brittle = runtime.install("steady"), runtime.install("brittle")
    now = runtime.executor.now()
    for n in range(3):
        for instance in (brittle, healthy):
            runtime.executor.queue.enqueue(instance.id, "work", codec.encode([n]), now=now)
    await runtime.idle()  # would raise if the worker had died
    return healthy.id, brittle.id


async def _assert_dead_lettered_at_once(runtime: Runtime, instance: str, error: str) -> None:
    """Every task of the instance is dead after one claim, with the reason; none ran."""
    assert runtime.tasks(instance) == []
    dead = runtime.tasks(instance, dead=True)
    assert sorted(t.method for t in dead) == ["activate", "work", "work", "work"]
    for task in dead:
        reason = (
            f"brittle v1 cannot run: {error}; deploy a version that fixes it, then: "
            f"corral tasks retry {task.id}"
        )
        assert (task.attempts, task.last_error) == (1, reason)
        assert f"task {task.id} dead-lettered: {reason}" in runtime.logs(instance)
    assert runtime.executions(instance) == []
    assert await runtime.store(instance).keys() == []


async def _assert_served(runtime: Runtime, instance: str) -> None:
    assert runtime.tasks(instance) == []
    assert runtime.tasks(instance, dead=True) == []
    outcomes = [(r["method"], r["outcome"]) for r in runtime.executions(instance)]
    assert sorted(outcomes) == [("activate", "ok")] + [("work", "ok")] * 3
    assert await runtime.store(instance).keys() == ["activated", "n0", "n1", "n2"]


@pytest.mark.parametrize(
    ("declared", "error"),
    [
        ({"limits": {"timeout_s": math.inf}}, f"limit timeout_s must be {SECONDS}, got inf"),
        ({"limits": {"timeout_s": math.nan}}, f"limit timeout_s must be {SECONDS}, got nan"),
        ({"limits": {"timeout_s": 1e300}}, f"limit timeout_s must be {SECONDS}, got 1e+300"),
        ({"limits": {"cpu_s": math.inf}}, f"limit cpu_s must be {SECONDS}, got inf"),
        ({"limits": {"memory_mb": 0.5}}, f"limit memory_mb must be {MIB}, got 0.5"),
        ({"limits": {"memory_mb": 10**12}}, f"limit memory_mb must be {MIB}, got 1000000000000"),
        (
            {"limits": None},
            "limits must be a dict of limit names to values, such as {'timeout_s': 120}, got None",
        ),
        ({"methods": 5}, "the agent's methods must be a list of names, got 5"),
    ],
    ids=[
        "timeout-inf",
        "timeout-nan",
        "timeout-1e300",
        "cpu-inf",
        "memory-half",
        "memory-huge",
        "limits-not-a-dict",
        "methods-not-a-list",
    ],
)
async def test_a_stored_version_with_bad_limits_is_dead_lettered_and_the_worker_serves_on(
    runtime: Runtime, declared: dict[str, Any], error: str
) -> None:
    healthy, brittle = await _serve_beside_a_bad_version(runtime, declared)
    await _assert_dead_lettered_at_once(runtime, brittle, error)
    await _assert_served(runtime, healthy)


async def test_a_version_over_this_workers_ceiling_is_dead_lettered(
    runtime_factory: RuntimeFactory,
) -> None:
    """An operator who lowers a ceiling holds versions deployed under the old one to it."""
    ceilings = Limits(requests=1000, timeout_s=120.0, cpu_s=60.0, memory_mb=512)
    runtime: Runtime = await runtime_factory(RuntimeConfig(ceilings=ceilings))
    healthy, brittle = await _serve_beside_a_bad_version(runtime, {"limits": {"timeout_s": 600}})
    await _assert_dead_lettered_at_once(
        runtime,
        brittle,
        "limit timeout_s must be a number of seconds from 0.001 to 120 (the operator's "
        "ceiling), got 600",
    )
    await _assert_served(runtime, healthy)


def test_a_runtime_config_refuses_defaults_over_its_ceilings_and_an_endless_grace() -> None:
    """What an operator sets is checked too: the lease is a timeout plus this grace."""
    with pytest.raises(ConfigError) as raised:
        RuntimeConfig(limits=Limits(timeout_s=120), ceilings=Limits(timeout_s=60))
    assert str(raised.value) == (
        "limits.timeout_s = 120 (the default) is above its ceiling, ceilings.timeout_s = 60 "
        "(the default): lower the default or raise the ceiling"
    )
    ceilings = RuntimeConfig().ceilings
    RuntimeConfig(limits=ceilings, ceilings=ceilings)  # a default may be its ceiling
    for grace in (math.inf, math.nan, -1.0, 3601.0):
        with pytest.raises(ConfigError, match=r"^lease_grace_s") as raised:
            RuntimeConfig(lease_grace_s=grace)
        assert str(raised.value) == f"lease_grace_s must be from 0 to 3600 seconds, got {grace!r}"
