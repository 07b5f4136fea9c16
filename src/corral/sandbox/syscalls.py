"""The kernel interface every layer shares: libc through ctypes, syscall numbers, errors.

glibc 2.36 has no wrappers for ``landlock_*``, ``seccomp``, ``capset`` or ``clone3``, and
the alternative (libseccomp and friends) would be our only compiled dependency, so the
layers call ``syscall(2)`` directly. Numbers differ per architecture; x86_64 and aarch64
are listed (both little-endian, which the seccomp programs rely on), anything else raises
:class:`~corral.sandbox.errors.SandboxUnavailable` rather than guessing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

from corral.errors import SandboxError, SandboxUnavailable

# Only the calls the sandbox makes or filters. Numbers from the kernel's
# arch/x86/entry/syscalls/syscall_64.tbl and include/uapi/asm-generic/unistd.h (aarch64;
# scripts/syscall.tbl since Linux 6.11). Calls newer than the oldest supported kernel
# (fchmodat2 6.6, setxattrat and removexattrat 6.13, open_tree_attr 6.15, file_setattr
# 6.17) are listed too: a filter must deny them before a kernel upgrade brings them.
_X86_64: dict[str, int] = {
    "add_key": 248, "bpf": 321, "capget": 125, "capset": 126, "chmod": 90, "chown": 92,
    "chroot": 161, "clone": 56, "clone3": 435, "delete_module": 176, "execve": 59,
    "execveat": 322, "fchmod": 91, "fchmodat": 268, "fchmodat2": 452, "fchown": 93,
    "fchownat": 260, "file_setattr": 469, "finit_module": 313, "fork": 57, "fremovexattr": 199,
    "fsconfig": 431, "fsetxattr": 190, "fsmount": 432, "fsopen": 430, "fspick": 433,
    "futimesat": 261, "init_module": 175, "io_uring_enter": 426, "io_uring_register": 427,
    "io_uring_setup": 425, "ioctl": 16, "ioprio_set": 251, "kexec_file_load": 320,
    "kexec_load": 246, "keyctl": 250, "landlock_add_rule": 445, "landlock_create_ruleset": 444,
    "landlock_restrict_self": 446, "lchown": 94, "lremovexattr": 198, "lsetxattr": 189,
    "mount": 165, "mount_setattr": 442, "move_mount": 429, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "open_tree": 428, "open_tree_attr": 467, "perf_event_open": 298,
    "pidfd_getfd": 438, "pivot_root": 155, "prlimit64": 302, "process_madvise": 440,
    "process_vm_readv": 310, "process_vm_writev": 311, "ptrace": 101, "reboot": 169,
    "removexattr": 197, "removexattrat": 466, "request_key": 249, "sched_setaffinity": 203,
    "sched_setattr": 314, "sched_setparam": 142, "sched_setscheduler": 144, "seccomp": 317,
    "setns": 308, "setpriority": 141, "setrlimit": 160, "setxattr": 188, "setxattrat": 463,
    "socket": 41, "swapoff": 168, "swapon": 167, "umount2": 166, "unshare": 272,
    "userfaultfd": 323, "utime": 132, "utimensat": 280, "utimes": 235, "vfork": 58,
}  # fmt: skip

# aarch64 uses the generic table: no fork or vfork (glibc forks with clone), and none of
# the calls it replaced with an *at form (chmod, chown, lchown, utime, utimes, futimesat).
_AARCH64: dict[str, int] = {
    "add_key": 217, "bpf": 280, "capget": 90, "capset": 91, "chroot": 51, "clone": 220,
    "clone3": 435, "delete_module": 106, "execve": 221, "execveat": 281, "fchmod": 52,
    "fchmodat": 53, "fchmodat2": 452, "fchown": 55, "fchownat": 54, "file_setattr": 469,
    "finit_module": 273, "fremovexattr": 16, "fsconfig": 431, "fsetxattr": 7, "fsmount": 432,
    "fsopen": 430, "fspick": 433, "init_module": 105, "io_uring_enter": 426,
    "io_uring_register": 427, "io_uring_setup": 425, "ioctl": 29, "ioprio_set": 30,
    "kexec_file_load": 294, "kexec_load": 104, "keyctl": 219, "landlock_add_rule": 445,
    "landlock_create_ruleset": 444, "landlock_restrict_self": 446, "lremovexattr": 15,
    "lsetxattr": 6, "mount": 40, "mount_setattr": 442, "move_mount": 429,
    "name_to_handle_at": 264, "open_by_handle_at": 265, "open_tree": 428, "open_tree_attr": 467,
    "perf_event_open": 241, "pidfd_getfd": 438, "pivot_root": 41, "prlimit64": 261,
    "process_madvise": 440, "process_vm_readv": 270, "process_vm_writev": 271, "ptrace": 117,
    "reboot": 142, "removexattr": 14, "removexattrat": 466, "request_key": 218,
    "sched_setaffinity": 122, "sched_setattr": 274, "sched_setparam": 118,
    "sched_setscheduler": 119, "seccomp": 277, "setns": 268, "setpriority": 140,
    "setrlimit": 164, "setxattr": 5, "setxattrat": 463, "socket": 198, "swapoff": 225,
    "swapon": 224, "umount2": 39, "unshare": 97, "userfaultfd": 282, "utimensat": 88,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Arch:
    """What the seccomp programs need to know about the running architecture."""

    name: str
    #: ``AUDIT_ARCH_*``: the value seccomp reports in ``seccomp_data.arch``.
    audit_arch: int
    #: Syscall numbers at or above this belong to another ABI sharing ``audit_arch``
    #: (x32 on x86_64); None where there is none.
    foreign_nr_base: int | None
    numbers: Mapping[str, int]


_ARCHES = {
    "x86_64": Arch("x86_64", 0xC000003E, 0x40000000, _X86_64),
    "aarch64": Arch("aarch64", 0xC00000B7, None, _AARCH64),
}


@functools.cache
def current_arch() -> Arch:
    """The running architecture, or SandboxUnavailable where the numbers are unknown."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if sys.platform != "linux" or machine not in _ARCHES or sys.byteorder != "little":
        raise SandboxUnavailable(
            f"the sandbox supports Linux on x86_64 and aarch64, not {sys.platform} on "
            f"{platform.machine()} ({sys.byteorder}-endian)",
            ("seccomp",),
        )
    return _ARCHES[machine]


def syscall_number(name: str) -> int:
    """The number of syscall ``name`` on this architecture (KeyError if it has none)."""
    return current_arch().numbers[name]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_prctl = _libc.prctl
_prctl.restype = ctypes.c_int
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def raise_errno(what: str) -> NoReturn:
    """Raise OSError for the errno left by the last ctypes call (its subclass, e.g.
    PermissionError for EPERM, comes from OSError's own errno mapping)."""
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def syscall(name: str, *args: object) -> int:
    """Call syscall ``name``; raise OSError on -1.

    Integer arguments are passed as C ``long``: ``syscall(2)`` is variadic and reads every
    argument as a long, so a bare Python int (passed as a 32-bit int) could leave garbage
    in the upper half of a register. Pass pointers as ``ctypes.byref(...)``.
    """
    converted = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    result: int = _syscall(ctypes.c_long(syscall_number(name)), *converted)
    if result == -1:
        raise_errno(name)
    return result


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """``prctl(2)``; raise OSError on failure."""
    result: int = _prctl(option, arg2, arg3, arg4, arg5)
    if result == -1:
        raise_errno(f"prctl({option})")
    return result


def require_single_thread(what: str) -> None:
    """Refuse to apply a per-thread kernel restriction while other Python threads run.

    Landlock's restrict_self applies to the calling thread only and unshare(CLONE_NEWUSER)
    fails with EINVAL in a threaded process; the other threads would escape the layer.
    Threads started from C are invisible here; the zygote and a fresh fork have none.
    """
    if threading.active_count() > 1:
        raise SandboxError(
            f"{what} must run in a single-threaded process: "
            f"{threading.active_count()} threads are alive (apply it in the zygote or "
            "in a freshly forked child, before any thread starts)"
        )
