"""The friendly layer: forbidden operations fail with a message that helps.

The kernel layers (Landlock, seccomp, namespaces) are what actually contain an
agent; they answer with a bare errno. This audit hook runs first and turns the
common mistakes into a ``PermissionError`` that names what to use instead.
Reading the Python installation stays allowed: imports need it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

NO_FILES = "agents have no file system: keep data in self.store"
NO_PROCESSES = "agents cannot start processes or threads of other programs: use self.run_task"
NO_SOCKETS = "agents cannot open sockets: use self.fetch(url) for HTTP"
NO_NATIVE = "agents cannot load or call native code through ctypes"
NO_SIGNALS = "agents cannot send signals"

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

_DENY: dict[str, str] = {
    **dict.fromkeys(
        [
            "os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.symlink", "os.link",
            "os.truncate", "os.chdir", "os.chroot", "shutil.rmtree", "shutil.copyfile",
            "shutil.move",
        ],
        NO_FILES,
    ),
    **dict.fromkeys(
        [
            "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
            "os.fork", "os.forkpty", "pty.spawn", "os.startfile",
        ],
        NO_PROCESSES,
    ),
    **dict.fromkeys(
        ["socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
         "urllib.Request", "http.client.connect"],
        NO_SOCKETS,
    ),
    **dict.fromkeys(["ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function"], NO_NATIVE),
    **dict.fromkeys(["os.kill", "os.killpg", "signal.pthread_kill"], NO_SIGNALS),
}  # fmt: skip

#: Events that change a file's metadata, and what the agent tried, for the message.
#: os.fchmod, os.lchmod, os.fchown and os.lchown raise the same events; the f* ones
#: with the descriptor as the path.
_METADATA: dict[str, str] = {
    "os.chmod": "change the mode of",
    "os.chown": "change the owner of",
    "os.utime": "change the times of",
    "os.setxattr": "set an extended attribute on",
    "os.removexattr": "remove an extended attribute from",
}


def _target(path: object) -> str:
    return f"file descriptor {path}" if isinstance(path, int) else repr(path)


def make_hook(readable: Sequence[str]) -> Callable[[str, tuple[Any, ...]], None]:
    """An audit hook that lets reads happen only under the ``readable`` directories."""
    roots = tuple(os.path.join(os.path.realpath(p), "") for p in readable)

    def may_read(path: object) -> bool:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        return isinstance(path, str) and os.path.join(os.path.realpath(path), "").startswith(roots)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        message = _DENY.get(event)
        if message is not None:
            raise PermissionError(message)
        change = _METADATA.get(event)
        if change is not None:
            raise PermissionError(f"{NO_FILES} (tried to {change} {_target(args[0])})")
        if event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                # A descriptor the process holds already (a pipe's end, as
                # subprocess opens before it asks to start the program): no file
                # is opened, and refusing here would name a number, not the mistake.
                return
            writing = (mode is not None and any(c in mode for c in "wax+")) or (
                flags & _WRITE_FLAGS
            )
            if writing or not may_read(path):
                raise PermissionError(f"{NO_FILES} (tried to open {path!r})")
        elif event in ("os.listdir", "os.scandir") and not may_read(args[0]):
            raise PermissionError(f"{NO_FILES} (tried to list {args[0]!r})")

    return hook


def install(readable: Sequence[str]) -> None:
    sys.addaudithook(make_hook(readable))
