"""Capabilities and no_new_privs: leave the sandbox no privilege to use or regain.

Root keeps uid 0 in the sandbox (the user namespace maps it to itself), so what stops it
is having no capabilities: without them, /proc/<zygote>/mem and ptrace of a same-uid
process are refused, and file permissions apply as to anyone. The probe saw a root child
*with* capabilities attach to and stop the zygote.
"""

from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass

from corral.sandbox.syscalls import prctl, syscall

_PR_CAPBSET_READ = 23
_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_GET_NO_NEW_PRIVS = 39
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAP_SETPCAP = 8


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


_CapDataPair = _CapData * 2  # version 3: two 32-bit halves of each 64-bit set


@dataclass(frozen=True, slots=True)
class CapabilitySets:
    """The calling thread's capability sets, as 64-bit masks (bit n = capability n)."""

    effective: int
    permitted: int
    inheritable: int

    @property
    def empty(self) -> bool:
        return self.effective == self.permitted == self.inheritable == 0


def capabilities() -> CapabilitySets:
    """Read the calling thread's capability sets (capget; works where /proc is denied)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _CapDataPair()
    syscall("capget", ctypes.byref(header), ctypes.byref(data))
    return CapabilitySets(
        effective=data[0].effective | data[1].effective << 32,
        permitted=data[0].permitted | data[1].permitted << 32,
        inheritable=data[0].inheritable | data[1].inheritable << 32,
    )


def drop_capabilities() -> None:
    """Empty the bounding, ambient, effective, permitted and inheritable sets.

    The bounding set can only shrink with CAP_SETPCAP, which a root process or one that
    just entered its own user namespace has; an unprivileged process without it has no
    capabilities to lose, and no_new_privs plus the denied execve keep it that way, so
    its bounding set is left alone rather than failing.
    """
    if capabilities().effective >> CAP_SETPCAP & 1:
        cap = 0
        while True:  # up to CAP_LAST_CAP, which only the kernel knows for sure
            try:
                prctl(_PR_CAPBSET_READ, cap)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                break
            prctl(_PR_CAPBSET_DROP, cap)
            cap += 1
    prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    syscall("capset", ctypes.byref(header), ctypes.byref(_CapDataPair()))


def bounding_set() -> int:
    """The calling thread's capability bounding set as a mask."""
    mask = 0
    cap = 0
    while True:
        try:
            if prctl(_PR_CAPBSET_READ, cap):
                mask |= 1 << cap
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            return mask
        cap += 1


def set_no_new_privs() -> None:
    """Set no_new_privs: nothing can gain privileges again (setuid bits, file
    capabilities), and the precondition for an unprivileged Landlock or seccomp filter."""
    prctl(_PR_SET_NO_NEW_PRIVS, 1)


def no_new_privs() -> bool:
    return prctl(_PR_GET_NO_NEW_PRIVS) == 1
