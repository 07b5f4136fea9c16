"""The two seccomp filters: a base filter for the zygote, a fork filter per child.

Both are assembled once (in the zygote) into a ready ``struct sock_fprog``; loading one
is a single ``seccomp(2)`` call, about 0.05 ms for the small one. Denied calls return an
errno rather than killing the process, so agent code gets a Python exception it can
report. Only a foreign ABI (i386 ``int 0x80``, x32) kills: no Python code makes those
calls, and their numbers would otherwise slip past a table written for the native ABI.

The base filter is loaded by the zygote on itself and inherited by every child. It must
leave the zygote able to fork and each child able to set its own rlimits, so the two
restrictions that would break that live in the child filter, loaded last in each child.
"""

from __future__ import annotations

import ctypes
import errno

from corral.sandbox import bpf
from corral.sandbox.syscalls import Arch, current_arch, prctl, syscall

_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_TSYNC = 1
_PR_GET_SECCOMP = 21

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
_NR = 0
_ARCH = 4


def _arg_low(index: int) -> int:
    return 16 + 8 * index  # little-endian: the low word comes first


def _arg_high(index: int) -> int:
    return 16 + 8 * index + 4


CLONE_THREAD = 0x00010000
#: clone() flags that create namespaces (CLONE_NEWTIME exists only for clone3/unshare).
CLONE_NAMESPACE_FLAGS = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
_PRIO_PROCESS = 0
_IOPRIO_WHO_PROCESS = 1

#: Every call that changes a file's mode, owner, times or extended attributes. Landlock's
#: read-only rules do not cover them (it has no right for metadata), so without this a
#: sandboxed root could make an interpreter it may read setuid-root. x86_64 also has the
#: legacy path forms; aarch64 has only the *at and f* forms.
METADATA_CALLS = (
    "chmod", "fchmod", "fchmodat", "fchmodat2",
    "chown", "fchown", "lchown", "fchownat",
    "utime", "utimes", "utimensat", "futimesat",
    "setxattr", "lsetxattr", "fsetxattr", "setxattrat",
    "removexattr", "lremovexattr", "fremovexattr", "removexattrat",
    "file_setattr",
)  # fmt: skip

#: ioctl commands that change a file's attributes (chattr flags, fsxattr, the inode
#: generation, fs-verity), for which a descriptor opened read-only is enough. ``ioctl``'s
#: command is an ``unsigned int``: the low word of the argument is all of it.
METADATA_IOCTLS = (
    0x40086602,  # FS_IOC_SETFLAGS
    0x40046602,  # FS_IOC32_SETFLAGS
    0x401C5820,  # FS_IOC_FSSETXATTR
    0x40087602,  # FS_IOC_SETVERSION
    0x40047602,  # FS_IOC32_SETVERSION
    0x40806685,  # FS_IOC_ENABLE_VERITY
)

#: Denied outright in every sandboxed process (EPERM); names an architecture lacks (the
#: legacy metadata calls on aarch64) are left out of its filter.
BASE_DENIED = (
    # No new sockets at all: the RPC channel is an inherited socketpair, and asyncio
    # needs only socketpair(), which stays allowed. Allowing AF_UNIX would let a child
    # reach any pathname UNIX socket on the host: Landlock and netns do not cover them.
    "socket",
    # No new programs, and no way into another process's memory.
    "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
    "pidfd_getfd", "process_madvise",
    # No mounts, namespaces or file-handle tricks (open_by_handle_at is a container escape).
    "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick",
    "move_mount", "open_tree", "open_tree_attr", "mount_setattr", "unshare", "setns",
    "open_by_handle_at", "name_to_handle_at",
    # Large kernel attack surface no agent needs.
    "bpf", "perf_event_open", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key", "userfaultfd",
    # Whole-machine operations (all need capabilities we drop; denied twice is cheap).
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff",
    # No file metadata changes: see METADATA_CALLS.
    *METADATA_CALLS,
)  # fmt: skip

#: Calls whose first argument is a pid, with 0 meaning the caller. The sandbox keeps the
#: host's kernel uid (the user namespace maps it to itself), and for these calls a matching
#: uid is all the permission needed, so a child could otherwise renice or starve the host.
SELF_ONLY = ("sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr")


class Filter:
    """An assembled seccomp program, ready to load into the calling process.

    Build it before forking; the child inherits the buffer and :meth:`load` costs one
    syscall (plus the kernel's JIT, proportional to the length).
    """

    def __init__(self, name: str, program: tuple[bpf.Instruction, ...]) -> None:
        self.name = name
        self.program = program
        code = bpf.encode(program)
        self._buffer = ctypes.create_string_buffer(code, len(code))
        self._fprog = _SockFprog(len(program), ctypes.cast(self._buffer, ctypes.c_void_p))

    def __len__(self) -> int:
        return len(self.program)

    def __repr__(self) -> str:
        return f"<seccomp.Filter {self.name}: {len(self)} instructions>"

    def load(self) -> None:
        """Install the filter on every thread of the calling process, for good.

        Requires no_new_privs (:func:`corral.sandbox.capabilities.set_no_new_privs`),
        otherwise the kernel answers EACCES. TSYNC makes threads that already exist
        inherit it too.
        """
        result = syscall(
            "seccomp",
            _SECCOMP_SET_MODE_FILTER,
            _SECCOMP_FILTER_FLAG_TSYNC,
            ctypes.byref(self._fprog),
        )
        if result != 0:  # with TSYNC, a positive result names a thread that cannot sync
            raise OSError(errno.EBUSY, f"seccomp: thread {result} could not be synchronised")


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def filter_mode() -> int:
    """The calling process's seccomp mode: 0 none, 2 filter (PR_GET_SECCOMP)."""
    return prctl(_PR_GET_SECCOMP)


def base_filter(arch: Arch | None = None) -> Filter:
    """Deny sockets, exec, tracing, mounts, namespaces, file metadata changes and kernel
    attack surface.

    Forks and threads stay allowed (the zygote forks), but clone() may not create
    namespaces, and clone3(), whose flags BPF cannot read, answers ENOSYS so glibc falls
    back to clone(). prlimit64 may read any limit and set the caller's own, but not set
    another process's (so a child cannot lower the zygote's or the host's limits). ioctl
    answers EPERM to the commands in METADATA_IOCTLS and passes every other.
    """
    arch = arch or current_arch()
    nr = arch.numbers
    asm = _prologue(arch)
    for name in BASE_DENIED:
        if name in nr:
            asm.jump_eq(nr[name], "deny", None)
    asm.jump_eq(nr["clone3"], "enosys", None)
    asm.jump_eq(nr["clone"], "clone", None)
    asm.jump_eq(nr["prlimit64"], "prlimit64", None)
    asm.jump_eq(nr["setpriority"], "setpriority", None)
    asm.jump_eq(nr["ioprio_set"], "ioprio_set", None)
    asm.jump_eq(nr["ioctl"], "ioctl", None)
    for name in SELF_ONLY:
        asm.jump_eq(nr[name], "pid_is_self", None)
    asm.ret(RET_ALLOW)

    asm.label("clone").load(_arg_low(0)).jump_set(CLONE_NAMESPACE_FLAGS, "deny", "allow")
    # prlimit64(pid, resource, new_limit, old_limit): deny pid != 0 with new_limit != NULL.
    asm.label("prlimit64").load(_arg_low(0)).jump_eq(0, "allow", None)
    _jump_unless_null(asm, 2, "deny")
    asm.jump_eq(0, "allow", "deny")
    # setpriority(which, who, prio) and ioprio_set(which, who, prio): the caller only.
    asm.label("setpriority").load(_arg_low(0)).jump_eq(_PRIO_PROCESS, None, "deny")
    asm.load(_arg_low(1)).jump_eq(0, "allow", "deny")
    asm.label("ioprio_set").load(_arg_low(0)).jump_eq(_IOPRIO_WHO_PROCESS, None, "deny")
    asm.load(_arg_low(1)).jump_eq(0, "allow", "deny")
    asm.label("pid_is_self").load(_arg_low(0)).jump_eq(0, "allow", "deny")
    asm.label("ioctl").load(_arg_low(1))
    for command in METADATA_IOCTLS:
        asm.jump_eq(command, "deny", None)
    asm.ret(RET_ALLOW)
    return Filter("base", _epilogue(asm).assemble())


def child_filter(arch: Arch | None = None) -> Filter:
    """Deny new processes and rlimit changes; threads keep working.

    fork, vfork and clone without CLONE_THREAD answer EPERM. clone3 answers ENOSYS: with
    EPERM glibc 2.36 does not fall back, and ``threading`` fails with "can't start new
    thread"; with ENOSYS it retries with clone(CLONE_THREAD...), which passes. Loaded after
    the child set its rlimits, it also denies setting any limit again (the hard limits
    cannot be raised in the user namespace anyway; this stops raising the soft ones).
    """
    arch = arch or current_arch()
    nr = arch.numbers
    asm = _prologue(arch)
    for name in ("fork", "vfork", "setrlimit"):
        if name in nr:  # aarch64 has no fork or vfork
            asm.jump_eq(nr[name], "deny", None)
    asm.jump_eq(nr["clone3"], "enosys", None)
    asm.jump_eq(nr["clone"], "clone", None)
    asm.jump_eq(nr["prlimit64"], "prlimit64", None)
    asm.ret(RET_ALLOW)

    asm.label("clone").load(_arg_low(0)).jump_set(CLONE_THREAD, "allow", "deny")
    asm.label("prlimit64")
    _jump_unless_null(asm, 2, "deny")
    asm.jump_eq(0, "allow", "deny")
    return Filter("child", _epilogue(asm).assemble())


def _prologue(arch: Arch) -> bpf.Assembler:
    asm = bpf.Assembler()
    asm.load(_ARCH).jump_eq(arch.audit_arch, None, "kill")
    asm.load(_NR)
    if arch.foreign_nr_base is not None:
        asm.jump_ge(arch.foreign_nr_base, "kill", None)
    return asm


def _jump_unless_null(asm: bpf.Assembler, index: int, target: str) -> None:
    """Jump to ``target`` if the low word of argument ``index`` is non-zero; otherwise fall
    through with its high word loaded (the caller tests it for zero)."""
    asm.load(_arg_low(index)).jump_eq(0, None, target).load(_arg_high(index))


def _epilogue(asm: bpf.Assembler) -> bpf.Assembler:
    asm.label("allow").ret(RET_ALLOW)
    asm.label("deny").ret(RET_ERRNO | errno.EPERM)
    asm.label("enosys").ret(RET_ERRNO | errno.ENOSYS)
    asm.label("kill").ret(RET_KILL_PROCESS)
    return asm
