"""Fixtures for the sandbox suites: what this machine supports, and things to attack.

Every layer is irreversible, so each test applies it in a forked child
(:func:`corral.sandbox.trial.run_trial`) and the parent only asserts on the report.
A test marked ``@pytest.mark.layers(...)``, or using a fixture that calls
``require_layers``, is skipped when this machine lacks one of the named layers (as
:func:`corral.sandbox.support.probe_support` finds), unless ``CORRAL_REQUIRE_SANDBOX=1``:
then a missing layer is a failure, as it should be in CI on the machines Corral runs on.
"""

from __future__ import annotations

import os
import signal
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from corral.sandbox.support import SupportReport, probe_support

REQUIRE_SANDBOX = os.environ.get("CORRAL_REQUIRE_SANDBOX") == "1"


NO_MEMCG = "no writable cgroup-v1 memory controller (needs root and /sys/fs/cgroup/memory)"


def unavailable(reason: str) -> NoReturn:
    """Skip for a missing kernel feature, or fail with CORRAL_REQUIRE_SANDBOX=1 (CI)."""
    if REQUIRE_SANDBOX:
        pytest.fail(f"{reason} (CORRAL_REQUIRE_SANDBOX=1, so it must be there)", False)
    pytest.skip(f"{reason} (set CORRAL_REQUIRE_SANDBOX=1 to make this an error)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "layers(*names): skip unless every named sandbox layer works on this machine"
    )


@pytest.fixture(scope="session")
def support() -> SupportReport:
    return probe_support()


@pytest.fixture(scope="session")
def require_layers(support: SupportReport) -> Callable[..., None]:
    """Skip (or, with CORRAL_REQUIRE_SANDBOX=1, fail) unless the named layers work here."""

    def require(*names: str) -> None:
        missing = [support[name] for name in names if not support[name].available]
        if not missing:
            return
        unavailable("; ".join(f"sandbox layer {m.name} unavailable: {m.detail}" for m in missing))

    return require


@pytest.fixture(autouse=True)
def _require_marked_layers(request: pytest.FixtureRequest) -> None:
    names = [name for mark in request.node.iter_markers("layers") for name in mark.args]
    if names:
        request.getfixturevalue("require_layers")(*names)


@pytest.fixture
def tcp_listener() -> Iterator[int]:
    """A TCP server on 127.0.0.1 outside the sandbox; yields its port. Asserts at the end
    that nobody connected."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]
        _assert_no_connection(server)


@pytest.fixture
def unix_listener(tmp_path: Path) -> Iterator[str]:
    """A pathname UNIX socket server outside the sandbox; yields its path."""
    path = str(tmp_path / "host.sock")
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        yield path
        _assert_no_connection(server)


@pytest.fixture
def abstract_listener() -> Iterator[str]:
    """An abstract UNIX socket server outside the sandbox; yields its name."""
    name = f"\0corral-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(name)
        server.listen()
        yield name
        _assert_no_connection(server)


@pytest.fixture
def bystander() -> Iterator[int]:
    """A process of the same uid outside the sandbox (a stand-in for the host or a
    sibling) that sandboxed code will try to trace, signal or renice; yields its pid."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the bystander waits for the pipe to close
        try:
            os.close(write_end)
            os.read(read_end, 1)
        finally:
            os._exit(0)
    os.close(read_end)
    yield pid
    os.close(write_end)
    os.kill(pid, signal.SIGKILL)  # also ends it if an attack left it stopped
    os.waitpid(pid, 0)


def _assert_no_connection(server: socket.socket) -> None:
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        server.accept()
