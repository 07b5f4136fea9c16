"""Landlock: read-only file access, no TCP, and scoped signals and abstract sockets.

A ruleset is built once, as a file descriptor, where building is cheap to get right
(the zygote: it opens every allowed path); applying it later with restrict_self is one
syscall, about 0.04 ms, so a forked child can afford its own layer.

What "read-only" grants, and why: READ_FILE and READ_DIR under the allowed paths and
nothing else. Not EXECUTE: Python loads C extensions with mmap, which Landlock does not
check, so it is not needed, and leaving it out makes Landlock a second wall (behind
seccomp) against running programs. Every other file right the kernel knows is handled,
so writes, truncation, device ioctls, links and renames are denied everywhere.

By ABI version: 1 file rights; 2 REFER; 3 TRUNCATE; 4 TCP bind/connect, denied here by
handling them with no rule allowing a port; 5 IOCTL_DEV; 6 scopes: signals and abstract
UNIX sockets cannot reach processes outside the caller's Landlock domain. A ruleset uses
everything the running kernel offers; :attr:`Ruleset.abi` says how much that was.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

from corral.errors import SandboxUnavailable
from corral.sandbox.syscalls import require_single_thread, syscall

ABI_TCP = 4
ABI_SCOPES = 6

_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
_ACCESS_FS_ABI1 = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
_ACCESS_FS_REFER = 1 << 13  # ABI 2
_ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3
_ACCESS_FS_IOCTL_DEV = 1 << 15  # ABI 5
_ACCESS_NET_TCP = (1 << 0) | (1 << 1)  # BIND_TCP | CONNECT_TCP, ABI 4
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
_SCOPE_SIGNAL = 1 << 1  # ABI 6

#: The rights :meth:`Ruleset.read_only` grants under each directory (files get READ_FILE).
READ_ONLY = ACCESS_FS_READ_FILE | ACCESS_FS_READ_DIR


class _RulesetAttr(ctypes.Structure):
    # Always passed whole: an older kernel accepts a larger struct whose extra fields are 0.
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def abi_version() -> int:
    """The kernel's Landlock ABI version.

    Raises OSError: ENOSYS when the kernel was built without Landlock, EOPNOTSUPP when it
    is built in but not enabled at boot (missing from the ``lsm=`` list).
    """
    return syscall("landlock_create_ruleset", None, 0, _CREATE_RULESET_VERSION)


def handled_fs_access(abi: int) -> int:
    """Every file-system right ABI ``abi`` knows; handled rights without a rule are denied."""
    access = _ACCESS_FS_ABI1
    if abi >= 2:
        access |= _ACCESS_FS_REFER
    if abi >= 3:
        access |= _ACCESS_FS_TRUNCATE
    if abi >= 5:
        access |= _ACCESS_FS_IOCTL_DEV
    return access


class Ruleset:
    """A Landlock ruleset held open as a file descriptor, to apply with :meth:`restrict_self`.

    The descriptor is close-on-exec and survives fork: build in the zygote, restrict in the
    child. Keep it open until every child that needs it has forked (and spare it when a
    child closes its inherited descriptors, until it has applied it).
    """

    def __init__(self, fd: int, abi: int, *, handles_tcp: bool, scoped: bool) -> None:
        self.fd = fd
        #: The ABI version the ruleset was built for.
        self.abi = abi
        #: True if TCP bind and connect are denied (ABI >= 4).
        self.handles_tcp = handles_tcp
        #: True if signals and abstract UNIX sockets are scoped to the domain (ABI >= 6).
        self.scoped = scoped

    @classmethod
    def read_only(cls, paths: Iterable[str | os.PathLike[str]], abi: int | None = None) -> Ruleset:
        """Read access beneath ``paths``, nothing else anywhere; TCP denied; scopes on.

        Every path must exist. Directories grant READ_FILE and READ_DIR beneath them,
        files READ_FILE (the kernel refuses directory rights on a file).
        """
        abi = abi_version() if abi is None else abi
        attr = _RulesetAttr(
            handled_fs_access(abi),
            _ACCESS_NET_TCP if abi >= ABI_TCP else 0,
            _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= ABI_SCOPES else 0,
        )
        ruleset = cls._create(attr, abi)
        try:
            for path in paths:
                ruleset._allow_beneath(path)
        except BaseException:
            ruleset.close()
            raise
        return ruleset

    @classmethod
    def scope_only(cls, abi: int | None = None) -> Ruleset:
        """A layer that only scopes signals and abstract UNIX sockets (ABI >= 6).

        Applied in each child, it puts the child in a domain of its own: it can no longer
        signal the zygote, its siblings or the host (which share its uid, and a shared uid
        is all kill() asks for), nor connect to their abstract sockets.
        """
        abi = abi_version() if abi is None else abi
        if abi < ABI_SCOPES:
            raise SandboxUnavailable(
                f"Landlock ABI {abi} has no scopes (needs ABI {ABI_SCOPES}, Linux 6.12): "
                "sandboxed processes could signal each other and the host",
                ("landlock-scopes",),
            )
        return cls._create(_RulesetAttr(0, 0, _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL), abi)

    @classmethod
    def _create(cls, attr: _RulesetAttr, abi: int) -> Ruleset:
        fd = syscall("landlock_create_ruleset", ctypes.byref(attr), ctypes.sizeof(attr), 0)
        return cls(fd, abi, handles_tcp=attr.handled_access_net != 0, scoped=attr.scoped != 0)

    def _allow_beneath(self, path: str | os.PathLike[str]) -> None:
        parent = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            is_dir = stat.S_ISDIR(os.fstat(parent).st_mode)
            rule = _PathBeneathAttr(READ_ONLY if is_dir else ACCESS_FS_READ_FILE, parent)
            try:
                syscall("landlock_add_rule", self.fd, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)
            except OSError as exc:
                raise OSError(exc.errno, f"landlock_add_rule({os.fspath(path)!r})") from None
        finally:
            os.close(parent)

    def restrict_self(self) -> None:
        """Confine the calling thread (and its future children) to this ruleset, for good.

        Needs no_new_privs (or CAP_SYS_ADMIN), else EPERM, and a single-threaded caller:
        the layer applies to the calling thread only.
        """
        require_single_thread("Landlock restrict_self")
        syscall("landlock_restrict_self", self.fd, 0)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Ruleset:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<landlock.Ruleset fd={self.fd} abi={self.abi}>"


def python_read_paths(extra: Iterable[str | os.PathLike[str]] = ()) -> list[str]:
    """The paths a sandboxed Python needs to read to keep importing: the installation,
    the virtual environment, the ``corral`` package (an editable install lives outside
    the venv), the system library directories C extensions link against (without them
    ``import sqlite3`` fails), then ``extra`` (the agent code, which must exist). Paths
    are resolved; missing system paths are left out, and so is any path beneath another.

    Not included on purpose: the working directory, ``/etc``, ``/proc``, ``/tmp``.
    """
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    system: list[str | Path] = [
        sys.base_prefix,
        sys.base_exec_prefix,
        sys.prefix,
        sys.exec_prefix,
        Path(__file__).resolve().parents[1],
        f"/usr/lib/{multiarch}",
        f"/lib/{multiarch}",
        "/usr/lib64",
        "/lib64",
    ]
    found = {Path(p).resolve() for p in system if os.path.exists(p)}
    found.update(Path(p).resolve(strict=True) for p in extra)  # a missing extra is an error
    return [str(path) for path in outermost(found)]


def outermost(paths: Iterable[Path]) -> list[Path]:
    """``paths`` sorted, without any that lies beneath another (which it already covers)."""
    kept: list[Path] = []
    for path in sorted(set(paths)):  # sorted, so an ancestor comes before what lies beneath
        if not any(path.is_relative_to(ancestor) for ancestor in kept):
            kept.append(path)
    return kept


def unavailable_reason(exc: OSError) -> str:
    """Explain an :func:`abi_version` failure in words ``corral doctor`` can print."""
    if exc.errno == errno.ENOSYS:
        return "ENOSYS: the kernel was built without Landlock (needs Linux 5.13+)"
    if exc.errno == errno.EOPNOTSUPP:
        return "EOPNOTSUPP: Landlock is built in but disabled (add 'landlock' to lsm= at boot)"
    return f"{errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}"
