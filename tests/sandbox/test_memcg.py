"""Per-process memory cgroups: the kernel bounds a child's memory, the host reads its peak and
learns of OOM kills, and nothing is left behind in the cgroup hierarchy.

The children are plain subprocesses (no other sandbox layer), driven line by line over
stdin/stdout so every step is synchronised without sleeps. Each waits for its first line
before allocating, because memory touched before the attach is charged elsewhere.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from corral.errors import SandboxError
from corral.sandbox.memcg import MemoryCgroups
from tests.sandbox.conftest import NO_MEMCG, unavailable

MiB = 2**20

#: A child that runs commands from stdin: "alloc N" touches N MiB (one byte per page, so
#: the pages are really charged), "free" drops them; each reply is one line.
CHILD = """
import sys
held = None
for line in sys.stdin:
    cmd, *arg = line.split()
    if cmd == "alloc":
        held = bytearray(int(arg[0]) * 2**20)
        held[::4096] = b"\\x01" * len(range(0, len(held), 4096))
    elif cmd == "free":
        held = None
    print("done", cmd, flush=True)
"""

Spawn = Callable[[], "subprocess.Popen[str]"]


@pytest.fixture
def cgroups() -> Iterator[MemoryCgroups]:
    """A factory in our memory cgroup, closed at the end (after the children have died)."""
    found = MemoryCgroups.detect()
    if found is None:
        unavailable(NO_MEMCG)
    try:
        yield found
    finally:
        found.close()


@pytest.fixture
def spawn(cgroups: MemoryCgroups) -> Iterator[Spawn]:
    """Starts :data:`CHILD` processes; kills and reaps them all before ``cgroups`` closes."""
    children: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        children.append(child)
        return child

    try:
        yield start
    finally:
        for child in children:
            child.kill()
            child.wait()
            for stream in (child.stdin, child.stdout):
                if stream is not None:
                    stream.close()


def command(child: subprocess.Popen[str], line: str) -> str:
    """Send one command and return the reply ('' if the child died instead)."""
    assert child.stdin is not None
    assert child.stdout is not None
    child.stdin.write(line + "\n")
    child.stdin.flush()
    return child.stdout.readline().strip()


def test_over_the_limit_the_kernel_kills_with_sigkill(cgroups: MemoryCgroups, spawn: Spawn) -> None:
    group = cgroups.create("oom", 64 * MiB)
    child = spawn()
    group.attach(child.pid)
    before = group.oom_kills()

    reply = command(child, "alloc 200")

    assert reply == ""
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert group.oom_kills() > before
    assert group.peak_bytes() <= 64 * MiB
    group.remove()


def test_peak_is_per_execution_after_reset(cgroups: MemoryCgroups, spawn: Spawn) -> None:
    group = cgroups.create("peak", 128 * MiB)
    child = spawn()
    group.attach(child.pid)

    assert command(child, "alloc 30") == "done alloc"
    first = group.peak_bytes()
    assert command(child, "free") == "done free"
    group.reset_peak()
    assert command(child, "alloc 1") == "done alloc"
    second = group.peak_bytes()

    assert first >= 30 * MiB
    assert second < first - 20 * MiB
    assert group.oom_kills() == 0


def test_remove_and_close_leave_nothing_behind(cgroups: MemoryCgroups, spawn: Spawn) -> None:
    group = cgroups.create("gone", 32 * MiB)
    child = spawn()
    group.attach(child.pid)
    assert group.path.is_dir()
    assert group.path.parent == cgroups.root

    child.kill()
    child.wait()
    group.remove()
    assert not group.path.exists()
    group.remove()  # already gone: not an error

    cgroups.create("left-over", 32 * MiB)
    cgroups.close()
    assert not cgroups.root.exists()
    cgroups.close()  # idempotent


def test_remove_of_a_group_in_use_fails_quickly(cgroups: MemoryCgroups, spawn: Spawn) -> None:
    group = cgroups.create("busy", 32 * MiB)
    child = spawn()
    group.attach(child.pid)

    started = time.perf_counter()
    with pytest.raises(SandboxError, match="busy"):
        group.remove()
    assert time.perf_counter() - started < 0.5
    assert group.path.is_dir()

    child.kill()
    child.wait()
    group.remove()


@pytest.mark.parametrize("name", ["", ".", "..", "a/b"])
def test_names_must_be_one_path_component(cgroups: MemoryCgroups, name: str) -> None:
    with pytest.raises(ValueError, match="one path component"):
        cgroups.create(name, 32 * MiB)
