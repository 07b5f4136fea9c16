"""Which sandbox layers this machine provides, found by trying each one.

Kernel version numbers do not answer the question: Landlock may be built but not enabled,
user namespaces may be disabled by a sysctl, a container runtime may filter the very
syscalls we need. So each layer is applied, and its effect checked, in a throwaway forked
child (:func:`corral.sandbox.trial.run_trial`); the calling process is never restricted. This
is what ``corral doctor`` prints and what the runtime checks before refusing to start
without ``--insecure-sandbox``. It costs a few milliseconds per layer.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

from corral.errors import SandboxUnavailable
from corral.sandbox import landlock, seccomp
from corral.sandbox.capabilities import (
    bounding_set,
    capabilities,
    drop_capabilities,
    no_new_privs,
    set_no_new_privs,
)
from corral.sandbox.layers import Layer, Layers
from corral.sandbox.namespaces import enter_private_network, network_namespace
from corral.sandbox.rlimits import ResourceLimits, address_space_for
from corral.sandbox.rootfs import enter_private_root
from corral.sandbox.syscalls import current_arch
from corral.sandbox.trial import TrialOutcome, run_trial

#: The extra entry that applies every available layer in production order.
FULL_STACK = "full-stack"

_REMEDIES = {
    Layer.NETWORK_NAMESPACE: (
        "allow user namespaces: sysctl user.max_user_namespaces > 0 (and, where present, "
        "kernel.unprivileged_userns_clone=1 or kernel.apparmor_restrict_unprivileged_userns=0);"
        " in a container, let it create them (e.g. Docker's default seccomp profile blocks "
        "unshare unless the container is privileged)"
    ),
    Layer.MOUNT_NAMESPACE: (
        "make the network-namespace layer work (its user namespace grants the mounts), on "
        "Linux 5.12+ (open_tree, move_mount, mount_setattr); in a container, let it mount "
        "(e.g. Docker's default seccomp and AppArmor profiles forbid it)"
    ),
    Layer.CAPABILITIES: "run on a kernel that supports capset (any Linux)",
    Layer.NO_NEW_PRIVS: "run on Linux 3.5 or later",
    Layer.LANDLOCK: (
        "run Linux 5.13+ built with CONFIG_SECURITY_LANDLOCK and 'landlock' in the lsm= "
        "boot parameter"
    ),
    Layer.LANDLOCK_TCP: "run Linux 6.7+ (Landlock ABI 4)",
    Layer.LANDLOCK_SCOPES: "run Linux 6.12+ (Landlock ABI 6)",
    Layer.SECCOMP: (
        "run a kernel with CONFIG_SECCOMP_FILTER on x86_64 or aarch64, outside any "
        "container profile that forbids nested filters"
    ),
    Layer.RLIMITS: "run on Linux",
    FULL_STACK: "fix the missing layers above; if none is missing, report a bug",
}


@dataclass(frozen=True, slots=True)
class LayerSupport:
    """One layer: whether it works here and the detail (ABI version, errno) saying why."""

    name: str
    available: bool
    detail: str
    remedy: str = ""


@dataclass(frozen=True, slots=True)
class SupportReport:
    """One :class:`LayerSupport` per layer, in the order they are applied."""

    layers: tuple[LayerSupport, ...]

    def __iter__(self) -> Iterator[LayerSupport]:
        return iter(self.layers)

    def __getitem__(self, name: str) -> LayerSupport:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def missing(self) -> tuple[LayerSupport, ...]:
        return tuple(layer for layer in self.layers if not layer.available)

    @property
    def complete(self) -> bool:
        """True if every layer, and all of them together, work here."""
        return not self.missing

    def require(self) -> None:
        """Raise SandboxUnavailable, naming each missing layer and its fix, unless complete."""
        if self.complete:
            return
        lines = [f"  - {m.name}: {m.detail}. To fix: {m.remedy}." for m in self.missing]
        raise SandboxUnavailable(
            "The sandbox is incomplete on this machine, so Corral will not run agent code:\n"
            + "\n".join(lines)
            + "\nTo run agents without these layers anyway (only code you trust), start "
            "with --insecure-sandbox.",
            tuple(m.name for m in self.missing),
        )

    def __str__(self) -> str:
        width = max(len(layer.name) for layer in self.layers)
        return "\n".join(
            f"{'ok' if layer.available else 'MISSING':7} {layer.name:{width}}  {layer.detail}"
            for layer in self.layers
        )


class _Unavailable(Exception):
    """Raised in a probe child when a layer is missing for a reason worth saying as is."""


def probe_support() -> SupportReport:
    """Try every layer in a throwaway child; report what works. Never restricts the caller."""
    results = [_probe(name, check) for name, check in _CHECKS]
    missing = [r.name for r in results if not r.available]
    results.append(_probe(FULL_STACK, lambda: _check_full_stack(missing)))
    return SupportReport(tuple(results))


def _probe(name: str, check: Callable[[], str]) -> LayerSupport:
    outcome = run_trial(check)
    if outcome.ok:
        return LayerSupport(str(name), True, str(outcome.value))
    return LayerSupport(str(name), False, _explain(outcome), _REMEDIES[name])


def _explain(outcome: TrialOutcome) -> str:
    if outcome.error == _Unavailable.__name__:
        return outcome.message
    if outcome.errno is not None:
        name = errno.errorcode.get(outcome.errno, str(outcome.errno))
        return f"{name}: {outcome.message}"
    return outcome.describe()


def _expect_errno(code: int, attempt: Callable[[], object], what: str) -> None:
    try:
        attempt()
    except OSError as exc:
        if exc.errno == code:
            return
        raise _Unavailable(f"{what} failed with {exc!r}, not {errno.errorcode[code]}") from exc
    raise _Unavailable(f"{what} still succeeds with the layer applied")


def _landlock_abi(minimum: int) -> int:
    try:
        abi = landlock.abi_version()
    except OSError as exc:
        raise _Unavailable(landlock.unavailable_reason(exc)) from exc
    if abi < minimum:
        raise _Unavailable(f"Landlock ABI {abi}, this layer needs ABI {minimum}")
    return abi


def _check_network_namespace() -> str:
    before = network_namespace()
    enter_private_network()
    after = network_namespace()
    if after == before:
        raise _Unavailable("unshare succeeded but the network namespace did not change")
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    _expect_errno(errno.ENETUNREACH, lambda: probe.connect(("127.0.0.1", 9)), "connect()")
    return f"user namespace + empty network namespace {after}"


def _check_mount_namespace() -> str:
    paths = landlock.python_read_paths()
    enter_private_network()  # as the zygote does: its user namespace grants the mounts
    enter_private_root(paths)
    for hidden in ("/etc/passwd", "/proc/self"):
        _expect_errno(errno.ENOENT, partial(os.stat, hidden), f"stat({hidden!r})")
    if not os.path.isdir(paths[0]) or os.access(paths[0], os.W_OK):
        raise _Unavailable(f"{paths[0]} is missing or writable in the private root")
    return f"read-only root of the {len(paths)} readable paths (no /etc, /proc, /tmp); own IPC"


def _check_capabilities() -> str:
    drop_capabilities()
    if not capabilities().empty:
        raise _Unavailable(f"capabilities remain after capset: {capabilities()}")
    bounding = bounding_set()
    kept = f"; bounding set kept ({bounding:#x}): no CAP_SETPCAP" if bounding else ""
    return f"effective, permitted, inheritable and ambient sets emptied{kept}"


def _check_no_new_privs() -> str:
    set_no_new_privs()
    if not no_new_privs():
        raise _Unavailable("PR_SET_NO_NEW_PRIVS did not stick")
    return "set"


def _check_landlock() -> str:
    abi = _landlock_abi(1)
    ruleset = landlock.Ruleset.read_only(landlock.python_read_paths(), abi)
    set_no_new_privs()
    ruleset.restrict_self()
    _expect_errno(errno.EACCES, lambda: os.open("/", os.O_RDONLY | os.O_DIRECTORY), "open('/')")
    return f"ABI {abi}: read-only beneath the Python installation and system libraries"


def _check_landlock_tcp() -> str:
    abi = _landlock_abi(landlock.ABI_TCP)
    ruleset = landlock.Ruleset.read_only([], abi)
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    set_no_new_privs()
    ruleset.restrict_self()
    _expect_errno(errno.EACCES, lambda: probe.bind(("127.0.0.1", 0)), "TCP bind()")
    return f"ABI {abi}: TCP bind and connect denied"


def _check_landlock_scopes() -> str:
    abi = _landlock_abi(landlock.ABI_SCOPES)
    set_no_new_privs()
    landlock.Ruleset.scope_only(abi).restrict_self()
    _expect_errno(errno.EPERM, lambda: os.kill(os.getppid(), 0), "kill(parent, 0)")
    return f"ABI {abi}: signals and abstract UNIX sockets scoped"


def _check_seccomp() -> str:
    base, child = seccomp.base_filter(), seccomp.child_filter()
    set_no_new_privs()
    base.load()
    _expect_errno(errno.EPERM, lambda: socket.socket(socket.AF_UNIX), "socket(AF_UNIX)")
    # Harmless either way: without the filter the answer is ENOENT.
    _expect_errno(errno.EPERM, partial(os.chmod, "/nonexistent/corral", 0o4755), "chmod()")
    for end in socket.socketpair():
        end.close()
    child.load()
    _expect_errno(errno.EPERM, os.fork, "fork()")
    return f"{current_arch().name}: base filter {len(base)} and child filter {len(child)} insns"


def _check_rlimits() -> str:
    ResourceLimits(cpu_seconds=5, address_space=address_space_for(64 << 20), open_files=64).apply()
    if resource.getrlimit(resource.RLIMIT_CPU) != (5, 6):
        raise _Unavailable(f"RLIMIT_CPU reads {resource.getrlimit(resource.RLIMIT_CPU)}")
    return "CPU, AS, NOFILE, CORE and FSIZE set"


def _check_full_stack(missing: list[str]) -> str:
    layers = Layers.prepare(landlock.python_read_paths(), skip=missing)
    layers.confine_zygote()
    child = run_trial(lambda: _check_child_layers(layers))
    if not child.ok:
        raise _Unavailable(f"a child of the confined process failed: {child.describe()}")
    skipped = f" (without {', '.join(missing)})" if missing else ""
    return f"zygote and child layers apply together{skipped}: {child.value}"


def _check_child_layers(layers: Layers) -> str:
    layers.confine_child(ResourceLimits(cpu_seconds=5))
    if layers.child_filter is not None:
        _expect_errno(errno.EPERM, os.fork, "fork() in a child")
    thread = threading.Thread(target=lambda: None)
    thread.start()
    thread.join()
    return "forks denied, threads run"


_CHECKS: tuple[tuple[str, Callable[[], str]], ...] = (
    (Layer.NETWORK_NAMESPACE, _check_network_namespace),
    (Layer.MOUNT_NAMESPACE, _check_mount_namespace),
    (Layer.CAPABILITIES, _check_capabilities),
    (Layer.NO_NEW_PRIVS, _check_no_new_privs),
    (Layer.LANDLOCK, _check_landlock),
    (Layer.LANDLOCK_TCP, _check_landlock_tcp),
    (Layer.LANDLOCK_SCOPES, _check_landlock_scopes),
    (Layer.SECCOMP, _check_seccomp),
    (Layer.RLIMITS, _check_rlimits),
)
