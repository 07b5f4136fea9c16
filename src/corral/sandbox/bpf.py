"""A tiny classic-BPF assembler: just what a seccomp filter needs.

A seccomp program is a list of ``struct sock_filter`` (code, jt, jf, k) that loads words
from ``struct seccomp_data``, compares them, and returns a verdict. Jumps are relative,
forward-only and at most 255 instructions long; writing the offsets by hand is where
filters go wrong, so the assembler takes label names and computes them. A filter too
long for its jumps fails to assemble instead of jumping somewhere else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Instruction classes and modes (linux/bpf_common.h).
_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS
_JMP = 0x05
_JEQ_K = _JMP | 0x10 | 0x00  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = _JMP | 0x30 | 0x00  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = _JMP | 0x40 | 0x00  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06 | 0x00  # BPF_RET | BPF_K

_MAX_JUMP = 255
#: The kernel's limit on instructions per filter (BPF_MAXINSNS).
MAX_INSTRUCTIONS = 4096

_ENCODING = struct.Struct("=HBBI")


@dataclass(frozen=True, slots=True)
class Instruction:
    """One ``struct sock_filter``."""

    code: int
    jt: int
    jf: int
    k: int

    def encode(self) -> bytes:
        return _ENCODING.pack(self.code, self.jt, self.jf, self.k)


@dataclass(frozen=True, slots=True)
class _Jump:
    code: int
    k: int
    if_true: str | None
    if_false: str | None


@dataclass(frozen=True, slots=True)
class _Label:
    name: str


class Assembler:
    """Builds a program instruction by instruction; :meth:`assemble` resolves the labels.

    A jump target of ``None`` means "the next instruction". Every method returns the
    assembler, so a program reads top to bottom::

        asm = Assembler()
        asm.load(4).jump_eq(ARCH, None, "kill").load(0).jump_eq(NR_SOCKET, "deny", None)
        asm.ret(ALLOW).label("deny").ret(DENY).label("kill").ret(KILL)
    """

    def __init__(self) -> None:
        self._items: list[Instruction | _Jump | _Label] = []

    def load(self, offset: int) -> Assembler:
        """Load the 32-bit word at ``offset`` of the input into the accumulator."""
        self._items.append(Instruction(_LD_W_ABS, 0, 0, _u32(offset)))
        return self

    def jump_eq(self, k: int, if_true: str | None, if_false: str | None) -> Assembler:
        """Jump to ``if_true`` when the accumulator equals ``k``, else to ``if_false``."""
        self._items.append(_Jump(_JEQ_K, _u32(k), if_true, if_false))
        return self

    def jump_ge(self, k: int, if_true: str | None, if_false: str | None) -> Assembler:
        """Jump to ``if_true`` when the accumulator is ``>= k`` (unsigned)."""
        self._items.append(_Jump(_JGE_K, _u32(k), if_true, if_false))
        return self

    def jump_set(self, mask: int, if_true: str | None, if_false: str | None) -> Assembler:
        """Jump to ``if_true`` when any bit of ``mask`` is set in the accumulator."""
        self._items.append(_Jump(_JSET_K, _u32(mask), if_true, if_false))
        return self

    def ret(self, value: int) -> Assembler:
        """Stop with verdict ``value``."""
        self._items.append(Instruction(_RET_K, 0, 0, _u32(value)))
        return self

    def label(self, name: str) -> Assembler:
        """Name the next instruction as a jump target."""
        if any(isinstance(item, _Label) and item.name == name for item in self._items):
            raise ValueError(f"label {name!r} defined twice")
        self._items.append(_Label(name))
        return self

    def assemble(self) -> tuple[Instruction, ...]:
        """Resolve labels into relative offsets; raise ValueError on any broken jump."""
        addresses: dict[str, int] = {}
        count = 0
        for item in self._items:
            if isinstance(item, _Label):
                addresses[item.name] = count
            else:
                count += 1
        if count == 0 or count > MAX_INSTRUCTIONS:
            raise ValueError(f"a filter needs 1 to {MAX_INSTRUCTIONS} instructions, not {count}")

        program: list[Instruction] = []
        for item in self._items:
            if isinstance(item, _Label):
                continue
            if isinstance(item, _Jump):
                here = len(program)
                jt = _offset(here, item.if_true, addresses)
                jf = _offset(here, item.if_false, addresses)
                item = Instruction(item.code, jt, jf, item.k)
            program.append(item)
        if program[-1].code != _RET_K:
            raise ValueError("a filter must end with a return")
        return tuple(program)


def encode(program: tuple[Instruction, ...]) -> bytes:
    """The program as the kernel reads it: an array of ``struct sock_filter``."""
    return b"".join(instruction.encode() for instruction in program)


def _offset(here: int, target: str | None, addresses: dict[str, int]) -> int:
    if target is None:
        return 0
    if target not in addresses:
        raise ValueError(f"jump to undefined label {target!r}")
    distance = addresses[target] - here - 1
    if distance < 0:
        raise ValueError(f"jump to {target!r} goes backwards; classic BPF jumps forward only")
    if distance > _MAX_JUMP:
        raise ValueError(f"jump to {target!r} spans {distance} instructions (max {_MAX_JUMP})")
    return distance


def _u32(value: int) -> int:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{value:#x} does not fit in 32 bits")
    return value
