"""The sandbox escape suite: agent code trying to get out, through the whole product path.

Every attempt is a method of the agent in ``AGENT`` (source code, as it is stored in the
database), run through a real, fully confined zygote (``Zygote.start()`` without
``insecure``) and ``SandboxProcess.execute`` or ``SandboxPool``. Each test checks four
things: the attempt was contained (checked on the host: no file appeared, the listeners
accepted nothing, the bystander process lives, the other instance's keys are intact), the
execution's outcome, the exact message or errno the agent saw, and that the same zygote
goes on serving a normal execution.

Most attempts run twice in the same warm process. First as written: the audit hook (the
*friendly* layer, :mod:`corral.sandbox.audit`) answers with a ``PermissionError`` that
says what to use instead. Then after ``disarm()``, which switches the hook's checks off
the way any agent code can (the hook is not a security boundary): what the agent then
sees is the kernel layer's errno, which is what actually contains it. Operations the
hook never sees (a pidfd, a ctypes function pointer resolved before the hook was
installed, sqlite3's C-level open) give the kernel's answer both times.

Safety: each attempt is harmless even if no layer were applied. Files are written only
under the test's own temporary directory, connections go only to listeners the test
opened on 127.0.0.1 or under its temporary directory, signals go only to the test's own
bystander process or with signal 0, mount targets do not exist, forks are bounded and
every child exits at once, memory hogs are bounded relative to the execution's limit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import os
import signal
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from click.testing import CliRunner

from corral import codec
from corral.cli import main as corral_cli
from corral.runtime.tools import store_tools
from corral.sandbox.limits import ExecutionResult, Limits, Outcome
from corral.sandbox.pool import SandboxPool
from corral.sandbox.process import SandboxProcess
from corral.sandbox.protocol import MAX_FRAME
from corral.sandbox.zygote import Zygote
from corral.state import SqlBackend, Store
from tests.sandbox.conftest import file_metadata

AGENT = r'''
import ctypes
import fcntl
import os
import resource
import select
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import msgpack

from corral import codec
from corral.sdk import Agent

PTRACE_ATTACH = 16
RPC_FD = 3  # the inherited socket to the host
FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_NOATIME_FL = 0x80


def disarm():
    """Switch the audit hook's checks off, as any agent code can: the hook looks names up
    in its module and in os.path at each event. Whatever still stops an attempt after
    this is a kernel layer."""
    from corral.sandbox import audit

    for name, table in vars(audit).items():  # no event is denied outright
        if isinstance(table, dict) and not name.startswith("__"):
            table.clear()
    audit._WRITE_FLAGS = 0  # os.open(..., O_WRONLY) is not writing
    audit.any = lambda _: False  # nor is open(..., "w")
    os.path.realpath = lambda path: sys.prefix  # every path looks readable


def saw(fn, *args):
    """What the agent saw: the exception it caught, or what the call returned."""
    try:
        value = fn(*args)
    except Exception as exc:
        return {"saw": f"{type(exc).__name__}: {exc}", "errno": getattr(exc, "errno", None)}
    return {"returned": repr(value)}


def attempt(disarmed, fn, *args):
    if disarmed:
        disarm()
    return saw(fn, *args)


def read_file(path):
    with open(path, "rb") as file:
        return file.read(64)


def read_with_os_open(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 64)
    finally:
        os.close(fd)


def write_file(path):
    with open(path, "w") as file:
        file.write("escaped")


def write_with_os_open(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        return os.write(fd, b"escaped")
    finally:
        os.close(fd)


def size_of(path):
    return os.stat(path).st_size


def set_attribute_flag(path, flag):
    """chattr through the ioctl, on a descriptor opened read-only."""
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4])[0]
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("q", flags | flag))
        return hex(flags | flag)
    finally:
        os.close(fd)


def query_database(path):
    uri = f"file:{path}?mode=ro"  # read-only: harmless even if it opened
    return sqlite3.connect(uri, uri=True).execute("select * from state").fetchall()


def tcp_connect(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        return "connected"


def tcp_create_connection(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return "connected"


def udp_sendto(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        return sock.sendto(b"escaped", ("127.0.0.1", port))


def unix_connect(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(path)
        return "connected"


def fork_and_reap():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def pidfd_signal(pid, signum):
    fd = os.pidfd_open(pid)
    try:
        signal.pidfd_send_signal(fd, signum)
    finally:
        os.close(fd)


def libc_syscall():
    """syscall(2), resolved by the runtime before the audit hook was installed."""
    from corral.sandbox import syscalls

    return syscalls._syscall


def execve(program, *argv):
    """execve(2) straight through syscall(2): past Python's process machinery."""
    strings = [arg.encode() for arg in (program, *argv)]
    args = (ctypes.c_char_p * (len(strings) + 1))(*strings[1:], None)
    envp = (ctypes.c_char_p * 1)(None)
    from corral.sandbox.syscalls import syscall_number

    number = ctypes.c_long(syscall_number("execve"))
    result = libc_syscall()(number, ctypes.c_char_p(strings[0]), args, envp)
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def raw_syscall(name, *args):
    from corral.sandbox import syscalls

    return syscalls.syscall(name, *args)


def mount_nowhere():
    """mount(2) made harmless: the target does not exist, nor does the file system type."""
    source, target, kind = b"none", b"/nonexistent/corral-target", b"corral-no-such-fs"
    return raw_syscall(
        "mount", ctypes.c_char_p(source), ctypes.c_char_p(target), ctypes.c_char_p(kind), 0, 0
    )


def send_bytes(data):
    """Write raw bytes to the RPC socket, whatever the runtime thinks of them."""
    view = memoryview(data)
    while view:
        select.select([], [RPC_FD], [])
        try:
            view = view[os.write(RPC_FD, view):]
        except BlockingIOError:
            pass


def send_frame(message):
    body = msgpack.packb(message, use_bin_type=True)
    send_bytes(struct.pack(">I", len(body)) + body)


def read_exactly(size):
    data = b""
    while len(data) < size:
        select.select([RPC_FD], [], [], 5)
        try:
            chunk = os.read(RPC_FD, size - len(data))
        except BlockingIOError:
            continue
        if not chunk:
            raise EOFError("the host closed the channel")
        data += chunk
    return data


def read_frame():
    (size,) = struct.unpack(">I", read_exactly(4))
    return msgpack.unpackb(read_exactly(size), raw=False)


class Escapes(Agent):
    # -- files: Landlock (read-only beneath the Python installation) ----------------

    def read_with_open(self, path, disarmed=False):
        return attempt(disarmed, read_file, path)

    def read_with_os_open(self, path, disarmed=False):
        return attempt(disarmed, read_with_os_open, path)

    def write_with_open(self, path, disarmed=False):
        return attempt(disarmed, write_file, path)

    def write_with_os_open(self, path, disarmed=False):
        return attempt(disarmed, write_with_os_open, path)

    def list_dir(self, path, disarmed=False):
        return attempt(disarmed, os.listdir, path)

    def read_parent_memory(self, disarmed=False):
        # The zygote's pid is known only in here: say which it was.
        seen = attempt(disarmed, read_with_os_open, f"/proc/{os.getppid()}/mem")
        return {**seen, "ppid": os.getppid()}

    def open_database(self, path, disarmed=False):
        return attempt(disarmed, query_database, path)

    def stat(self, path, disarmed=False):
        return attempt(disarmed, size_of, path)

    # -- file metadata: seccomp (no such calls), the read-only private root ----------

    def change_mode(self, path, mode, disarmed=False):
        return attempt(disarmed, os.chmod, path, mode)

    def change_mode_of_descriptor(self, path, mode, disarmed=False):
        fd = os.open(path, os.O_RDONLY)  # reading is allowed
        try:
            return {**attempt(disarmed, os.fchmod, fd, mode), "fd": fd}
        finally:
            os.close(fd)

    def change_owner(self, path, disarmed=False):
        # To the owner it has: allowed to any owner, and it still stamps the ctime.
        return attempt(disarmed, os.chown, path, os.getuid(), os.getgid())

    def change_times(self, path, disarmed=False):
        return attempt(disarmed, os.utime, path, (0, 0))

    def set_xattr(self, path, disarmed=False):
        return attempt(disarmed, os.setxattr, path, "user.corral", b"escaped")

    def remove_xattr(self, path, name, disarmed=False):
        return attempt(disarmed, os.removexattr, path, name)

    def set_attribute_flag(self, path, disarmed=False):
        return attempt(disarmed, set_attribute_flag, path, FS_NOATIME_FL)

    def environment(self):
        return dict(os.environ)

    # -- sockets: seccomp (no socket() at all), the empty network namespace ---------

    def tcp_connect(self, port, disarmed=False):
        return attempt(disarmed, tcp_connect, port)

    def tcp_create_connection(self, port, disarmed=False):
        return attempt(disarmed, tcp_create_connection, port)

    def udp_sendto(self, port, disarmed=False):
        return attempt(disarmed, udp_sendto, port)

    def unix_connect(self, path, disarmed=False):
        return attempt(disarmed, unix_connect, path)

    # -- processes: the fork filter and seccomp (no execve) -------------------------

    def run_subprocess(self, marker, disarmed=False):
        return attempt(disarmed, subprocess.run, ["touch", marker])

    def run_os_system(self, marker, disarmed=False):
        return attempt(disarmed, os.system, f"touch {marker}")

    def fork(self, disarmed=False):
        return attempt(disarmed, fork_and_reap)

    def fork_bomb(self, attempts, disarmed=False):
        if disarmed:
            disarm()
        return [saw(fork_and_reap) for _ in range(min(attempts, 50))]  # bounded

    def ctypes_cdll_system(self, marker, disarmed=False):
        return attempt(disarmed, lambda: ctypes.CDLL(None).system(f"touch {marker}".encode()))

    def ctypes_pythonapi_system(self, marker, disarmed=False):
        return attempt(disarmed, lambda: ctypes.pythonapi.system(f"touch {marker}".encode()))

    def ctypes_loaded_libc_system(self, marker, disarmed=False):
        from corral.sandbox import syscalls

        return attempt(disarmed, lambda: syscalls._libc.system(f"touch {marker}".encode()))

    def raw_execve(self, marker, disarmed=False):
        return attempt(disarmed, execve, "/usr/bin/touch", "touch", marker)

    def mount(self, disarmed=False):
        return attempt(disarmed, mount_nowhere)

    # -- other processes: Landlock scopes, seccomp ----------------------------------

    def signal_parent(self, disarmed=False):
        return attempt(disarmed, os.kill, os.getppid(), 0)

    def kill(self, pid, signum, disarmed=False):
        return attempt(disarmed, os.kill, pid, signum)

    def pidfd_signal(self, pid, signum, disarmed=False):
        return attempt(disarmed, pidfd_signal, pid, signum)

    def ptrace_attach(self, pid, disarmed=False):
        return attempt(disarmed, raw_syscall, "ptrace", PTRACE_ATTACH, pid, 0, 0)

    def renice(self, pid, disarmed=False):
        return attempt(disarmed, os.setpriority, os.PRIO_PROCESS, pid, 19)

    def lower_limit_of(self, pid, disarmed=False):
        return attempt(disarmed, resource.prlimit, pid, resource.RLIMIT_CORE, (0, 0))

    def inherited_descriptors(self):
        """Descriptors above the open-files limit: only inheritance can have put them there."""
        limit, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return [fd for fd in range(limit, 1024) if saw(os.fstat, fd).get("returned")]

    def signal_inherited_descriptors(self, signum):
        return [saw(signal.pidfd_send_signal, fd, signum) for fd in self.inherited_descriptors()]

    # -- limits -----------------------------------------------------------------------

    def allocate(self, nbytes, catch=False):
        # bytes(n) is calloc'd: without the limit, untouched pages cost no memory.
        if catch:
            return saw(lambda: len(bytes(nbytes)))
        return len(bytes(nbytes))

    def hog(self, chunk_mb, max_mb):
        """Touch memory chunk by chunk; never more than max_mb, whatever the limit."""
        chunks = []
        while len(chunks) * chunk_mb < max_mb:
            chunks.append(bytearray(chunk_mb * 1024 * 1024))
        return len(chunks) * chunk_mb

    def spin(self, wall_s):
        deadline = time.monotonic() + wall_s
        while time.monotonic() < deadline:
            pass
        return "spun"

    def doze(self, s):
        time.sleep(s)
        return "woke"

    # -- what agents need still works ----------------------------------------------

    def threads(self):
        out = []
        thread = threading.Thread(target=lambda: out.append(sum(range(100))))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(4) as pool:
            doubled = list(pool.map(lambda x: 2 * x, range(8)))
        return out, doubled, threading.active_count()

    def libraries(self):
        import datetime
        import decimal
        import json
        import re
        import zoneinfo

        paris = datetime.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
        return [
            json.loads('{"a": [1, 2]}'),
            str(decimal.Decimal("1.10") * 3),
            re.findall(r"\d+", "a1b22c333"),
            paris.isoformat(),
            paris.tzname(),
        ]

    async def plain(self):
        await self.store.set("served", True)
        return "served"

    # -- the RPC channel ------------------------------------------------------------

    async def raw_call(self, op, *args):
        try:
            return {"returned": await self._channel.call(op, *args)}
        except Exception as exc:
            return {"saw": f"{type(exc).__name__}: {exc}",
                    "permission": isinstance(exc, PermissionError)}

    def forged_call(self, call_id, op, args):
        """A CALL frame written by hand; the agent reads the host's REPLY itself."""
        send_frame(["call", call_id, op, [codec.encode(arg) for arg in args]])
        _, reply_id, ok, payload = read_frame()
        return [reply_id, ok, codec.decode(payload) if ok else payload]

    def send(self, data):
        send_bytes(data)
        return "sent"

    def send_logs(self, count, size):
        for _ in range(count):
            send_frame(["log", "info", "x" * size])
        return "sent"

    def hang_up(self, linger_s):
        """Close every descriptor of the channel to the host; the process lingers on."""
        channel = os.fstat(RPC_FD).st_ino
        for fd in range(1024):
            if saw(lambda: os.fstat(fd).st_ino == channel) == {"returned": "True"}:
                os.close(fd)
        time.sleep(linger_s)

    def write_to_stdout(self):
        """What C code printing to stdout or stderr amounts to."""
        os.write(1, b"hello from C\n")
        os.write(2, b"warning from C\n")
        return "written"

    async def tamper_with_budget(self, n):
        self._channel._requests_left = 10**9  # the child's count; the host keeps its own
        done = []
        for i in range(n):
            try:
                await self.store.set(f"k{i}", i)
                done.append(i)
            except Exception as exc:
                return done, f"{type(exc).__name__}: {exc}"
        return done, None
'''

SECRET = "s3cret-host-value"
OTHER_VALUE = "the other instance's secret"
NO_FILES = "PermissionError: agents have no file system: keep data in self.store"
NO_SOCKETS = "PermissionError: agents cannot open sockets: use self.fetch(url) for HTTP"
NO_PROCESSES = (
    "PermissionError: agents cannot start processes or threads of other programs: use self.run_task"
)
NO_NATIVE = "PermissionError: agents cannot load or call native code through ctypes"
NO_SIGNALS = "PermissionError: agents cannot send signals"
EPERM = "PermissionError: [Errno 1] Operation not permitted"
#: What glibc's system() returns when it cannot start the shell: "exit status 127".
SHELL_NOT_STARTED = {"returned": repr(127 << 8)}


# -- fixtures -----------------------------------------------------------------------


@dataclasses.dataclass
class Host:
    """What lies outside the sandbox for the attempts to aim at, and the checks that
    nothing reached it."""

    tmp: Path
    pid: int
    bystander: int
    tcp: socket.socket
    udp: socket.socket
    unix: socket.socket
    unix_path: str
    database: Path
    #: A file in the virtual environment, which the sandbox may read (as it may the
    #: interpreter next to it), and what its metadata was before the attempt.
    target: Path
    target_metadata: dict[str, Any]

    @property
    def marker(self) -> str:
        """A file that a command run by the agent would create."""
        return str(self.tmp / "pwned")

    @property
    def written(self) -> str:
        """A file the agent tries to write directly."""
        return str(self.tmp / "written")

    @property
    def names(self) -> dict[str, Any]:
        return {
            "marker": self.marker,
            "written": self.written,
            "tcp_port": self.tcp.getsockname()[1],
            "udp_port": self.udp.getsockname()[1],
            "unix_path": self.unix_path,
            "bystander": self.bystander,
            "host_pid": self.pid,
            "database": str(self.database),
            "target": str(self.target),
        }

    def assert_untouched(self) -> None:
        assert not os.path.exists(self.marker), "a command run by the agent created a file"
        assert not os.path.exists(self.written), "the agent wrote a file on the host"
        assert not os.path.exists(f"{self.target}.written"), "the agent wrote in the venv"
        for server in (self.tcp, self.unix):
            with pytest.raises(BlockingIOError):
                server.accept()
        with pytest.raises(BlockingIOError):
            self.udp.recvfrom(64)
        assert_undisturbed(self.bystander)
        assert file_metadata(self.target) == self.target_metadata


def assert_undisturbed(pid: int) -> None:
    """The bystander lives, is neither stopped nor traced, and got no signal."""
    assert os.waitpid(pid, os.WNOHANG) == (0, 0), "the bystander died"
    fields = proc_status(pid)
    assert fields["State"][0] in "SR", fields["State"]
    assert fields["TracerPid"] == "0"
    assert int(fields["SigPnd"], 16) == int(fields["ShdPnd"], 16) == 0


def proc_status(pid: int) -> dict[str, str]:
    """The fields of /proc/<pid>/status, as the host reads them."""
    with open(f"/proc/{pid}/status") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


@pytest.fixture
def host(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, bystander: int, target: Path
) -> Iterator[Host]:
    # A short directory for the UNIX socket: sun_path holds 108 bytes at most.
    unix_path = str(tmp_path_factory.mktemp("sock") / "host.sock")
    with (
        socket.create_server(("127.0.0.1", 0)) as tcp,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix,
    ):
        udp.bind(("127.0.0.1", 0))
        unix.bind(unix_path)
        unix.listen()
        for server in (tcp, udp, unix):
            server.setblocking(False)
        database = tmp_path / "corral.db"
        metadata = file_metadata(target)
        yield Host(
            tmp_path, os.getpid(), bystander, tcp, udp, unix, unix_path, database, target, metadata
        )


@dataclasses.dataclass
class Stores:
    """Two instances' stores on one SQLite database: the scope is the only thing
    between them, as in production."""

    mine: Store
    other: Store

    async def assert_other_intact(self) -> None:
        assert await self.other.list_entries() == [("secret", OTHER_VALUE)]


@pytest.fixture
async def stores(host: Host) -> AsyncIterator[Stores]:
    backend = SqlBackend.open(f"sqlite:///{host.database}")
    pair = Stores(Store(backend, "mine"), Store(backend, "other"))
    await pair.other.set("secret", OTHER_VALUE)
    await pair.mine.set("note", "mine")
    yield pair
    backend.close()


@pytest.fixture
async def zygote(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Zygote]:
    """A fully confined zygote, started while the host holds a secret in its environment."""
    monkeypatch.setenv("CORRAL_TEST_SECRET", SECRET)
    z = await Zygote.start()
    assert not z.report["insecure"]
    assert z.report["missing"] == []
    yield z
    await z.close()


async def run(
    process: SandboxProcess, stores: Stores, method: str, *args: Any, limits: Limits | None = None
) -> ExecutionResult:
    return await process.execute(
        AGENT, method, list(args), limits or Limits(), store_tools(stores.mine)
    )


async def assert_serves(process: SandboxProcess, stores: Stores) -> None:
    """A normal execution works (in ``process``, which may be a fresh one)."""
    await stores.mine.delete("served")
    result = await run(process, stores, "plain")
    assert (result.outcome, result.result) == (Outcome.OK, "served"), result.error
    assert await stores.mine.get("served") is True


async def assert_fresh_process_serves(zygote: Zygote, stores: Stores) -> None:
    process = await zygote.spawn(Limits())
    try:
        await assert_serves(process, stores)
    finally:
        await process.close()


# -- escapes the audit hook explains and a kernel layer stops ------------------------


@dataclasses.dataclass(frozen=True)
class Escape:
    name: str
    method: str
    args: Callable[[Host], list[Any]]
    #: What the agent sees as written (the audit hook's message, or the kernel's error
    #: where the hook does not see the operation); ``{...}`` fields come from Host.names.
    friendly: dict[str, Any]
    #: What it sees with the audit hook disarmed: the kernel layer's answer.
    kernel: dict[str, Any]


def _saw(text: str, code: int | None = None) -> dict[str, Any]:
    return {"saw": text, "errno": code}


def _denied_file(path: str, verb: str = "open") -> dict[str, Any]:
    return _saw(f"{NO_FILES} (tried to {verb} {path!r})")


def _eacces(path: str) -> dict[str, Any]:
    return _saw(f"PermissionError: [Errno 13] Permission denied: {path!r}", errno.EACCES)


def _eperm_on(path: str) -> dict[str, Any]:
    return _saw(f"{EPERM}: {path!r}", errno.EPERM)


def _enoent(path: str) -> dict[str, Any]:
    return _saw(f"FileNotFoundError: [Errno 2] No such file or directory: {path!r}", errno.ENOENT)


_EPERM = _saw(EPERM, errno.EPERM)

ESCAPES = [
    # Files. The private root holds the Python installation, the venv, the system
    # libraries and time zones, read-only; nothing else exists. Landlock, behind it, allows
    # reading beneath those paths only ("/" itself is the private root's) and no writing.
    Escape("read /etc/passwd with open()", "read_with_open", lambda h: ["/etc/passwd"],
           _denied_file("/etc/passwd"), _enoent("/etc/passwd")),
    Escape("read /etc/passwd with os.open()", "read_with_os_open", lambda h: ["/etc/passwd"],
           _denied_file("/etc/passwd"), _enoent("/etc/passwd")),
    Escape("write a file with open()", "write_with_open", lambda h: [h.written],
           _denied_file("{written}"), _enoent("{written}")),
    Escape("write a file with os.open()", "write_with_os_open", lambda h: [h.written],
           _denied_file("{written}"), _enoent("{written}")),
    Escape("write a file in the venv with open()", "write_with_open",
           lambda h: [f"{h.target}.written"], _denied_file("{target}.written"),
           _saw("OSError: [Errno 30] Read-only file system: '{target}.written'", errno.EROFS)),
    Escape("list /", "list_dir", lambda h: ["/"], _denied_file("/", "list"), _eacces("/")),
    Escape("read /proc/self/environ", "read_with_open", lambda h: ["/proc/self/environ"],
           _denied_file("/proc/self/environ"), _enoent("/proc/self/environ")),
    Escape("read /proc/1/environ", "read_with_open", lambda h: ["/proc/1/environ"],
           _denied_file("/proc/1/environ"), _enoent("/proc/1/environ")),
    Escape("read the host's /proc/<pid>/environ", "read_with_open",
           lambda h: [f"/proc/{h.pid}/environ"],
           _denied_file("/proc/{host_pid}/environ"), _enoent("/proc/{host_pid}/environ")),
    Escape("open the store's SQLite file with sqlite3", "open_database",
           lambda h: [str(h.database)],
           _saw("OperationalError: unable to open database file"),
           _saw("OperationalError: unable to open database file")),
    # Looking. stat() is no Landlock right and raises no audit event: only the private
    # root stops it, by not holding the path.
    Escape("stat /etc/shadow", "stat", lambda h: ["/etc/shadow"],
           _enoent("/etc/shadow"), _enoent("/etc/shadow")),
    Escape("stat /etc/passwd", "stat", lambda h: ["/etc/passwd"],
           _enoent("/etc/passwd"), _enoent("/etc/passwd")),
    Escape("stat /proc/1", "stat", lambda h: ["/proc/1"], _enoent("/proc/1"), _enoent("/proc/1")),
    Escape("stat the host's /proc/<pid>", "stat", lambda h: [f"/proc/{h.pid}"],
           _enoent("/proc/{host_pid}"), _enoent("/proc/{host_pid}")),
    Escape("stat the store's SQLite file", "stat", lambda h: [str(h.database)],
           _enoent("{database}"), _enoent("{database}")),
    # File metadata, on a file in the venv the sandbox may read: seccomp denies every call
    # that changes it; the private root's mounts are read-only (EROFS) behind it.
    Escape("chmod a venv file setuid", "change_mode", lambda h: [str(h.target), 0o4755],
           _denied_file("{target}", "change the mode of"), _eperm_on("{target}")),
    Escape("fchmod a descriptor opened read-only", "change_mode_of_descriptor",
           lambda h: [str(h.target), 0o6777],
           _saw(f"{NO_FILES} (tried to change the mode of file descriptor {{fd}})"), _EPERM),
    Escape("chown a venv file", "change_owner", lambda h: [str(h.target)],
           _denied_file("{target}", "change the owner of"), _eperm_on("{target}")),
    Escape("utime a venv file", "change_times", lambda h: [str(h.target)],
           _denied_file("{target}", "change the times of"), _EPERM),
    Escape("setxattr on a venv file", "set_xattr", lambda h: [str(h.target)],
           _denied_file("{target}", "set an extended attribute on"), _eperm_on("{target}")),
    Escape("removexattr from a venv file", "remove_xattr", lambda h: [str(h.target), "user.corral"],
           _denied_file("{target}", "remove an extended attribute from"), _eperm_on("{target}")),
    # An ioctl is no audit event the hook denies: the kernel answers both times.
    Escape("chattr +A (FS_IOC_SETFLAGS) on a descriptor opened read-only",
           "set_attribute_flag", lambda h: [str(h.target)], _EPERM, _EPERM),
    # Sockets. seccomp denies socket() itself; the network namespace is empty anyway.
    Escape("TCP connect with socket.socket()", "tcp_connect", lambda h: [h.names["tcp_port"]],
           _saw(NO_SOCKETS), _EPERM),
    Escape("TCP socket.create_connection()", "tcp_create_connection",
           lambda h: [h.names["tcp_port"]], _saw(NO_SOCKETS), _EPERM),
    Escape("UDP sendto", "udp_sendto", lambda h: [h.names["udp_port"]], _saw(NO_SOCKETS),
           _EPERM),
    Escape("connect to a host UNIX socket", "unix_connect", lambda h: [h.unix_path],
           _saw(NO_SOCKETS), _EPERM),
    # Processes. The fork filter denies fork, vfork and clone without CLONE_THREAD;
    # the base filter denies execve. The command would create the marker file.
    Escape("subprocess.run", "run_subprocess", lambda h: [h.marker], _saw(NO_PROCESSES),
           _EPERM),
    Escape("os.system", "run_os_system", lambda h: [h.marker], _saw(NO_PROCESSES),
           SHELL_NOT_STARTED),
    Escape("os.fork", "fork", lambda h: [], _saw(NO_PROCESSES), _EPERM),
    Escape("ctypes.CDLL(None).system", "ctypes_cdll_system", lambda h: [h.marker],
           _saw(NO_NATIVE), SHELL_NOT_STARTED),
    Escape("ctypes.pythonapi.system", "ctypes_pythonapi_system", lambda h: [h.marker],
           _saw(NO_NATIVE), SHELL_NOT_STARTED),
    Escape("system() of the runtime's loaded libc", "ctypes_loaded_libc_system",
           lambda h: [h.marker], _saw(NO_NATIVE), SHELL_NOT_STARTED),
    # A function pointer resolved before the hook was installed: calling it is not an
    # audit event, so the agent reaches the kernel even with the hook armed.
    Escape("raw execve through the runtime's syscall()", "raw_execve", lambda h: [h.marker],
           _saw("PermissionError: [Errno 1] Operation not permitted", errno.EPERM),
           _saw("PermissionError: [Errno 1] Operation not permitted", errno.EPERM)),
    Escape("mount (nonexistent target)", "mount", lambda h: [],
           _saw("PermissionError: [Errno 1] mount: Operation not permitted", errno.EPERM),
           _saw("PermissionError: [Errno 1] mount: Operation not permitted", errno.EPERM)),
    # Other processes: the zygote, the host and the bystander share the sandbox's uid;
    # the per-process Landlock scope stops signals, seccomp stops tracing and renicing.
    Escape("os.kill(os.getppid(), 0)", "signal_parent", lambda h: [], _saw(NO_SIGNALS),
           _EPERM),
    Escape("SIGTERM to a bystander with os.kill", "kill",
           lambda h: [h.bystander, int(signal.SIGTERM)], _saw(NO_SIGNALS), _EPERM),
    Escape("signal 0 to the host with os.kill", "kill", lambda h: [h.pid, 0],
           _saw(NO_SIGNALS), _EPERM),
    Escape("SIGTERM to a bystander through a pidfd", "pidfd_signal",
           lambda h: [h.bystander, int(signal.SIGTERM)], _EPERM, _EPERM),
    Escape("ptrace attach to a bystander", "ptrace_attach", lambda h: [h.bystander],
           _saw("PermissionError: [Errno 1] ptrace: Operation not permitted", errno.EPERM),
           _saw("PermissionError: [Errno 1] ptrace: Operation not permitted", errno.EPERM)),
    Escape("read the zygote's /proc/<pid>/mem", "read_parent_memory", lambda h: [],
           _denied_file("/proc/{ppid}/mem"), _enoent("/proc/{ppid}/mem")),
    Escape("renice a bystander", "renice", lambda h: [h.bystander], _EPERM, _EPERM),
    Escape("lower a bystander's rlimit", "lower_limit_of", lambda h: [h.bystander],
           _EPERM, _EPERM),
]  # fmt: skip


def _check(seen: dict[str, Any], template: dict[str, Any], host: Host) -> None:
    names = host.names
    for known_inside in ("ppid", "fd"):  # the zygote's pid, a descriptor number
        if known_inside in seen:
            names[known_inside] = seen.pop(known_inside)
    expected = {
        key: value.format(**names) if isinstance(value, str) else value
        for key, value in template.items()
    }
    assert seen == expected


@pytest.mark.parametrize("escape", ESCAPES, ids=[e.name for e in ESCAPES])
async def test_escape_is_contained_and_explained(
    zygote: Zygote, stores: Stores, host: Host, escape: Escape
) -> None:
    process = await zygote.spawn(Limits())
    try:
        friendly = await run(process, stores, escape.method, *escape.args(host))
        assert friendly.outcome is Outcome.OK, friendly.error
        _check(friendly.result, escape.friendly, host)
        host.assert_untouched()

        kernel = await run(process, stores, escape.method, *escape.args(host), True)
        assert kernel.outcome is Outcome.OK, kernel.error
        _check(kernel.result, escape.kernel, host)
        host.assert_untouched()

        assert process.reusable
        await assert_serves(process, stores)  # the same warm process serves on
        await stores.assert_other_intact()
    finally:
        await process.close()
    await assert_fresh_process_serves(zygote, stores)  # and the zygote was not disturbed


async def test_a_fork_bomb_gets_nowhere(zygote: Zygote, stores: Stores, host: Host) -> None:
    pool = SandboxPool(zygote)
    tools = store_tools(stores.mine)
    friendly = await pool.execute("mine", "v1", AGENT, "fork_bomb", [50], Limits(), tools)
    assert friendly.outcome is Outcome.OK
    assert friendly.result == [_saw(NO_PROCESSES)] * 50
    kernel = await pool.execute("mine", "v1", AGENT, "fork_bomb", [50, True], Limits(), tools)
    assert kernel.result == [_EPERM] * 50
    host.assert_untouched()
    served = await pool.execute("mine", "v1", AGENT, "plain", [], Limits(), tools)
    assert served.result == "served"
    assert pool.spawned == 1  # one warm process throughout
    await pool.close()


async def test_the_host_environment_is_not_inherited(zygote: Zygote, stores: Stores) -> None:
    assert os.environ["CORRAL_TEST_SECRET"] == SECRET  # the host has it
    process = await zygote.spawn(Limits())
    result = await run(process, stores, "environment")
    assert result.result == {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    assert SECRET not in repr(result.result)
    await assert_serves(process, stores)
    await process.close()


async def test_the_host_still_sees_a_sandboxed_process_in_its_proc(
    zygote: Zygote, stores: Stores
) -> None:
    """The private root hides /proc from the process, not the process from the host: it
    reads its memory peak and CPU time there, and moves it into its memory group by pid."""
    process = await zygote.spawn(Limits())
    try:
        fields = proc_status(process.pid)
        assert fields["Pid"] == str(process.pid)
        assert int(fields["VmHWM"].split()[0]) > 0
        its_root = set(os.listdir(f"/proc/{process.pid}/root"))  # the private root
        assert its_root
        assert not its_root & {"etc", "proc", "dev"}
        await assert_serves(process, stores)
    finally:
        await process.close()


# -- other processes' descriptors ---------------------------------------------------------


async def _with_siblings(zygote: Zygote, count: int) -> list[SandboxProcess]:
    """``count`` live sandboxed processes: the zygote holds a pidfd for each."""
    return [await zygote.spawn(Limits()) for _ in range(count)]


async def test_siblings_cannot_be_signalled_through_inherited_pidfds(
    zygote: Zygote, stores: Stores
) -> None:
    siblings = await _with_siblings(zygote, 64)
    probe = await zygote.spawn(Limits())
    try:
        result = await run(probe, stores, "signal_inherited_descriptors", int(signal.SIGTERM))
        assert result.outcome is Outcome.OK, result.error
        # Nothing leaks (the next test); were anything to, a sibling's pidfd answers
        # EPERM (the Landlock scope) and the process's own channel EBADF (not a pidfd).
        ebadf = _saw("OSError: [Errno 9] Bad file descriptor", errno.EBADF)
        assert all(seen in (_EPERM, ebadf) for seen in result.result), result.result
        for sibling in siblings:
            assert sibling.alive
        await assert_serves(siblings[0], stores)
        await assert_serves(siblings[-1], stores)
    finally:
        await asyncio.gather(*(p.close() for p in [*siblings, probe]))


async def test_no_descriptor_of_the_zygote_is_inherited(zygote: Zygote, stores: Stores) -> None:
    siblings = await _with_siblings(zygote, 64)
    probe = await zygote.spawn(Limits())
    try:
        result = await run(probe, stores, "inherited_descriptors")
        assert result.outcome is Outcome.OK, result.error
        assert result.result == []
    finally:
        await asyncio.gather(*(p.close() for p in [*siblings, probe]))


# -- limits -----------------------------------------------------------------------------


async def test_a_2_gib_allocation_is_a_memory_limit(zygote: Zygote, stores: Stores) -> None:
    limits = Limits(memory_mb=64)
    pool = SandboxPool(zygote)
    tools = store_tools(stores.mine)
    caught = await pool.execute("mine", "v1", AGENT, "allocate", [2 << 30, True], limits, tools)
    assert caught.outcome is Outcome.OK
    assert caught.result == _saw("MemoryError: ")
    assert len(pool) == 1  # caught: nothing breached, the process stays warm

    result = await pool.execute("mine", "v1", AGENT, "allocate", [2 << 30], limits, tools)
    assert result.outcome is Outcome.MEMORY_LIMIT
    assert result.error is not None
    assert result.error["type"] == "MemoryError"
    assert result.error["message"] == "the execution ran out of memory (limit 64 MiB)"
    assert len(pool) == 0  # a breach retires the process

    served = await pool.execute("mine", "v1", AGENT, "plain", [], limits, tools)
    assert served.result == "served"
    assert pool.spawned == 2
    await pool.close()


async def test_touching_memory_stops_at_the_limit(zygote: Zygote, stores: Stores) -> None:
    limits = Limits(memory_mb=64)
    baseline_process = await zygote.spawn(limits)
    baseline = await run(baseline_process, stores, "plain", limits=limits)
    await baseline_process.close()

    process = await zygote.spawn(limits)
    result = await run(process, stores, "hog", 8, 256, limits=limits)
    assert result.outcome is Outcome.MEMORY_LIMIT
    assert result.error is not None
    assert result.error["message"] == "the execution ran out of memory (limit 64 MiB)"
    # What it touched stayed within the budget (plus the thread-stack room it includes).
    assert result.peak_rss_bytes - baseline.peak_rss_bytes < (64 + 32) * 1024 * 1024
    await process.close()
    await assert_fresh_process_serves(zygote, stores)


async def test_a_busy_loop_is_stopped_at_its_cpu_budget(zygote: Zygote, stores: Stores) -> None:
    limits = Limits(cpu_s=1, timeout_s=30)
    process = await zygote.spawn(limits)
    result = await run(process, stores, "spin", 20, limits=limits)
    assert result.outcome is Outcome.CPU_LIMIT
    assert result.error == {
        "type": "cpu_limit",
        "message": "the execution used its whole CPU budget and was stopped",
        "traceback": "",
    }
    assert result.cpu_ms >= 1000
    assert not process.alive
    await assert_fresh_process_serves(zygote, stores)


async def test_sleeping_past_the_deadline_is_a_timeout(zygote: Zygote, stores: Stores) -> None:
    limits = Limits(timeout_s=0.5)
    process = await zygote.spawn(limits)
    result = await run(process, stores, "doze", 10, limits=limits)
    assert result.outcome is Outcome.TIMEOUT
    assert result.error == {
        "type": "timeout",
        "message": "the execution ran past its wall-clock timeout and was stopped",
        "traceback": "",
    }
    assert 500 <= result.duration_ms < 10_000
    assert not process.alive
    await assert_fresh_process_serves(zygote, stores)


async def test_tampering_with_the_childs_budget_does_not_lift_it(
    zygote: Zygote, stores: Stores
) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, stores, "tamper_with_budget", 10, limits=Limits(requests=3))
    assert result.outcome is Outcome.OK
    assert result.result == (
        [0, 1, 2],
        "RequestLimitExceeded: this execution has used its 3-request budget",
    )
    assert result.requests_used == 4
    assert await stores.mine.keys() == ["k0", "k1", "k2", "note"]
    await assert_serves(process, stores)
    await process.close()


# -- what agents need still works --------------------------------------------------------


async def test_threads_and_thread_pools_still_work(zygote: Zygote, stores: Stores) -> None:
    pool = SandboxPool(zygote)
    tools = store_tools(stores.mine)
    result = await pool.execute("mine", "v1", AGENT, "threads", [], Limits(), tools)
    assert result.outcome is Outcome.OK, result.error
    assert result.result == ([4950], [0, 2, 4, 6, 8, 10, 12, 14], 1)
    served = await pool.execute("mine", "v1", AGENT, "plain", [], Limits(), tools)
    assert served.result == "served"
    assert pool.spawned == 1  # every thread ended: the process stayed warm
    await pool.close()


async def test_standard_libraries_and_time_zones_still_work(zygote: Zygote, stores: Stores) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, stores, "libraries")
    assert result.outcome is Outcome.OK, result.error
    assert result.result == [
        {"a": [1, 2]},
        "3.30",
        ["1", "22", "333"],
        "2024-07-01T12:00:00+02:00",
        "CEST",
    ]
    await assert_serves(process, stores)
    await process.close()


# -- another instance's keys -------------------------------------------------------------

#: (operation, arguments, what the agent gets back, or the error it sees as (type, message)).
#: An unknown operation is a PermissionError (test_an_unknown_operation_is_a_permission_error).
RAW_CALLS = [
    ("store.get_encoded", ["secret", "other"],
     ("TypeError", "Store.get_encoded() takes 2 positional arguments but 3 were given")),
    ("store.keys", ["", "other"],
     ("TypeError", "Store.keys() takes from 1 to 2 positional arguments but 3 were given")),
    ("store.get_encoded", ["secret"], None),
    ("store.get_encoded", ["../other/secret"], None),
    ("store.get_many_encoded", [["secret", "other:secret", "other/secret"]], [None, None, None]),
    ("store.keys", [""], ["note"]),
    ("store.list_entries_encoded", [""], [("note", codec.encode("mine"))]),
    ("store.clear_all", [], None),
    # The Store's plain-value methods are the host's, not operations the sandbox may call.
    ("store.get", ["secret"], (None, "there is no tool operation 'store.get'")),
    ("../other", ["secret"], (None, "there is no tool operation '../other'")),
    ("store._backend", [], (None, "there is no tool operation 'store._backend'")),
    ("store._scope", [], (None, "there is no tool operation 'store._scope'")),
    ("__class__", [], (None, "there is no tool operation '__class__'")),
    ("store.__class__", [], (None, "there is no tool operation 'store.__class__'")),
    ("store.__init__", ["x", "other"], (None, "there is no tool operation 'store.__init__'")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("op", "args", "seen"), RAW_CALLS, ids=[f"{c[0]}{c[1]}" for c in RAW_CALLS]
)
async def test_no_rpc_call_reaches_another_instance(
    zygote: Zygote, stores: Stores, op: str, args: list[Any], seen: Any
) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, stores, "raw_call", op, *args)
    assert result.outcome is Outcome.OK, result.error
    if type(seen) is tuple:
        kind, message = seen
        saw_kind, _, saw_message = result.result["saw"].partition(": ")
        assert (kind or saw_kind, message) == (saw_kind, saw_message)
    else:
        assert result.result == {"returned": seen}
    assert OTHER_VALUE not in repr(result.result)
    assert result.requests_used == 1
    await stores.assert_other_intact()
    await assert_serves(process, stores)
    await process.close()


async def test_an_unknown_operation_is_a_permission_error(zygote: Zygote, stores: Stores) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, stores, "raw_call", "store._backend")
    assert result.result == {
        "saw": "PermissionError: there is no tool operation 'store._backend'",
        "permission": True,
    }
    await process.close()


FORGED_CALLS = [
    ("store.get_encoded", ["secret", "other"],
     [False, {"type": "TypeError",
              "message": "Store.get_encoded() takes 2 positional arguments but 3 were given"}]),
    ("store.get_encoded", ["secret"], [True, None]),
    ("store.keys", [""], [True, ["note"]]),
    ("db.query", ["select value from state"],
     [False, {"type": "PermissionError", "message": "there is no tool operation 'db.query'"}]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("op", "args", "reply"), FORGED_CALLS, ids=[f"{c[0]}{c[1]}" for c in FORGED_CALLS]
)
async def test_a_hand_made_call_frame_gets_only_its_own_scope(
    zygote: Zygote, stores: Stores, op: str, args: list[Any], reply: list[Any]
) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, stores, "forged_call", 4242, op, args)
    assert result.outcome is Outcome.OK, result.error
    assert result.result == [4242, *reply]
    assert result.requests_used == 1  # counted like any call
    await stores.assert_other_intact()
    await assert_serves(process, stores)
    await process.close()


def _frame(message: list[Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


BAD_CALL = "a CALL needs an operation name and a list of at most 16 encoded arguments"
HOSTILE_FRAMES = [
    ("garbage msgpack", struct.pack(">I", 5) + b"\xc1" * 5, "frame is not valid msgpack: "),
    ("a 2 GiB length header", struct.pack(">I", 2**31),
     f"a {2**31}-byte frame exceeds the {MAX_FRAME}-byte limit"),
    ("one byte over the frame limit", struct.pack(">I", MAX_FRAME + 1),
     f"a {MAX_FRAME + 1}-byte frame exceeds the {MAX_FRAME}-byte limit"),
    ("not an array", _frame({"call": 1}), "unknown or malformed message: {'call': 1}"),
    ("an unknown message", _frame(["exec", "true"]),
     "unknown or malformed message: ['exec', 'true']"),
    ("done for another execution", _frame(["done", 999, codec.encode(None), False]),
     "'done' for execution 999, not 1"),
    ("fail for another execution",
     _frame(["fail", 998, {"type": "x", "message": "", "traceback": ""}, False]),
     "'fail' for execution 998, not 1"),
    ("a call with a non-string operation", _frame(["call", 1, 7, []]), BAD_CALL),
    ("a call with arguments not in a list", _frame(["call", 1, "store.get_encoded", "secret"]),
     BAD_CALL),
    ("a call with an argument not encoded", _frame(["call", 1, "store.get_encoded", ["secret"]]),
     BAD_CALL),
    ("a call with 17 arguments", _frame(["call", 1, "store.get_encoded", [b"\xc0"] * 17]),
     BAD_CALL),
    ("a frame of nested lists", _frame(["call", 1, "store.get_encoded", [[[]] * 2000]]),
     "a frame holds more than 16 lists and maps; agent values travel encoded, as bytes"),
    ("a reply from the child", _frame(["reply", 1, True, codec.encode(None)]),
     "unexpected 'reply' message during an execution"),
    ("ready in mid-execution", _frame(["ready", 1]),
     "unexpected 'ready' message during an execution"),
    ("invoke from the child", _frame(["invoke", 1, {}]),
     "unexpected 'invoke' message during an execution"),
    ("done with an undecodable value", _frame(["done", 1, b"\xc1", False]),
     "the result cannot be decoded: FormatError"),
    ("fail without an error object", _frame(["fail", 1, "not a dict", False]),
     "a FAIL message needs an error object"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "message"), [f[1:] for f in HOSTILE_FRAMES], ids=[f[0] for f in HOSTILE_FRAMES]
)
async def test_a_hostile_frame_kills_that_process_only(
    zygote: Zygote, stores: Stores, data: bytes, message: str
) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, stores, "send", data)
    assert result.outcome is Outcome.KILLED
    assert result.error == {"type": "ProtocolError", "message": message, "traceback": ""}
    assert not process.alive
    await process.close()
    await stores.assert_other_intact()
    await assert_fresh_process_serves(zygote, stores)


async def test_a_truncated_frame_runs_into_the_timeout(zygote: Zygote, stores: Stores) -> None:
    limits = Limits(timeout_s=0.5)
    process = await zygote.spawn(limits)
    result = await run(process, stores, "send", struct.pack(">I", 1000) + b"x" * 10, limits=limits)
    assert result.outcome is Outcome.TIMEOUT
    assert not process.alive
    await process.close()
    await assert_fresh_process_serves(zygote, stores)


# -- the channel survives what a process does to it ---------------------------------------


async def test_hanging_up_the_channel_is_not_an_ok_execution(
    zygote: Zygote, stores: Stores
) -> None:
    process = await zygote.spawn(Limits())
    try:
        hung = await run(process, stores, "hang_up", 10)
        assert hung.outcome is Outcome.KILLED
        assert not process.reusable  # so a pool would not keep it warm
    finally:
        process.kill(Outcome.KILLED)  # it lingers otherwise
        await process.close()
    await assert_fresh_process_serves(zygote, stores)


async def test_writing_to_stdout_does_not_break_the_channel(zygote: Zygote, stores: Stores) -> None:
    process = await zygote.spawn(Limits())
    try:
        result = await run(process, stores, "write_to_stdout")
        assert (result.outcome, result.result) == (Outcome.OK, "written"), result.error
    finally:
        await process.close()
    await assert_fresh_process_serves(zygote, stores)


async def test_the_host_truncates_log_lines_a_hostile_child_sends(
    zygote: Zygote, stores: Stores
) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, stores, "send_logs", 8, 1 << 20)
    assert result.outcome is Outcome.OK
    assert len(result.logs) == 8
    assert max(len(line) for _, line in result.logs) <= 4096
    await process.close()


# -- work and output past what an execution may leave -------------------------------------

# The escape agent's helpers (send_frame, ...) with a class of its own.
CHEAT = (
    AGENT[: AGENT.index("class Escapes(Agent):")]
    + r'''
def spin_cpu(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def current_execution():
    """The id the runtime answers this execution under: a local of its frame below."""
    frame = sys._getframe()
    while frame.f_code.co_name != "_invoke":
        frame = frame.f_back
    return frame.f_locals["exec_id"]


class Cheat(Agent):
    def forge_done(self, spin_s):
        """Report completion itself, then go on computing."""
        send_frame(["done", current_execution(), codec.encode("forged"), False])
        spin_cpu(spin_s)
        return "real"

    def huge_result(self, mib):
        return b"x" * (mib << 20)

    def send_huge_result(self, mib):
        send_frame(["done", current_execution(), b"x" * (mib << 20), False])
        time.sleep(60)

    def huge_error(self, mib):
        raise ValueError("x" * (mib << 20))

    def print_flood(self, lines, width):
        for i in range(lines):
            print(str(i).ljust(width, "."))
        return "printed"

    def write_without_newline(self, count):
        for _ in range(count):
            sys.stdout.write("x")
        return "written"

    def touch(self, mib):
        return len(b"x" * (mib << 20))

    def send_dropped(self, count):
        send_frame(["dropped", count])
        return "sent"
'''
)

FORGED_RUN = "the sandboxed process kept running after it reported its result ("


async def test_computing_after_a_forged_completion_is_stopped_and_charged(
    zygote: Zygote, stores: Stores
) -> None:
    process = await zygote.spawn(Limits())
    amended: list[ExecutionResult] = []
    tools = store_tools(stores.mine)
    result = await process.execute(
        CHEAT, "forge_done", [5.0], Limits(), tools, on_overrun=lambda: amended.append(result)
    )
    assert result.result == "forged"  # what it reported; it is not left at that
    exit_info = await asyncio.wait_for(asyncio.shield(process.exited), timeout=10)
    assert exit_info.cpu_s < 2.5  # stopped well before its 5 s of spinning
    assert amended == [result]
    assert result.outcome is Outcome.KILLED
    assert result.error is not None
    assert result.error["message"].startswith(FORGED_RUN), result.error
    assert result.error["message"].endswith(" ms of CPU more) and was stopped")
    assert result.cpu_ms >= 20  # the time after its report is charged to it
    await process.close()
    await assert_fresh_process_serves(zygote, stores)


async def test_the_pool_replaces_a_process_that_went_on_computing(
    zygote: Zygote, stores: Stores
) -> None:
    pool = SandboxPool(zygote)
    tools = store_tools(stores.mine)
    amended = asyncio.Event()
    result = await pool.execute(
        "mine", "v1", CHEAT, "forge_done", [5.0], Limits(), tools, on_overrun=amended.set
    )
    await asyncio.wait_for(amended.wait(), timeout=10)  # while it idles in the pool
    assert result.outcome is Outcome.KILLED
    assert result.error is not None
    assert result.error["message"].startswith(FORGED_RUN)
    served = await pool.execute("mine", "v1", AGENT, "plain", [], Limits(), tools)
    assert (served.outcome, served.result) == (Outcome.OK, "served"), served.error
    assert pool.spawned == 2  # not in the process it killed
    await pool.close()


async def test_a_result_over_the_limit_fails_at_once(zygote: Zygote, stores: Stores) -> None:
    limits = Limits(timeout_s=20)
    process = await zygote.spawn(limits)
    tools = store_tools(stores.mine)
    result = await process.execute(CHEAT, "huge_result", [5], limits, tools)
    assert result.outcome is Outcome.ERROR  # not a timeout: nothing waits for it
    assert result.error is not None
    assert (result.error["type"], result.error["message"]) == (
        "ResultTooLarge",
        "the return value is 5,242,885 bytes encoded, over the 1,048,576-byte limit of a "
        "result: keep large data in self.store and return its key",
    )
    # A child that sends one anyway gets the same from the host.
    result = await process.execute(CHEAT, "send_huge_result", [2], limits, tools)
    assert result.outcome is Outcome.ERROR
    assert result.error is not None
    assert result.error["type"] == "ResultTooLarge"
    assert result.error["message"].startswith("the return value is 2,097,152 bytes encoded")
    await process.close()
    await assert_fresh_process_serves(zygote, stores)


async def test_an_error_with_a_huge_message_is_reported_cut(zygote: Zygote, stores: Stores) -> None:
    limits = Limits(timeout_s=20)
    process = await zygote.spawn(limits)
    result = await process.execute(CHEAT, "huge_error", [5], limits, store_tools(stores.mine))
    assert result.outcome is Outcome.ERROR
    assert result.error is not None
    assert result.error["type"] == "ValueError"
    assert result.error["message"] == "x" * 16 * 1024
    assert len(result.error["traceback"]) == 16 * 1024
    await assert_serves(process, stores)
    await process.close()


async def test_a_print_flood_keeps_the_first_lines_and_counts_the_rest(
    zygote: Zygote, stores: Stores
) -> None:
    limits = Limits(memory_mb=64, timeout_s=30)
    process = await zygote.spawn(limits)
    tools = store_tools(stores.mine)
    # 200,000 lines of 1 KiB: three times the memory limit, were they all buffered.
    result = await process.execute(CHEAT, "print_flood", [200_000, 1024], limits, tools)
    assert (result.outcome, result.result) == (Outcome.OK, "printed"), result.error
    assert len(result.logs) == 1001
    assert result.logs[0] == ("info", "0".ljust(1024, "."))
    assert result.logs[999] == ("info", "999".ljust(1024, "."))
    assert result.logs[1000] == (
        "warning",
        "199,000 more log lines were dropped: an execution keeps at most 1,000",
    )
    result = await process.execute(CHEAT, "write_without_newline", [100_000], limits, tools)
    assert (result.outcome, result.logs) == (Outcome.OK, [("info", "x" * 4096)])
    await assert_serves(process, stores)
    await process.close()


async def test_the_host_counts_log_lines_a_hostile_child_sends_past_the_cap(
    zygote: Zygote, stores: Stores
) -> None:
    process = await zygote.spawn(Limits())
    result = await run(process, stores, "send_logs", 1500, 10)
    assert result.outcome is Outcome.OK
    assert len(result.logs) == 1001
    assert result.logs[-1] == (
        "warning",
        "500 more log lines were dropped: an execution keeps at most 1,000",
    )
    result = await process.execute(CHEAT, "send_dropped", [-1], Limits(), store_tools(stores.mine))
    assert result.outcome is Outcome.KILLED
    assert result.error == {
        "type": "ProtocolError",
        "message": "a DROPPED message needs a count",
        "traceback": "",
    }
    await process.close()
    await assert_fresh_process_serves(zygote, stores)


async def test_peak_memory_is_each_executions_own_without_a_memory_group(
    zygote: Zygote, stores: Stores
) -> None:
    zygote.memory_cgroups = None  # as on a host that cannot create memory groups
    process = await zygote.spawn(Limits())
    tools = store_tools(stores.mine)
    big = await process.execute(CHEAT, "touch", [64], Limits(), tools)
    small = await process.execute(CHEAT, "touch", [0], Limits(), tools)
    assert big.peak_rss_bytes >= 64 * 1024 * 1024
    assert small.peak_rss_bytes < big.peak_rss_bytes - 48 * 1024 * 1024
    await process.close()


# -- the same through `corral exec` -------------------------------------------------------


def test_corral_exec_contains_and_explains(tmp_path: Path) -> None:
    """The CLI path: run_once in a fresh zygote, two processes, the record printed."""
    agent = tmp_path / "escapes.py"
    agent.write_text(AGENT)
    marker = tmp_path / "pwned"
    runner = CliRunner()

    read = runner.invoke(
        corral_cli, ["exec", str(agent), "read_with_open", "--arg", '"/etc/passwd"', "--json"]
    )
    assert read.exit_code == 0, read.output
    record = json.loads(read.stdout)
    assert record["outcome"] == "ok"
    assert record["result"] == _denied_file("/etc/passwd")

    touch = ["--arg", json.dumps(str(marker)), "--arg", "true"]  # disarmed: the kernel answers
    system = runner.invoke(corral_cli, ["exec", str(agent), "run_os_system", *touch, "--json"])
    assert system.exit_code == 0, system.output
    assert json.loads(system.stdout)["result"] == SHELL_NOT_STARTED
    assert not marker.exists()

    hog = tmp_path / "hog.py"
    hog.write_text(
        "from corral.sdk import Agent\n\n"
        "class Hog(Agent):\n"
        "    limits = {'memory_mb': 64}\n\n"
        "    def eat(self):\n"
        "        return len(bytes(2 << 30))\n"
    )
    eaten = runner.invoke(corral_cli, ["exec", str(hog), "eat", "--json"])
    assert eaten.exit_code == 1
    record = json.loads(eaten.stdout)
    assert record["outcome"] == "memory_limit"
    assert record["error"]["message"] == "the execution ran out of memory (limit 64 MiB)"
