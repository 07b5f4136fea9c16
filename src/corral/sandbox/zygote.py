"""The host's handle on the zygote: start it, ask it for sandboxed processes.

The zygote itself (``corral.sandbox.zygote_process``) forks; this side starts it with
a scrubbed environment, sends it spawn requests over a SOCK_SEQPACKET control socket,
and hands each new process to a ``SandboxProcess`` (``corral.sandbox.process``), which
runs executions in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import sys
import weakref
from typing import Any

import msgpack

from corral.errors import SandboxError, SandboxUnavailable
from corral.sandbox.accounting import ExitInfo
from corral.sandbox.limits import Limits
from corral.sandbox.memcg import MemoryCgroups
from corral.sandbox.process import SandboxProcess, new_future, reject_future, resolve_future

_ZYGOTE_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


class Zygote:
    """A running zygote and the control channel to it."""

    def __init__(self, process: asyncio.subprocess.Process, ctl: socket.socket) -> None:
        self._process = process
        self._ctl = ctl
        self._ids = itertools.count(1)
        self._spawns: dict[int, asyncio.Future[tuple[int, int, asyncio.Future[ExitInfo]]]] = {}
        # Live processes only: the zygote always reports "spawned" before "exited".
        self._exits: dict[int, asyncio.Future[ExitInfo]] = {}
        #: Processes not yet closed: ``close`` closes them, so none leaves a descriptor.
        self._children: weakref.WeakSet[SandboxProcess] = weakref.WeakSet()
        self._ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.report: dict[str, Any] = {}
        #: Per-process memory groups (cgroup v1) where this host may create them.
        self.memory_cgroups = MemoryCgroups.detect()

    @classmethod
    async def start(cls, *, insecure: bool = False) -> Zygote:
        host_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        module = "corral.sandbox.zygote_process"
        args = [sys.executable, "-I", "-m", module, str(zygote_end.fileno())]
        process = await asyncio.create_subprocess_exec(
            *args,
            *(["--insecure"] if insecure else []),
            pass_fds=[zygote_end.fileno()],
            env=_ZYGOTE_ENV,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
        )
        zygote_end.close()
        host_end.setblocking(False)
        zygote = cls(process, host_end)
        asyncio.get_running_loop().add_reader(host_end.fileno(), zygote._readable)
        try:
            zygote.report = await asyncio.wait_for(zygote._ready, timeout=30)
        except BaseException:
            await zygote.close()
            raise
        return zygote

    def _readable(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self._ctl, 65536, 1)
        except BlockingIOError:
            return
        if not data:
            self._lost(SandboxError("the zygote exited; see the worker's stderr"))
            return
        message = msgpack.unpackb(data, raw=False)
        kind = message[0]
        if kind == "ready":
            self._ready.set_result(message[1])
        elif kind == "refused":
            self._ready.set_exception(SandboxUnavailable(message[1], tuple(message[2])))
        elif kind == "spawned":
            pid = message[2]
            exited = self._exits[pid] = new_future()
            resolve_future(self._spawns.pop(message[1], None), (pid, fds[0], exited))
        elif kind == "failed":
            reject_future(self._spawns.pop(message[1], None), SandboxError(message[2]))
        elif kind == "exited":
            _, pid, status, cpu_s, maxrss_kib = message
            resolve_future(self._exits.pop(pid, None), ExitInfo(status, cpu_s, maxrss_kib * 1024))

    def _lost(self, exc: Exception) -> None:
        asyncio.get_running_loop().remove_reader(self._ctl.fileno())
        futures: list[asyncio.Future[Any]] = [self._ready, *self._spawns.values()]
        for future in [*futures, *self._exits.values()]:
            reject_future(future, exc)

    async def spawn(self, limits: Limits) -> SandboxProcess:
        """A new sandboxed process, connected and ready for its first invocation."""
        host_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        req_id = next(self._ids)
        future: asyncio.Future[tuple[int, int, asyncio.Future[ExitInfo]]] = new_future()
        self._spawns[req_id] = future
        spec = {"memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s}
        try:
            socket.send_fds(
                self._ctl, [msgpack.packb(["spawn", req_id, spec])], [child_end.fileno()]
            )
        finally:
            child_end.close()
        pid, pidfd, exited = await future
        group = None
        if self.memory_cgroups is not None:
            # It waits for its first INVOKE before running agent code, so every byte
            # the agent touches is charged to this group.
            group = self.memory_cgroups.create(f"p{pid}", limits.memory_mb * 1024 * 1024)
            group.attach(pid)
        process = SandboxProcess(pid, pidfd, exited, group)
        self._children.add(process)
        await asyncio.get_running_loop().create_connection(lambda: process, sock=host_end)
        await process.wait_ready()
        return process

    async def close(self) -> None:
        await asyncio.gather(*(child.close() for child in list(self._children)))
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self._ctl.fileno())
        self._ctl.close()  # the zygote sees EOF and exits
        try:
            await asyncio.wait_for(self._process.wait(), timeout=5)
        except TimeoutError:
            self._process.kill()
            await self._process.wait()
        if self.memory_cgroups is not None:
            self.memory_cgroups.close()


__all__ = ["Zygote"]
