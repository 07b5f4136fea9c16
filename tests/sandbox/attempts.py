"""What agent code might try, one function per attempt, run inside a sandboxed child.

Every attempt must be harmless when nothing stops it: the suites also run them without
a layer to show that the layer is what stops them.

Each returns something JSON can encode when it succeeds (so a test failure shows what
got through) and lets the OSError or MemoryError propagate when it is stopped.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import importlib
import os
import resource
import socket
import struct
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

from corral.sandbox.capabilities import capabilities
from corral.sandbox.syscalls import syscall

CLONE_NEWUSER = 0x10000000
_PTRACE_ATTACH = 16
_SIGCHLD = 17
FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_FS_NOATIME_FL = 0x80

PURE_MODULES = ("wave", "colorsys", "fractions", "difflib", "statistics")
#: C extensions that link against a library in the system lib dir (libsqlite3, ...).
LINKED_MODULES = ("_sqlite3", "_curses", "_uuid")


def not_yet_imported(candidates: tuple[str, ...]) -> str | None:
    return next((name for name in candidates if name not in sys.modules), None)


def read_file(path: str) -> str:
    with open(path) as file:
        return file.read(20)


def write_file(path: str) -> str:
    with open(path, "w") as file:
        file.write("escaped")
    return f"wrote {path}"


def list_dir(path: str) -> list[str]:
    return sorted(os.listdir(path))[:3]


def size_of(path: str) -> int:
    return os.stat(path).st_size


# File metadata, on a file the sandbox may read. Each is harmless if it gets through:
# the tests aim them at a file of their own.


def make_setuid(path: str) -> str:
    os.chmod(path, 0o4755)
    return f"made {path} setuid"


def make_setuid_through_descriptor(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fchmod(fd, 0o6777)
    finally:
        os.close(fd)
    return f"made {path} setuid through a read-only descriptor"


def change_owner(path: str) -> str:
    os.chown(path, os.getuid(), os.getgid())  # allowed to any owner; it stamps the ctime
    return f"chowned {path}"


def change_times(path: str) -> str:
    os.utime(path, (0, 0))
    return f"set the times of {path}"


def set_xattr(path: str) -> str:
    os.setxattr(path, "user.corral", b"escaped")
    return f"set an xattr on {path}"


def remove_xattr(path: str) -> str:
    os.removexattr(path, "user.corral")
    return f"removed an xattr from {path}"


def set_attribute_flag(path: str) -> str:
    """chattr +A through the ioctl, on a descriptor opened read-only."""
    fd = os.open(path, os.O_RDONLY)
    try:
        (flags,) = struct.unpack_from("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8)))
        fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("q", flags | _FS_NOATIME_FL))
    finally:
        os.close(fd)
    return f"set the noatime flag of {path}"


def find_sysv_segment(key: int) -> int:
    """Look a System V shared memory segment up by its key; the id would let it attach."""
    libc = ctypes.CDLL(None, use_errno=True)
    shmget = libc.shmget
    shmget.argtypes = (ctypes.c_int, ctypes.c_size_t, ctypes.c_int)
    segment: int = shmget(key, 0, 0)
    if segment == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return segment


METADATA_CHANGES = (
    make_setuid, make_setuid_through_descriptor, change_owner, change_times, set_xattr,
    remove_xattr, set_attribute_flag,
)  # fmt: skip


def import_module(name: str) -> str:
    return str(importlib.import_module(name))


def open_socket(family: int, kind: int = socket.SOCK_STREAM) -> str:
    with socket.socket(family, kind) as sock:
        return f"created {sock}"


def connect_tcp(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return f"connected to 127.0.0.1:{port}"


def connect_unix(address: str) -> str:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(address)
        return f"connected to {address!r}"


def send_udp() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"x", ("127.0.0.1", 53))
        return "sent"


def exec_program() -> str:
    os.execv("/bin/true", ["true"])


def run_shell() -> int:
    return os.system("true")


def run_subprocess() -> int:
    return subprocess.run(["true"], check=False).returncode


def fork() -> str:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return f"forked {pid}"


def raw_clone() -> str:
    """clone(SIGCHLD) straight through syscall(2), past Python's fork machinery."""
    pid = syscall("clone", _SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return f"cloned {pid}"


def clone3() -> str:
    # With a NULL struct the kernel would answer EINVAL: no process is ever created.
    return f"clone3 returned {syscall('clone3', 0, 0)}"


def clone_namespace() -> str:
    pid = syscall("clone", CLONE_NEWUSER | _SIGCHLD, 0, 0, 0, 0)
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return f"cloned {pid} into a new user namespace"


def unshare_user() -> str:
    syscall("unshare", CLONE_NEWUSER)
    return "unshared a user namespace"


def ptrace_attach(pid: int) -> str:
    syscall("ptrace", _PTRACE_ATTACH, pid, 0, 0)
    return f"attached to {pid}"


def signal_process(pid: int) -> str:
    os.kill(pid, 0)
    return f"may signal {pid}"


def lower_limit_of(pid: int) -> str:
    resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))  # harmless if it gets through
    return f"set a limit of {pid}"


def renice(pid: int) -> str:
    os.setpriority(os.PRIO_PROCESS, pid, 19)
    return f"reniced {pid}"


def raise_own_cpu_limit() -> str:
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
    return f"raised RLIMIT_CPU to {hard}"


def mount_filesystem() -> str:
    """mount(2), made harmless: the target does not exist and no kernel has the file
    system type, so if nothing stopped the call the kernel still refuses (ENOENT). A real
    mount here would land in the host's mount namespace."""
    source, target, kind = b"none", b"/nonexistent/corral-target", b"corral-no-such-fs"
    syscall("mount", ctypes.c_char_p(source), ctypes.c_char_p(target), ctypes.c_char_p(kind), 0, 0)
    return "mounted"


def io_uring() -> str:
    params = ctypes.create_string_buffer(120)
    return f"io_uring fd {syscall('io_uring_setup', 1, ctypes.byref(params))}"


def read_capabilities() -> dict[str, int]:
    sets = capabilities()
    return {"effective": sets.effective, "permitted": sets.permitted}


def proc_status_capabilities() -> dict[str, int]:
    with open("/proc/self/status") as status:
        fields = dict(line.split(":\t", 1) for line in status if line.startswith("Cap"))
    return {name: int(value, 16) for name, value in fields.items()}


def allocate(nbytes: int) -> str:
    block = bytearray(nbytes)
    return f"allocated {len(block)} bytes"


def burn_cpu() -> str:
    while True:
        pass


def use_thread() -> list[int]:
    out: list[int] = []
    thread = threading.Thread(target=lambda: out.append(sum(range(1000))))
    thread.start()
    thread.join()
    return out


def use_thread_pool() -> list[int]:
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda x: x * 2, range(8)))


def socketpair_and_asyncio() -> str:
    """What the sandbox's RPC needs: a socketpair and an event loop speaking over it."""

    async def echo() -> bytes:
        left, right = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=left)
        right.sendall(b"ping")
        data = await reader.readexactly(4)
        writer.close()
        right.close()
        return data

    return asyncio.run(echo()).decode()
