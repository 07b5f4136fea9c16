"""The zygote: a single-threaded process that forks sandboxed processes.

The host starts it once per worker (``python -m corral.sandbox.zygote_process FD``) with a
scrubbed environment. It imports everything a sandboxed process needs, confines
itself once (children inherit that for free), freezes its heap so children share
it, and then only answers the host over a SOCK_SEQPACKET control socket:

* ``["spawn", req_id, spec]`` + one fd (the child's end of its RPC socketpair)
  -> ``["spawned", req_id, pid]`` + a pidfd, or ``["failed", req_id, message]``;
* when a child exits: ``["exited", pid, wait_status, cpu_s, maxrss_kib]``;
* at start, ``["ready", report]``, or ``["refused", message, missing_layers]`` when a
  sandbox layer is missing and ``--insecure`` was not given.

No event loop and no threads here: a lock held by another thread at fork time
stays locked forever in the child, and a child touching an inherited event loop
breaks the parent's. The loop is plain ``selectors``; children create their own.
"""

from __future__ import annotations

import gc
import os
import selectors
import signal
import socket
import sys
from typing import Any

import msgpack

# Imported before forking so that children start with them loaded and shared
# (``corral.webhooks``: what an agent imports to verify a delivery itself).
import corral.webhooks  # noqa: F401
from corral.errors import SandboxUnavailable
from corral.sandbox import child, confine
from corral.sandbox.confine import Confinement

_MAX_MESSAGE = 65536
_CLOSE_ALL_ABOVE = 1 << 20


def _send(ctl: socket.socket, message: list[Any], fds: list[int] | None = None) -> None:
    data = msgpack.packb(message, use_bin_type=True)
    if fds:
        socket.send_fds(ctl, [data], fds)
    else:
        ctl.send(data)


def _run_child(fd: int, spec: dict[str, Any], devnull: int, confinement: Confinement) -> None:
    """Become one sandboxed process; never returns."""
    code = 1
    try:
        confine.confine_child(confinement, spec)  # first: it needs the scope ruleset's fd
        for std in (0, 1, 2):  # before fd 3 is reused: devnull itself may be fd 3
            os.dup2(devnull, std)
        os.dup2(fd, 3)
        # A fixed bound, not RLIMIT_NOFILE: the limit was just lowered, and descriptors
        # above it (siblings' pidfds) must be closed too. close_range makes it cheap.
        os.closerange(4, _CLOSE_ALL_ABOVE)
        child.run(3, confinement.readable)
        code = 0
    finally:
        os._exit(code)


class Zygote:
    def __init__(self, ctl: socket.socket, devnull: int, confinement: Confinement) -> None:
        self._ctl = ctl
        self._devnull = devnull
        self._confinement = confinement
        self._selector = selectors.DefaultSelector()
        self._children: dict[int, int] = {}  # pidfd -> pid

    def serve(self) -> None:
        self._selector.register(self._ctl, selectors.EVENT_READ)
        while True:
            for key, _ in self._selector.select():
                if key.fileobj is self._ctl:
                    if not self._control():
                        return
                else:
                    self._reap(int(key.fd))

    def _control(self) -> bool:
        data, fds, _, _ = socket.recv_fds(self._ctl, _MAX_MESSAGE, 1)
        if not data:
            return False  # the host went away: so do we (children see EOF too)
        message = msgpack.unpackb(data, raw=False)
        if message[0] == "spawn" and len(fds) == 1:
            self._spawn(message[1], message[2], fds[0])
        else:
            for fd in fds:
                os.close(fd)
        return True

    def _spawn(self, req_id: int, spec: dict[str, Any], fd: int) -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(fd)
            _send(self._ctl, ["failed", req_id, f"fork failed: {exc}"])
            return
        if pid == 0:
            self._selector.close()
            self._ctl.close()
            _run_child(fd, spec, self._devnull, self._confinement)
        os.close(fd)
        pidfd = os.pidfd_open(pid)
        self._children[pidfd] = pid
        self._selector.register(pidfd, selectors.EVENT_READ)
        _send(self._ctl, ["spawned", req_id, pid], [pidfd])

    def _reap(self, pidfd: int) -> None:
        pid = self._children.pop(pidfd)
        self._selector.unregister(pidfd)
        os.close(pidfd)
        _, status, usage = os.wait4(pid, 0)
        cpu_s = usage.ru_utime + usage.ru_stime
        _send(self._ctl, ["exited", pid, status, cpu_s, usage.ru_maxrss])


def main() -> None:
    # Ctrl-C at a terminal signals the whole foreground group, this process and its
    # children too. The host decides how executions end (in-flight ones finish), and
    # the zygote and its children end when the host hangs up: no KeyboardInterrupt
    # here, which would kill executions and print a traceback on the host's stderr.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctl = socket.socket(fileno=int(sys.argv[1]))
    insecure = "--insecure" in sys.argv[2:]
    devnull = os.open(os.devnull, os.O_RDWR)
    readable = confine.readable_paths()  # before Landlock hides what is not on it
    try:
        confinement = confine.confine_zygote(readable, insecure=insecure)
    except SandboxUnavailable as exc:
        _send(ctl, ["refused", str(exc), list(exc.layers)])
        return
    gc.collect()
    gc.freeze()  # children then share the heap instead of copying it on first GC
    _send(ctl, ["ready", confinement.report])
    Zygote(ctl, devnull, confinement).serve()


if __name__ == "__main__":
    main()
