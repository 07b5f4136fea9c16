"""The exceptions the sandbox raises.

Kernel calls that fail raise plain :class:`OSError` (with ``errno`` set, so callers and
tests can tell ``EPERM`` from ``ENOSYS``). The classes here are for the cases a caller
must act on: a layer the kernel cannot provide, or a sandbox used the wrong way.
"""

from __future__ import annotations


class SandboxError(Exception):
    """Base class: the sandbox could not be set up as asked."""


class SandboxUnavailable(SandboxError):
    """One or more sandbox layers are missing on this machine.

    The message names each missing layer, why it is missing and what to do about it,
    so ``corral doctor`` and the refusal to start can print it as is.
    """

    def __init__(self, message: str, layers: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        #: Names of the missing layers, as reported by :func:`corral.sandbox.support.probe_support`.
        self.layers = layers
