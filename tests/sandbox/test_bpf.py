"""The BPF assembler and the two seccomp programs, checked without loading anything.

A small interpreter runs the assembled programs on made-up ``seccomp_data``, so the
policy is tested on both architectures (aarch64 included, on any machine), and the
syscall tables are compared with the kernel headers where those are installed.
"""

from __future__ import annotations

import errno
import re
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.sandbox import bpf, seccomp
from corral.sandbox.syscalls import _ARCHES, Arch

ALLOW = seccomp.RET_ALLOW
EPERM = seccomp.RET_ERRNO | errno.EPERM
ENOSYS = seccomp.RET_ERRNO | errno.ENOSYS
KILL = seccomp.RET_KILL_PROCESS


def run(program: tuple[bpf.Instruction, ...], data: bytes) -> int:
    """Interpret the few opcodes the assembler emits, as the kernel would."""
    accumulator = pc = 0
    while True:
        insn = program[pc]
        pc += 1
        if insn.code == 0x20:  # BPF_LD | BPF_W | BPF_ABS
            (accumulator,) = struct.unpack_from("<I", data, insn.k)
        elif insn.code == 0x06:  # BPF_RET | BPF_K
            return insn.k
        else:
            taken = {
                0x15: accumulator == insn.k,  # JEQ
                0x35: accumulator >= insn.k,  # JGE
                0x45: bool(accumulator & insn.k),  # JSET
            }[insn.code]
            pc += insn.jt if taken else insn.jf


def call(arch: Arch, name: str, *args: int, audit_arch: int | None = None) -> bytes:
    nr = arch.numbers[name] if name in arch.numbers else int(name)
    padded = (list(args) + [0] * 6)[:6]
    return struct.pack("<iIQ6Q", nr, audit_arch or arch.audit_arch, 0, *padded)


ARCHES = [pytest.param(arch, id=name) for name, arch in _ARCHES.items()]
CLONE_THREAD_FLAGS = 0x003D0F00  # what glibc's pthread_create passes


# -- the assembler -------------------------------------------------------------------


def _too_far(asm: bpf.Assembler) -> bpf.Assembler:
    asm.jump_eq(1, "far", None)
    for _ in range(256):
        asm.ret(0)
    return asm.label("far").ret(1)


def test_labels_become_relative_offsets() -> None:
    program = bpf.Assembler().load(0).jump_eq(7, "yes", None).ret(1).label("yes").ret(2).assemble()
    assert program[1] == bpf.Instruction(0x15, 1, 0, 7)
    assert run(program, struct.pack("<I", 7)) == 2
    assert run(program, struct.pack("<I", 8)) == 1


def test_encoding_is_struct_sock_filter() -> None:
    program = bpf.Assembler().ret(ALLOW).assemble()
    assert bpf.encode(program) == struct.pack("=HBBI", 0x06, 0, 0, ALLOW)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda a: a.jump_eq(1, "nowhere", None).ret(0), "undefined label"),
        (lambda a: a.label("top").load(0).jump_eq(1, "top", None).ret(0), "backwards"),
        (_too_far, "spans 256"),
        (lambda a: a.load(0), "must end with a return"),
        (lambda a: a.label("x").label("x"), "defined twice"),
        (lambda a: a.ret(1 << 32), "32 bits"),
    ],
    ids=["undefined", "backwards", "too-far", "no-return", "duplicate", "overflow"],
)
def test_broken_programs_do_not_assemble(
    build: Callable[[bpf.Assembler], bpf.Assembler], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build(bpf.Assembler()).assemble()


# -- the base filter -----------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES)
def test_base_filter_denies_its_list_and_allows_the_rest(arch: Arch) -> None:
    program = seccomp.base_filter(arch).program
    for name in seccomp.BASE_DENIED:
        if name in arch.numbers:
            assert run(program, call(arch, name)) == EPERM, name
    for name in ("capget", "landlock_restrict_self", "seccomp", "setrlimit"):
        assert run(program, call(arch, name)) == ALLOW, name


#: The metadata calls only x86_64 has: the generic table (aarch64) kept just the *at forms.
LEGACY_ONLY = {"chmod", "chown", "lchown", "utime", "utimes", "futimesat"}


@pytest.mark.parametrize("arch", ARCHES)
def test_base_filter_denies_every_way_to_change_file_metadata(arch: Arch) -> None:
    program = seccomp.base_filter(arch).program
    absent = {name for name in seccomp.METADATA_CALLS if name not in arch.numbers}
    assert absent == (LEGACY_ONLY if arch.name == "aarch64" else set())
    for name in set(seccomp.METADATA_CALLS) - absent:
        assert run(program, call(arch, name, 3, 0o4755)) == EPERM, name
    assert set(seccomp.METADATA_CALLS) <= set(seccomp.BASE_DENIED)


#: ioctls Python makes on its own: non-blocking sockets, close-on-exec, isatty().
PYTHONS_IOCTLS = {"FIONBIO": 0x5421, "FIOCLEX": 0x5451, "TCGETS": 0x5401}


@pytest.mark.parametrize("arch", ARCHES)
def test_base_filter_denies_only_the_ioctls_that_change_file_attributes(arch: Arch) -> None:
    program = seccomp.base_filter(arch).program
    for command in seccomp.METADATA_IOCTLS:
        assert run(program, call(arch, "ioctl", 3, command)) == EPERM, hex(command)
        # The kernel reads the command as an unsigned int: the high word changes nothing.
        assert run(program, call(arch, "ioctl", 3, 0xFFFF << 32 | command)) == EPERM
    for name, command in {**PYTHONS_IOCTLS, "FS_IOC_GETFLAGS": 0x80086601}.items():
        assert run(program, call(arch, "ioctl", 3, command)) == ALLOW, name


@pytest.mark.parametrize("arch", ARCHES)
def test_base_filter_lets_clone_fork_but_not_create_namespaces(arch: Arch) -> None:
    program = seccomp.base_filter(arch).program
    assert run(program, call(arch, "clone", 0x01200011)) == ALLOW  # glibc fork()
    assert run(program, call(arch, "clone", CLONE_THREAD_FLAGS)) == ALLOW
    for flag in (0x00020000, 0x10000000, 0x20000000, 0x40000000):
        assert run(program, call(arch, "clone", 0x11 | flag)) == EPERM, hex(flag)
    assert run(program, call(arch, "clone3")) == ENOSYS


@pytest.mark.parametrize("arch", ARCHES)
def test_base_filter_lets_a_process_set_only_its_own_limits(arch: Arch) -> None:
    program = seccomp.base_filter(arch).program
    assert run(program, call(arch, "prlimit64", 0, 0, 0x7FFF0000)) == ALLOW  # own
    assert run(program, call(arch, "prlimit64", 1234, 0, 0, 0x7FFF0000)) == ALLOW  # read
    assert run(program, call(arch, "prlimit64", 1234, 0, 0x7FFF0000)) == EPERM
    assert run(program, call(arch, "prlimit64", 1234, 0, 0x7F << 32)) == EPERM  # high half
    assert run(program, call(arch, "setpriority", 0, 0, 10)) == ALLOW
    assert run(program, call(arch, "setpriority", 0, 1234, 10)) == EPERM
    assert run(program, call(arch, "setpriority", 2, 0, 10)) == EPERM  # PRIO_USER
    assert run(program, call(arch, "ioprio_set", 1, 0, 0)) == ALLOW
    assert run(program, call(arch, "ioprio_set", 1, 1234, 0)) == EPERM
    for name in seccomp.SELF_ONLY:
        assert run(program, call(arch, name, 0)) == ALLOW, name
        assert run(program, call(arch, name, 1234)) == EPERM, name


@pytest.mark.parametrize("arch", ARCHES)
def test_foreign_abis_are_killed(arch: Arch) -> None:
    for program in (seccomp.base_filter(arch).program, seccomp.child_filter(arch).program):
        assert run(program, call(arch, "socket", audit_arch=0x40000003)) == KILL  # i386
        if arch.foreign_nr_base is not None:  # x32
            assert run(program, call(arch, str(arch.foreign_nr_base + 41))) == KILL


# -- the child filter ----------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHES)
def test_child_filter_allows_threads_only(arch: Arch) -> None:
    program = seccomp.child_filter(arch).program
    assert run(program, call(arch, "clone", CLONE_THREAD_FLAGS)) == ALLOW
    assert run(program, call(arch, "clone", 0x01200011)) == EPERM  # fork()
    assert run(program, call(arch, "clone", 0x4111)) == EPERM  # vfork()
    assert run(program, call(arch, "clone3")) == ENOSYS
    for name in ("fork", "vfork"):
        if name in arch.numbers:
            assert run(program, call(arch, name)) == EPERM
    assert run(program, call(arch, "socket")) == ALLOW  # the base filter's business


@pytest.mark.parametrize("arch", ARCHES)
def test_child_filter_freezes_limits_but_lets_them_be_read(arch: Arch) -> None:
    program = seccomp.child_filter(arch).program
    assert run(program, call(arch, "prlimit64", 0, 0, 0, 0x7FFF0000)) == ALLOW
    assert run(program, call(arch, "prlimit64", 0, 0, 0x7FFF0000)) == EPERM
    assert run(program, call(arch, "setrlimit", 0, 0x7FFF0000)) == EPERM


def test_child_filter_stays_small() -> None:
    """Its cost is paid by every child: the JIT takes about 2 µs per instruction."""
    assert len(seccomp.child_filter()) <= 24


# -- syscall numbers against the kernel headers --------------------------------------

HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),
}


#: Calls newer than the oldest headers the check below accepts (Linux 6.1), by the
#: release that added them.
NEWER_THAN_6_1 = {
    "fchmodat2",  # 6.6
    "setxattrat", "removexattrat",  # 6.13
    "open_tree_attr",  # 6.15
    "file_setattr",  # 6.17
}  # fmt: skip


@pytest.mark.parametrize("arch", ARCHES)
def test_syscall_numbers_match_the_kernel_headers(arch: Arch) -> None:
    header = HEADERS[arch.name]
    if not header.exists():
        pytest.skip(f"{header} is not installed")
    defined = {
        name: int(number)
        for name, number in re.findall(r"#define __NR(?:3264)?_(\w+)\s+(\d+)", header.read_text())
    }
    known = {name: number for name, number in arch.numbers.items() if name in defined}
    assert known == {name: defined[name] for name in known}
    assert set(arch.numbers) - set(known) <= NEWER_THAN_6_1  # headers older than those
