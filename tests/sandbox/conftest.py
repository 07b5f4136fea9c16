"""Fixtures for the sandbox suites: what this machine supports, and things to attack.

Every layer is irreversible, so each test applies it in a forked child
(:func:`corral.sandbox.trial.run_trial`) and the parent only asserts on the report.
A test marked ``@pytest.mark.layers(...)``, or using a fixture that calls
``require_layers``, is skipped when this machine lacks one of the named layers (as
:func:`corral.sandbox.support.probe_support` finds), unless ``CORRAL_REQUIRE_SANDBOX=1``:
then a missing layer is a failure, as it should be in CI on the machines Corral runs on.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from corral.sandbox.support import SupportReport, probe_support
from tests.sandbox.attempts import FS_IOC_GETFLAGS

REQUIRE_SANDBOX = os.environ.get("CORRAL_REQUIRE_SANDBOX") == "1"


_IPC_CREAT = 0o1000
_IPC_EXCL = 0o2000
_IPC_RMID = 0

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


@pytest.fixture
def target() -> Iterator[Path]:
    """An executable file in the virtual environment, with an extended attribute: the
    sandbox may read it, as it may the interpreter next to it. It is the test's own, so
    an attempt on its metadata that got through would not damage the interpreter."""
    path = Path(sys.prefix) / f"corral-escape-target-{uuid.uuid4().hex[:12]}"
    path.write_bytes(b"#!/bin/sh\n")
    path.chmod(0o755)
    os.setxattr(path, "user.corral", b"keep")
    yield path
    path.unlink()


@pytest.fixture
def sysv_segment() -> Iterator[int]:
    """A System V shared memory segment of the host's, mode 0600; yields its key."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.shmget.argtypes = (ctypes.c_int, ctypes.c_size_t, ctypes.c_int)
    libc.shmctl.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
    key = int.from_bytes(os.urandom(3)) | 0x4300_0000
    segment = libc.shmget(key, 4096, _IPC_CREAT | _IPC_EXCL | 0o600)
    assert segment != -1, os.strerror(ctypes.get_errno())
    yield key
    libc.shmctl(segment, _IPC_RMID, None)


def file_metadata(path: Path) -> dict[str, Any]:
    """All a sandboxed process might change about a file it may read. Any change at all
    (mode, owner, times, extended attributes, attribute flags) also moves the ctime."""
    stat = os.stat(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))
    finally:
        os.close(fd)
    return {
        "mode": oct(stat.st_mode),
        "owner": (stat.st_uid, stat.st_gid),
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "xattrs": {name: os.getxattr(path, name) for name in os.listxattr(path)},
        "flags": flags.hex(),
    }


def _assert_no_connection(server: socket.socket) -> None:
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        server.accept()
