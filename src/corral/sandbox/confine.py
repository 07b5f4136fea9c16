"""Which layers the zygote and each sandboxed process put on, in which order."""

from __future__ import annotations

import os
import resource
import sys
from typing import Any

# Room above the agent's memory budget for the interpreter itself and thread stacks.
_ADDRESS_SPACE_OVERHEAD_MB = 160
# A warm process serves many executions; this caps its lifetime CPU as a backstop
# to the host's per-execution watchdog.
_LIFETIME_CPU_EXECUTIONS = 100


def readable_paths() -> list[str]:
    """What sandboxed code may read: the Python installation, its packages, time zones."""
    paths = {sys.prefix, sys.base_prefix, "/usr/share/zoneinfo"}
    paths.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted(p for p in paths if os.path.isdir(p))


def confine_zygote(*, insecure: bool) -> dict[str, Any]:
    return {"layers": {}, "insecure": insecure}


def confine_child(spec: dict[str, Any]) -> None:
    memory = (int(spec["memory_mb"]) + _ADDRESS_SPACE_OVERHEAD_MB) * 1024 * 1024
    cpu = int(spec["cpu_s"] * _LIFETIME_CPU_EXECUTIONS) + 1
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
