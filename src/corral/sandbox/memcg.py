"""One cgroup-v1 memory group per sandbox process: a kernel-enforced bound on resident memory.

RLIMIT_AS bounds address space, not what a process actually touches, and it cannot tell
the host how much an execution used. A memory cgroup does both: above its limit the
kernel reclaims and then OOM-kills inside the group (SIGKILL, nothing to catch), and it
keeps a high-water mark the host resets before an execution and reads after it.

Only v1 is used because on the machines Corral runs on the v2 hierarchy has no memory
controller. Groups live in ``<our memory cgroup>/corral-<host pid>/<name>``, so several
hosts never collide and a host removes only what it made. Pages a process touched
before :meth:`MemoryGroup.attach` stay charged to the old group (charge moving is
deprecated), so a child must wait for the attach before it allocates.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
import weakref
from pathlib import Path

from corral.errors import SandboxError

#: How long :meth:`MemoryGroup.remove` waits for a killed process to leave its group.
_REMOVE_DEADLINE = 0.1


def _write(path: Path, value: str) -> None:
    # One write(2) per value: cgroup files act on each write, so no buffering.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _rmdir(path: Path) -> None:
    """rmdir a group, waiting briefly while it is busy: a SIGKILLed process may still be
    exiting (releasing its memory) after the host has seen it die."""
    deadline = time.perf_counter() + _REMOVE_DEADLINE
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.perf_counter() > deadline:
                raise SandboxError(f"cannot remove memory cgroup {path}: {exc}") from exc
        time.sleep(0.0005)


def _own_memory_cgroup() -> Path | None:
    """The directory of this process's v1 memory cgroup, or None if there is none."""
    mount: tuple[str, str] | None = None  # (root inside the hierarchy, mount point)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        fields, (fstype, _source, options) = pre.split(), post.split()[:3]
        if fstype == "cgroup" and "memory" in options.split(","):
            mount = (fields[3], fields[4].replace("\\040", " "))
            break
    if mount is None:
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _id, controllers, group = line.split(":", 2)
        if "memory" in controllers.split(","):
            relative = os.path.relpath(group, mount[0])
            if relative.startswith(".."):  # our group is outside what is mounted
                return None
            return Path(os.path.normpath(os.path.join(mount[1], relative)))
    return None


class MemoryGroup:
    """The memory cgroup of one sandbox process (made by :meth:`MemoryCgroups.create`).

    The files read and written around every execution stay open: opening them
    by path cost about 75 µs per execution, reading an open one a few µs (a
    cgroup file answers each ``pread`` at offset 0 afresh).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fds: dict[str, int] = {}

    def _fd(self, name: str) -> int:
        # Read-write for all: memory.max_usage_in_bytes is both read and reset.
        fd = self._fds.get(name)
        if fd is None:
            fd = self._fds[name] = os.open(self.path / name, os.O_RDWR)
        return fd

    def _read(self, name: str) -> bytes:
        try:
            return os.pread(self._fd(name), 4096, 0)
        except OSError as exc:
            raise SandboxError(f"cannot read {self.path / name}: {exc}") from exc

    def attach(self, pid: int) -> None:
        """Move ``pid`` (all its threads) into the group; only memory it touches from now on
        is charged here."""
        try:
            _write(self.path / "cgroup.procs", str(pid))
        except OSError as exc:
            raise SandboxError(f"cannot attach pid {pid} to {self.path}: {exc}") from exc

    def reset_peak(self) -> None:
        """Start a new high-water mark at the current usage, so a warm process's next peak
        is that execution's alone."""
        try:
            os.pwrite(self._fd("memory.max_usage_in_bytes"), b"0", 0)
        except OSError as exc:
            raise SandboxError(f"cannot reset the peak of {self.path}: {exc}") from exc

    def peak_bytes(self) -> int:
        """Highest charged memory (RSS, page cache, kernel memory) since the last reset."""
        return int(self._read("memory.max_usage_in_bytes"))

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in the group (cumulative).

        Reads the ``oom_kill`` line of ``memory.oom_control`` (Linux 4.13+). Older kernels
        lack it; then this returns ``memory.failcnt``, the number of times a charge hit
        the limit: an upper bound (reclaim often succeeds), but zero still means that no
        OOM kill happened, and a SIGKILL with a nonzero count is almost surely one.
        """
        for line in self._read("memory.oom_control").decode().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return int(self._read("memory.failcnt"))

    def release(self) -> None:
        """Close the files kept open; a later read opens them again."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def remove(self) -> None:
        """Remove the group once its process has exited; a group already gone is fine."""
        self.release()
        _rmdir(self.path)


class MemoryCgroups:
    """Factory rooted at a parent directory we may create groups in."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent
        #: Ours alone: the pid keeps hosts sharing one cgroup (and a restarted host) apart.
        self.root = parent / f"corral-{os.getpid()}"
        #: Groups made here: closing these removes them, open files and all, even
        #: those whose process was never closed.
        self._groups: weakref.WeakSet[MemoryGroup] = weakref.WeakSet()

    @classmethod
    def detect(cls) -> MemoryCgroups | None:
        """A factory in our own memory cgroup, or None when v1 memory is not mounted or we
        may not create groups there (checked by making and removing a probe group)."""
        try:
            parent = _own_memory_cgroup()
            if parent is None:
                return None
            probe = parent / f"corral-probe-{os.getpid()}"
            probe.mkdir()
            os.rmdir(probe)
        except (OSError, ValueError):
            return None
        _remove_abandoned(parent)
        return cls(parent)

    def create(self, name: str, limit_bytes: int) -> MemoryGroup:
        """Make group ``name`` limited to ``limit_bytes`` of memory, and of memory plus swap
        where swap is accounted, so the limit cannot be escaped by swapping out."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"a memory cgroup name must be one path component, not {name!r}")
        if limit_bytes <= 0:
            raise ValueError(f"limit_bytes must be positive, not {limit_bytes}")
        path = self.root / name
        try:
            self.root.mkdir(exist_ok=True)
            path.mkdir()
        except OSError as exc:
            raise SandboxError(f"cannot create memory cgroup {path}: {exc}") from exc
        group = MemoryGroup(path)
        self._groups.add(group)
        try:
            _write(path / "memory.limit_in_bytes", str(limit_bytes))
        except OSError as exc:
            _rmdir(path)
            raise SandboxError(f"cannot limit memory cgroup {path}: {exc}") from exc
        # Optional: memsw exists only with swap accounting, and swappiness may be read-only.
        for knob, value in (("memory.memsw.limit_in_bytes", limit_bytes), ("memory.swappiness", 0)):
            with contextlib.suppress(OSError):
                _write(path / knob, str(value))
        return group

    def close(self) -> None:
        """Remove every group left and our directory.

        A process still in a group is a sandboxed process of this host, which is
        shutting its sandbox down: it is killed, so nothing outlives the host.
        """
        for group in list(self._groups):
            group.release()
        _remove_tree(self.root)


def _remove_tree(root: Path) -> None:
    try:
        children = [entry for entry in root.iterdir() if entry.is_dir()]
    except FileNotFoundError:
        return
    except OSError as exc:
        raise SandboxError(f"cannot list memory cgroups in {root}: {exc}") from exc
    busy: list[str] = []
    for child in children:
        with contextlib.suppress(OSError, ValueError):
            for pid in (child / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        try:
            _rmdir(child)
        except SandboxError as exc:
            busy.append(str(exc))
    if busy:  # removing what could be removed first leaves the least behind
        raise SandboxError("; ".join(busy))
    _rmdir(root)


def _remove_abandoned(parent: Path) -> None:
    """Groups of hosts that died without closing (kill -9): their pid is gone."""
    for entry in parent.glob("corral-*"):
        pid = entry.name.removeprefix("corral-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(SandboxError):
                _remove_tree(entry)
