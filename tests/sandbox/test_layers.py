"""Each layer on its own: what it stops, and what it must leave working.

Filters and rulesets are built once here, in the test process, and applied in forked
children, as the zygote will do. Every test runs its attempt in a child through
``run_trial`` and asserts on the child's report: the errno it saw, or how it died.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from corral.sandbox import seccomp
from corral.sandbox.capabilities import drop_capabilities, set_no_new_privs
from corral.sandbox.landlock import Ruleset, python_read_paths
from corral.sandbox.layers import Layer
from corral.sandbox.namespaces import enter_private_network
from corral.sandbox.rlimits import ResourceLimits, address_space_for
from corral.sandbox.rootfs import enter_private_root
from corral.sandbox.trial import TrialOutcome, run_trial
from tests.sandbox import attempts
from tests.sandbox.conftest import file_metadata

Setup = Callable[[], None]


def under(setup: Setup, attempt: Callable[[], object], timeout: float = 10) -> TrialOutcome:
    """Apply ``setup`` in a forked child, then make the attempt there; report the outcome."""

    def child() -> object:
        setup()
        return attempt()

    return run_trial(child, timeout)


def in_order(*steps: Callable[[], object]) -> Setup:
    def setup() -> None:
        for step in steps:
            step()

    return setup


def denied(outcome: TrialOutcome, code: int) -> bool:
    assert outcome.errno == code, outcome.describe()
    return True


# -- the layers, built once in this process -------------------------------------------


@pytest.fixture(scope="module")
def landlock(require_layers: Callable[..., None]) -> Iterator[Setup]:
    require_layers(Layer.LANDLOCK)
    with Ruleset.read_only(python_read_paths()) as ruleset:
        yield in_order(set_no_new_privs, ruleset.restrict_self)


@pytest.fixture(scope="module")
def landlock_scopes(require_layers: Callable[..., None]) -> Iterator[Setup]:
    require_layers(Layer.LANDLOCK_SCOPES)
    with Ruleset.scope_only() as ruleset:
        yield in_order(set_no_new_privs, ruleset.restrict_self)


@pytest.fixture(scope="module")
def base_filter(require_layers: Callable[..., None]) -> Setup:
    require_layers(Layer.SECCOMP)
    program = seccomp.base_filter()
    return in_order(set_no_new_privs, program.load)


@pytest.fixture(scope="module")
def fork_filter(require_layers: Callable[..., None]) -> Setup:
    require_layers(Layer.SECCOMP)
    program = seccomp.child_filter()
    return in_order(set_no_new_privs, program.load)


@pytest.fixture(scope="module")
def private_network(require_layers: Callable[..., None]) -> Setup:
    require_layers(Layer.NETWORK_NAMESPACE, Layer.CAPABILITIES)
    return in_order(enter_private_network, drop_capabilities)


@pytest.fixture(scope="module")
def private_root(require_layers: Callable[..., None]) -> Setup:
    """The mount namespace, entered as the zygote does (its user namespace grants the
    mounts), with the capabilities dropped after it; no Landlock, no seccomp."""
    require_layers(Layer.NETWORK_NAMESPACE, Layer.MOUNT_NAMESPACE)
    paths = python_read_paths()
    return in_order(enter_private_network, partial(enter_private_root, paths), drop_capabilities)


# -- Landlock: read-only on the Python installation ----------------------------------


def test_landlock_denies_reading_outside_the_python_installation(landlock: Setup) -> None:
    assert denied(under(landlock, partial(attempts.read_file, "/etc/passwd")), errno.EACCES)


def test_landlock_denies_writing_anywhere(landlock: Setup, tmp_path: Path) -> None:
    outcome = under(landlock, partial(attempts.write_file, str(tmp_path / "escape.txt")))
    assert denied(outcome, errno.EACCES)
    assert not (tmp_path / "escape.txt").exists()


def test_landlock_denies_listing_the_root(landlock: Setup) -> None:
    assert denied(under(landlock, partial(attempts.list_dir, "/")), errno.EACCES)


def test_landlock_still_lists_the_python_installation(landlock: Setup) -> None:
    assert under(landlock, partial(attempts.list_dir, sys.prefix)).ok


@pytest.mark.parametrize(
    "candidates", [attempts.PURE_MODULES, attempts.LINKED_MODULES], ids=["pure", "linked"]
)
def test_landlock_still_imports_stdlib_modules_not_loaded_before(
    landlock: Setup, candidates: tuple[str, ...]
) -> None:
    """Pure modules need the prefix; C extensions linking a system library (libsqlite3,
    libncursesw...) need the system lib dir as well."""
    name = attempts.not_yet_imported(candidates)
    if name is None:
        pytest.skip(f"all of {candidates} are already imported in this process")
    outcome = under(landlock, partial(attempts.import_module, name))
    assert outcome.ok, outcome.describe()


@pytest.mark.layers(Layer.LANDLOCK_TCP)
def test_landlock_denies_tcp_connect(landlock: Setup, tcp_listener: int) -> None:
    assert denied(under(landlock, partial(attempts.connect_tcp, tcp_listener)), errno.EACCES)


def test_landlock_scopes_deny_signalling_outside_the_domain(
    landlock_scopes: Setup, bystander: int
) -> None:
    assert denied(under(landlock_scopes, partial(attempts.signal_process, bystander)), errno.EPERM)


def test_landlock_scopes_deny_abstract_unix_sockets(
    landlock_scopes: Setup, abstract_listener: str
) -> None:
    outcome = under(landlock_scopes, partial(attempts.connect_unix, abstract_listener))
    assert denied(outcome, errno.EPERM)


# -- seccomp: the base filter --------------------------------------------------------


@pytest.mark.parametrize(
    "family", [socket.AF_INET, socket.AF_INET6, socket.AF_UNIX], ids=lambda family: family.name
)
def test_base_filter_denies_every_new_socket(base_filter: Setup, family: int) -> None:
    assert denied(under(base_filter, partial(attempts.open_socket, family)), errno.EPERM)


def test_base_filter_keeps_host_unix_sockets_out_of_reach(
    base_filter: Setup, unix_listener: str
) -> None:
    """Landlock and the network namespace let this through; only seccomp stops it."""
    outcome = under(base_filter, partial(attempts.connect_unix, unix_listener))
    assert denied(outcome, errno.EPERM)  # and unix_listener asserts nobody connected


def test_base_filter_denies_exec(base_filter: Setup) -> None:
    assert denied(under(base_filter, attempts.exec_program), errno.EPERM)


def test_base_filter_makes_os_system_fail(base_filter: Setup) -> None:
    outcome = under(base_filter, attempts.run_shell)
    assert outcome.ok
    assert outcome.value != 0  # the forked shell cannot exec: status 127


def test_base_filter_denies_ptrace(base_filter: Setup, bystander: int) -> None:
    assert denied(under(base_filter, partial(attempts.ptrace_attach, bystander)), errno.EPERM)


@pytest.mark.parametrize(
    "attempt",
    [attempts.unshare_user, attempts.clone_namespace, attempts.mount_filesystem, attempts.io_uring],
)
def test_base_filter_denies_namespaces_mounts_and_io_uring(
    base_filter: Setup, attempt: Callable[[], object]
) -> None:
    assert denied(under(base_filter, attempt), errno.EPERM)


@pytest.mark.parametrize("attempt", [attempts.lower_limit_of, attempts.renice])
def test_base_filter_denies_touching_another_process(
    base_filter: Setup, bystander: int, attempt: Callable[[int], object]
) -> None:
    """Same uid is all prlimit and setpriority ask for, and the sandbox keeps the host's."""
    assert denied(under(base_filter, partial(attempt, bystander)), errno.EPERM)


def test_base_filter_keeps_socketpair_and_asyncio_working(base_filter: Setup) -> None:
    outcome = under(base_filter, attempts.socketpair_and_asyncio)
    assert outcome.value == "ping", outcome.describe()


def test_base_filter_still_lets_the_zygote_fork(base_filter: Setup) -> None:
    assert under(base_filter, attempts.fork).ok


def test_base_filter_answers_enosys_to_clone3(base_filter: Setup) -> None:
    assert denied(under(base_filter, attempts.clone3), errno.ENOSYS)


@pytest.mark.parametrize("attempt", attempts.METADATA_CHANGES)
def test_base_filter_denies_changing_file_metadata(
    base_filter: Setup, target: Path, attempt: Callable[[str], object]
) -> None:
    """Landlock has no right for metadata, and the file is the test's own."""
    before = file_metadata(target)
    assert denied(under(base_filter, partial(attempt, str(target))), errno.EPERM)
    assert file_metadata(target) == before


def test_base_filter_still_lets_metadata_be_read(base_filter: Setup, target: Path) -> None:
    outcome = under(base_filter, partial(_metadata_seen_inside, str(target)))
    assert outcome.value == _metadata_seen_inside(str(target)), outcome.describe()


def _metadata_seen_inside(path: str) -> dict[str, Any]:
    stat = os.stat(path)
    return {"mode": stat.st_mode, "xattrs": os.listxattr(path), "access": os.access(path, os.R_OK)}


# -- seccomp: the per-child fork filter ----------------------------------------------


@pytest.mark.parametrize("attempt", [attempts.fork, attempts.raw_clone, attempts.run_subprocess])
def test_fork_filter_denies_new_processes(
    fork_filter: Setup, attempt: Callable[[], object]
) -> None:
    assert denied(under(fork_filter, attempt), errno.EPERM)


def test_fork_filter_answers_enosys_to_clone3(fork_filter: Setup) -> None:
    assert denied(under(fork_filter, attempts.clone3), errno.ENOSYS)


@pytest.mark.parametrize("attempt", [attempts.use_thread, attempts.use_thread_pool])
def test_fork_filter_keeps_threads_working(
    fork_filter: Setup, attempt: Callable[[], object]
) -> None:
    outcome = under(fork_filter, attempt)
    assert outcome.ok, outcome.describe()


def test_fork_filter_freezes_the_rlimits(fork_filter: Setup) -> None:
    outcome = under(fork_filter, attempts.raise_own_cpu_limit)
    assert outcome.error == "ValueError", outcome.describe()  # how Python reports EPERM here


# -- user + network namespace, capabilities -------------------------------------------


def test_private_network_cannot_reach_the_hosts_loopback(
    private_network: Setup, tcp_listener: int
) -> None:
    outcome = under(private_network, partial(attempts.connect_tcp, tcp_listener))
    assert outcome.errno in (errno.ENETUNREACH, errno.ECONNREFUSED), outcome.describe()


def test_private_network_leaves_no_capabilities(private_network: Setup) -> None:
    outcome = under(private_network, attempts.proc_status_capabilities)
    assert outcome.value == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}


@pytest.mark.layers(Layer.CAPABILITIES)
def test_dropping_capabilities_alone_empties_every_set() -> None:
    outcome = under(drop_capabilities, attempts.proc_status_capabilities)
    assert outcome.ok, outcome.describe()
    assert outcome.value["CapEff"] == outcome.value["CapPrm"] == outcome.value["CapAmb"] == 0


# -- the private root (mount namespace) -----------------------------------------------


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "/etc/shadow", "/proc/1", "/proc/self", "/dev/null"]
)
def test_private_root_hides_every_other_path(private_root: Setup, path: str) -> None:
    assert denied(under(private_root, partial(attempts.size_of, path)), errno.ENOENT)


def test_private_root_hides_the_hosts_processes(private_root: Setup, bystander: int) -> None:
    outcome = under(private_root, partial(attempts.size_of, f"/proc/{bystander}/status"))
    assert denied(outcome, errno.ENOENT)


def test_private_root_holds_the_readable_paths_only(private_root: Setup) -> None:
    """Nothing but the way to each readable path: its first component is all "/" lists."""
    outcome = under(private_root, partial(os.listdir, "/"))
    tops = {Path(path).parts[1] for path in python_read_paths()}
    assert set(outcome.value) == tops, outcome.describe()


def test_private_root_still_reads_and_lists_the_python_installation(private_root: Setup) -> None:
    assert under(private_root, partial(attempts.list_dir, sys.prefix)).ok
    outcome = under(private_root, partial(attempts.read_file, os.__file__))
    assert outcome.ok, outcome.describe()


@pytest.mark.parametrize(
    "candidates", [attempts.PURE_MODULES, attempts.LINKED_MODULES], ids=["pure", "linked"]
)
def test_private_root_still_imports_stdlib_modules_not_loaded_before(
    private_root: Setup, candidates: tuple[str, ...]
) -> None:
    name = attempts.not_yet_imported(candidates)
    if name is None:
        pytest.skip(f"all of {candidates} are already imported in this process")
    outcome = under(private_root, partial(attempts.import_module, name))
    assert outcome.ok, outcome.describe()


@pytest.mark.parametrize("attempt", attempts.METADATA_CHANGES)
def test_private_root_refuses_metadata_changes_too(
    private_root: Setup, target: Path, attempt: Callable[[str], object]
) -> None:
    """The second wall, behind seccomp: the bind mounts are read-only."""
    before = file_metadata(target)
    assert denied(under(private_root, partial(attempt, str(target))), errno.EROFS)
    assert file_metadata(target) == before


def test_private_root_refuses_writes(private_root: Setup, target: Path) -> None:
    written = target.with_name(f"{target.name}.written")
    assert denied(under(private_root, partial(attempts.write_file, str(written))), errno.EROFS)
    assert not written.exists()


def test_the_hosts_ipc_objects_are_left_behind(private_root: Setup, sysv_segment: int) -> None:
    assert under(lambda: None, partial(attempts.find_sysv_segment, sysv_segment)).ok  # as is
    outcome = under(private_root, partial(attempts.find_sysv_segment, sysv_segment))
    assert denied(outcome, errno.ENOENT)


@pytest.mark.layers(Layer.NETWORK_NAMESPACE, Layer.MOUNT_NAMESPACE)
def test_private_root_keeps_paths_spelled_through_a_symlink(tmp_path: Path) -> None:
    """A venv or a home directory reached through a symbolic link keeps importing."""
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "corral_spelled.py").write_text("WHERE = 'real'\n")
    (tmp_path / "link").symlink_to("real")

    def import_through_the_link() -> str:
        sys.path.insert(0, str(tmp_path / "link"))
        enter_private_network()
        enter_private_root(python_read_paths([tmp_path / "real"]))
        return attempts.import_module("corral_spelled")

    outcome = run_trial(import_through_the_link)
    assert outcome.ok, outcome.describe()
    assert str(tmp_path / "link" / "corral_spelled.py") in outcome.value


# -- rlimits -------------------------------------------------------------------------


def test_cpu_limit_kills_a_busy_loop_with_sigxcpu() -> None:
    outcome = under(ResourceLimits(cpu_seconds=1).apply, attempts.burn_cpu, timeout=20)
    assert outcome.signal == signal.SIGXCPU, outcome.describe()


def test_address_space_limit_turns_a_huge_allocation_into_memory_error() -> None:
    limits = ResourceLimits(cpu_seconds=10, address_space=address_space_for(256 << 20))
    outcome = under(limits.apply, partial(attempts.allocate, 2 << 30))
    assert outcome.error == "MemoryError", outcome.describe()


def test_address_space_limit_leaves_the_budget_usable() -> None:
    limits = ResourceLimits(cpu_seconds=10, address_space=address_space_for(256 << 20))
    outcome = under(limits.apply, partial(attempts.allocate, 128 << 20))
    assert outcome.ok, outcome.describe()


def test_file_size_limit_stops_writes_to_inherited_files(tmp_path: Path) -> None:
    """Why sandbox processes need pipes or /dev/null as stdout and stderr."""
    with open(tmp_path / "log", "w") as log:
        outcome = under(ResourceLimits(cpu_seconds=10).apply, partial(_write_to, log.fileno()))
    assert denied(outcome, errno.EFBIG)


def _write_to(fd: int) -> int:
    return os.write(fd, b"x")
