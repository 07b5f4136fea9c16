"""A private, empty network namespace, entered through a user namespace.

Creating a network namespace needs CAP_SYS_ADMIN; a new user namespace grants it inside,
so the same call works for root and for an unprivileged worker. The new namespace has
only a loopback interface, and it is down: connect() to anything, 127.0.0.1 included,
fails with ENETUNREACH, and UDP, raw and vsock traffic go nowhere.

The caller's uid and gid are mapped to themselves, so files keep their owners and
permissions inside. Capabilities gained in the new user namespace are valid only there
(they cannot raise rlimits or touch the host's resources) and are dropped right after by
:func:`corral.sandbox.capabilities.drop_capabilities`.
"""

from __future__ import annotations

import os

from corral.sandbox.syscalls import require_single_thread, syscall

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def enter_private_network() -> None:
    """Move the calling process into a new user and network namespace, for good.

    Do it before dropping capabilities and before Landlock (it writes to /proc/self), in
    a single-threaded process (the kernel refuses a new user namespace with EINVAL
    otherwise). Whatever needs the host's privileges (cgroup setup) must come first.
    """
    require_single_thread("entering a user namespace")
    uid, gid = os.geteuid(), os.getegid()
    syscall("unshare", CLONE_NEWUSER | CLONE_NEWNET)
    # Without CAP_SETGID in the parent namespace a gid_map needs setgroups disabled
    # first; with it, disabling it anyway means the sandbox can never change groups.
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
    _write("/proc/self/gid_map", f"{gid} {gid} 1\n")


def network_namespace() -> str:
    """The calling process's network namespace identity, e.g. ``net:[4026531840]``."""
    return os.readlink("/proc/self/ns/net")


def _write(path: str, text: str) -> None:
    # The kernel takes the map in a single write() call.
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
