"""The whole stack as production applies it, and agent code trying to get out.

A forked "zygote" confines itself (private network, private root, no capabilities,
no_new_privs, read-only Landlock, base filter) and forks a sandbox process that adds its own layers
(rlimits, scope-only Landlock, fork filter); the attempt runs in that process. The
errno in each row is what agent code sees, and the comment names the layer that stops
it first (``test_layers.py`` shows each layer alone).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from corral.sandbox.landlock import python_read_paths
from corral.sandbox.layers import Layer, Layers
from corral.sandbox.rlimits import ResourceLimits, address_space_for
from corral.sandbox.trial import TrialOutcome, run_trial
from tests.sandbox import attempts
from tests.sandbox.conftest import file_metadata


@dataclasses.dataclass(frozen=True)
class Host:
    """What lies outside the sandbox for an attempt to aim at."""

    pid: int
    bystander: int
    tcp_port: int
    unix_path: str
    abstract_name: str
    tmp: Path
    #: A file in the venv, which the sandbox may read.
    target: str


Attempt = Callable[[], object]


def _in_zygote(make: Callable[[int], Attempt]) -> Callable[[Host], Attempt]:
    """An attempt aimed at the zygote, whose pid is known only inside the sandbox."""
    return lambda host: lambda: make(os.getppid())()


def _on_target(attempt: Callable[[str], object]) -> Callable[[Host], Attempt]:
    return lambda host: partial(attempt, host.target)


ESCAPES: list[tuple[str, Callable[[Host], Attempt], int]] = [
    # The private root: only the Python installation and system libraries exist.
    ("read /etc/passwd", lambda h: partial(attempts.read_file, "/etc/passwd"), errno.ENOENT),
    ("stat /etc/shadow", lambda h: partial(attempts.size_of, "/etc/shadow"), errno.ENOENT),
    ("read /proc/self/environ", lambda h: partial(attempts.read_file, "/proc/self/environ"),
     errno.ENOENT),
    ("read the zygote's memory",
     _in_zygote(lambda pid: partial(attempts.read_file, f"/proc/{pid}/mem")), errno.ENOENT),
    ("stat the host's /proc/<pid>", lambda h: partial(attempts.size_of, f"/proc/{h.pid}"),
     errno.ENOENT),
    ("write a file in tmp", lambda h: partial(attempts.write_file, str(h.tmp / "x")),
     errno.ENOENT),
    ("write a file in the venv", lambda h: partial(attempts.write_file, f"{h.target}.written"),
     errno.EROFS),  # its mounts are read-only, which the kernel checks before Landlock
    # Landlock: read-only beneath those paths; "/" is the private root's own.
    ("list /", lambda h: partial(attempts.list_dir, "/"), errno.EACCES),
    # seccomp base filter: no file metadata changes (the read-only mounts are behind it).
    *[(f"{attempt.__name__} on a venv file", _on_target(attempt), errno.EPERM)
      for attempt in attempts.METADATA_CHANGES],
    # seccomp base filter: no sockets at all, no exec, no tracing, no namespaces.
    ("TCP connect to a host server", lambda h: partial(attempts.connect_tcp, h.tcp_port),
     errno.EPERM),
    ("UDP sendto", lambda h: attempts.send_udp, errno.EPERM),
    ("connect to a host UNIX socket", lambda h: partial(attempts.connect_unix, h.unix_path),
     errno.EPERM),
    ("connect to an abstract UNIX socket",
     lambda h: partial(attempts.connect_unix, h.abstract_name), errno.EPERM),
    ("open an AF_NETLINK socket",
     lambda h: partial(attempts.open_socket, socket.AF_NETLINK, socket.SOCK_RAW), errno.EPERM),
    ("open an AF_VSOCK socket", lambda h: partial(attempts.open_socket, 40), errno.EPERM),
    ("exec /bin/true", lambda h: attempts.exec_program, errno.EPERM),
    ("unshare(CLONE_NEWUSER)", lambda h: attempts.unshare_user, errno.EPERM),
    ("mount a file system", lambda h: attempts.mount_filesystem, errno.EPERM),
    ("io_uring_setup", lambda h: attempts.io_uring, errno.EPERM),
    ("ptrace the zygote", _in_zygote(lambda pid: partial(attempts.ptrace_attach, pid)),
     errno.EPERM),
    ("lower another process's rlimit",
     lambda h: partial(attempts.lower_limit_of, h.bystander), errno.EPERM),
    ("renice another process", lambda h: partial(attempts.renice, h.bystander), errno.EPERM),
    # Fork filter, per child.
    ("os.fork()", lambda h: attempts.fork, errno.EPERM),
    ("raw clone(SIGCHLD)", lambda h: attempts.raw_clone, errno.EPERM),
    ("subprocess.run", lambda h: attempts.run_subprocess, errno.EPERM),
    ("clone3", lambda h: attempts.clone3, errno.ENOSYS),
    # Landlock scope layer, per child: the zygote, the host and siblings share the uid.
    ("signal the zygote", _in_zygote(lambda pid: partial(attempts.signal_process, pid)),
     errno.EPERM),
    ("signal the host", lambda h: partial(attempts.signal_process, h.pid), errno.EPERM),
]  # fmt: skip

STILL_WORKS: list[tuple[str, Attempt]] = [
    ("list the Python installation", partial(attempts.list_dir, sys.prefix)),
    ("socketpair and asyncio", attempts.socketpair_and_asyncio),
    ("a thread", attempts.use_thread),
    ("a thread pool", attempts.use_thread_pool),
]


@pytest.fixture(scope="module")
def layers(require_layers: Callable[..., None]) -> Iterator[Layers]:
    require_layers(*Layer)
    stack = Layers.prepare(python_read_paths())
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def limits() -> ResourceLimits:
    return ResourceLimits(cpu_seconds=10, address_space=address_space_for(256 << 20))


@pytest.fixture
def host(
    bystander: int,
    tcp_listener: int,
    unix_listener: str,
    abstract_listener: str,
    tmp_path: Path,
    target: Path,
) -> Host:
    return Host(
        os.getpid(),
        bystander,
        tcp_listener,
        unix_listener,
        abstract_listener,
        tmp_path,
        str(target),
    )


def in_sandbox(layers: Layers, limits: ResourceLimits, attempt: Attempt) -> TrialOutcome:
    """Run ``attempt`` in a sandbox process forked from a freshly confined zygote."""

    def sandbox_process() -> object:
        layers.confine_child(limits)
        return attempt()

    def zygote() -> object:
        layers.confine_zygote()
        return dataclasses.asdict(run_trial(sandbox_process))

    report = run_trial(zygote, timeout=20)
    assert report.ok, f"the zygote failed: {report.describe()}"
    return TrialOutcome(**report.value)


@pytest.mark.parametrize(("name", "make", "code"), ESCAPES, ids=[e[0] for e in ESCAPES])
def test_escape_is_contained(
    layers: Layers,
    limits: ResourceLimits,
    host: Host,
    name: str,
    make: Callable[[Host], Attempt],
    code: int,
) -> None:
    before = file_metadata(Path(host.target))
    outcome = in_sandbox(layers, limits, make(host))
    assert outcome.errno == code, f"{name}: {outcome.describe()}"
    assert file_metadata(Path(host.target)) == before
    assert not os.path.exists(f"{host.target}.written")


@pytest.mark.parametrize(("name", "attempt"), STILL_WORKS, ids=[w[0] for w in STILL_WORKS])
def test_what_agents_need_still_works(
    layers: Layers, limits: ResourceLimits, name: str, attempt: Attempt
) -> None:
    outcome = in_sandbox(layers, limits, attempt)
    assert outcome.ok, f"{name}: {outcome.describe()}"


def test_new_imports_still_work(layers: Layers, limits: ResourceLimits) -> None:
    names = [
        name
        for name in (
            attempts.not_yet_imported(attempts.PURE_MODULES),
            attempts.not_yet_imported(attempts.LINKED_MODULES),
        )
        if name is not None
    ]
    for name in names:
        outcome = in_sandbox(layers, limits, partial(attempts.import_module, name))
        assert outcome.ok, f"import {name}: {outcome.describe()}"


def test_os_system_fails(layers: Layers, limits: ResourceLimits) -> None:
    outcome = in_sandbox(layers, limits, attempts.run_shell)
    assert outcome.ok
    assert outcome.value != 0


def test_no_capabilities_remain(layers: Layers, limits: ResourceLimits) -> None:
    outcome = in_sandbox(layers, limits, attempts.read_capabilities)
    assert outcome.value == {"effective": 0, "permitted": 0}


def test_limits_cannot_be_raised(layers: Layers, limits: ResourceLimits) -> None:
    outcome = in_sandbox(layers, limits, attempts.raise_own_cpu_limit)
    assert outcome.error == "ValueError", outcome.describe()


@pytest.mark.layers(*(layer for layer in Layer if layer is not Layer.MOUNT_NAMESPACE))
def test_without_the_private_root_landlock_still_contains(limits: ResourceLimits) -> None:
    """What --insecure-sandbox runs where the mount namespace is missing: the paths are
    there to see again, but Landlock still refuses to open them."""
    layers = Layers.prepare(python_read_paths(), skip=[Layer.MOUNT_NAMESPACE])
    try:
        assert layers.root is None
        outcome = in_sandbox(layers, limits, partial(attempts.read_file, "/etc/passwd"))
        assert outcome.errno == errno.EACCES, outcome.describe()
        assert in_sandbox(layers, limits, partial(attempts.size_of, "/etc/passwd")).ok
    finally:
        layers.close()


def test_a_memory_hog_gets_memory_error(layers: Layers, limits: ResourceLimits) -> None:
    outcome = in_sandbox(layers, limits, partial(attempts.allocate, 2 << 30))
    assert outcome.error == "MemoryError", outcome.describe()
