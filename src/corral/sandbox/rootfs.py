"""A root file system that holds the readable paths and nothing else.

Landlock decides what may be opened, but it has no right for looking: ``stat``,
``access`` and ``readlink`` work on every path, so without this layer sandboxed code
learns the size and times of ``/etc/shadow``, which processes exist under ``/proc``,
and the layout of the whole machine. The zygote therefore moves, once and while it still
holds capabilities in its user namespace, into a mount namespace of its own whose root
is a fresh tmpfs holding read-only bind mounts of exactly the paths Landlock lets it read.
Every other path does not exist (``ENOENT``); there is no ``/proc``, ``/dev`` or ``/tmp``.
Children inherit the namespace with the fork, so a sandboxed process pays nothing for it.

The same ``unshare`` gives it an IPC namespace of its own: the host's System V shared
memory, semaphores and message queues (and POSIX message queues) are not there to list,
which anyone may do, nor to attach to, which the same uid may do.

Landlock stays as the second wall: its rules belong to the inodes, which the bind mounts
show unchanged. The mounts are read-only, so they also refuse (``EROFS``) every change of
file metadata, behind the seccomp filter that denies those calls outright.

Built with the mount API (``open_tree``, ``move_mount``, ``mount_setattr``; Linux 5.12),
which needs no directory on the host to stage the new root in: each readable tree is
cloned before anything covers it, and the tmpfs is attached over ``/`` with the working
directory already inside it, then swapped in with ``pivot_root(".", ".")``.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from corral.sandbox.landlock import outermost
from corral.sandbox.syscalls import require_single_thread, syscall

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
_MS_REC = 0x4000
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 2
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 1
_MOVE_MOUNT_F_EMPTY_PATH = 4
_FSOPEN_CLOEXEC = 1
_FSMOUNT_CLOEXEC = 1
_FSCONFIG_SET_STRING = 1
_FSCONFIG_CMD_CREATE = 6
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_NOSUID = 0x2
_MOUNT_ATTR_NODEV = 0x4
_MOUNT_ATTR_NOEXEC = 0x8


class _MountAttr(ctypes.Structure):
    _fields_ = (
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    )


def enter_private_root(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Make ``paths`` (read-only) the only files the calling process can see, and leave the
    host's IPC objects behind, for good.

    Needs CAP_SYS_ADMIN over the current user namespace, so do it right after
    :func:`corral.sandbox.namespaces.enter_private_network` (or as root) and before
    dropping capabilities, in a single-threaded process. Every path must exist. Besides
    the paths themselves (resolved), the way ``sys.path`` and the interpreter's prefixes
    are spelled keeps working: symbolic links met on the way to them are recreated.
    """
    require_single_thread("entering a mount namespace")
    roots = outermost(Path(p).resolve(strict=True) for p in paths)
    syscall("unshare", CLONE_NEWNS | CLONE_NEWIPC)
    # Private, recursively: nothing done here may propagate back to the host's mounts.
    syscall("mount", None, b"/", None, _MS_REC | _MS_PRIVATE, None)
    # Clone every tree before anything covers it, read-only and with its submounts.
    trees = [(root, _clone_read_only(root)) for root in roots]
    root_fs = _new_tmpfs()
    try:
        os.fchdir(root_fs)
        syscall("move_mount", root_fs, b"", _AT_FDCWD, b"/", _MOVE_MOUNT_F_EMPTY_PATH)
        for root, _ in trees:  # mount points first: nothing is written inside a tree
            _make_mount_point(root)
        for spelled in [*_python_spellings(), *map(str, roots)]:
            _recreate_links(spelled, roots)
        for root, tree in trees:
            target = os.fsencode(_inside(root))
            syscall("move_mount", tree, b"", _AT_FDCWD, target, _MOVE_MOUNT_F_EMPTY_PATH)
            os.close(tree)
        # The tmpfs becomes the root; the old root, now stacked on it, is detached.
        syscall("pivot_root", b".", b".")
        syscall("umount2", b".", _MNT_DETACH)
        os.chdir("/")
        _set_attributes(_AT_FDCWD, b"/", _MOUNT_ATTR_RDONLY, 0)
    finally:
        os.close(root_fs)


def _clone_read_only(path: Path) -> int:
    tree = syscall(
        "open_tree",
        _AT_FDCWD,
        os.fsencode(path),
        _OPEN_TREE_CLONE | _AT_RECURSIVE | os.O_CLOEXEC,
    )
    # Read-only is the point; no setuid bits or device files count either.
    flags = _MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV
    _set_attributes(tree, b"", flags, _AT_EMPTY_PATH | _AT_RECURSIVE)
    return tree


def _new_tmpfs() -> int:
    """A detached, empty tmpfs (mode 0755) that nothing can execute or open devices on."""
    context = syscall("fsopen", b"tmpfs", _FSOPEN_CLOEXEC)
    try:
        syscall("fsconfig", context, _FSCONFIG_SET_STRING, b"mode", b"0755", 0)
        syscall("fsconfig", context, _FSCONFIG_CMD_CREATE, None, None, 0)
        flags = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | _MOUNT_ATTR_NOEXEC
        return syscall("fsmount", context, _FSMOUNT_CLOEXEC, flags)
    finally:
        os.close(context)


def _set_attributes(fd: int, path: bytes, attributes: int, flags: int) -> None:
    attr = _MountAttr(attributes, 0, 0, 0)
    syscall("mount_setattr", fd, path, flags, ctypes.byref(attr), ctypes.sizeof(attr))


def _inside(path: Path) -> str:
    """``path`` in the new root, which is the working directory while it is built."""
    return f".{path}"


def _make_mount_point(path: Path) -> None:
    inside = _inside(path)
    if path.is_dir():
        os.makedirs(inside, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(inside), exist_ok=True)
        os.close(os.open(inside, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444))


def _python_spellings() -> list[str]:
    """How this interpreter names the places it imports from; a venv or a home directory
    reached through a symbolic link is named through it."""
    prefixes = (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix)
    return [p for p in (*prefixes, *sys.path) if os.path.isabs(p)]


def _recreate_links(spelled: str, roots: list[Path]) -> None:
    """Recreate in the new root each symbolic link on the way from ``/`` to ``spelled``,
    up to where the way enters a bind-mounted tree (which brings its own links). A path
    that does not lead into one is left alone."""
    try:
        if not any(Path(spelled).resolve(strict=True).is_relative_to(r) for r in roots):
            return
    except OSError:
        return
    here = Path("/")
    for part in Path(spelled).parts[1:]:
        if any(here.is_relative_to(root) for root in roots):
            return
        step = here / part
        if step.is_symlink():
            os.makedirs(_inside(here), exist_ok=True)
            if not os.path.lexists(_inside(step)):
                os.symlink(os.readlink(step), _inside(step))
            here = step.resolve()
        else:
            here = step
