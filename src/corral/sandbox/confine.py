"""What the zygote and each sandboxed process put on, built from :mod:`layers`.

The zygote checks every layer before confining itself. If one is missing it
refuses to start (the host raises ``SandboxUnavailable`` naming each missing
layer and its fix) unless the operator asked for ``--insecure-sandbox``, in which
case the missing layers are skipped and the report says so.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from corral.sandbox.landlock import python_read_paths
from corral.sandbox.layers import Layers
from corral.sandbox.rlimits import ResourceLimits, address_space_for
from corral.sandbox.support import probe_support

_TIME_ZONES = "/usr/share/zoneinfo"
# A warm process serves many executions; its lifetime CPU limit is a backstop to
# the host's per-execution watchdog, never the limit an execution meets first.
_LIFETIME_CPU_EXECUTIONS = 100


def readable_paths() -> list[str]:
    """What sandboxed code may read: the Python installation, its packages, time zones.

    Landlock enforces it; the audit hook uses the same list for its friendly errors.
    """
    return python_read_paths([_TIME_ZONES] if os.path.isdir(_TIME_ZONES) else [])


@dataclass(frozen=True)
class Confinement:
    layers: Layers
    #: Directories sandboxed code may read (Landlock's list, and the audit hook's).
    readable: list[str]
    #: The zygote's own address space and thread stacks, measured before /proc was hidden.
    base_address_space: int
    report: dict[str, Any]


def confine_zygote(readable: list[str], *, insecure: bool) -> Confinement:
    """Check every layer, then sandbox the calling process for good.

    Raises ``SandboxUnavailable`` when a layer is missing and ``insecure`` is false.
    """
    base_address_space = address_space_for(0)
    support = probe_support()
    if not insecure:
        support.require()
    layers = Layers.prepare(readable, skip=[m.name for m in support.missing])
    layers.confine_zygote()
    report = {
        "layers": [asdict(layer) for layer in support],
        "insecure": insecure,
        "missing": [m.name for m in support.missing],
    }
    return Confinement(layers, readable, base_address_space, report)


def confine_child(confinement: Confinement, spec: dict[str, Any]) -> None:
    """The per-process layers: limits, its own Landlock scope, no more processes."""
    address_space = confinement.base_address_space + int(spec["memory_mb"]) * 1024 * 1024
    cpu = max(1, int(spec["cpu_s"] * _LIFETIME_CPU_EXECUTIONS))
    confinement.layers.confine_child(ResourceLimits(cpu_seconds=cpu, address_space=address_space))
