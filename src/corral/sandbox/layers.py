"""The layer stack in the order that works: prepared once, applied to the zygote, then per child.

Typical use, in the zygote (single-threaded, after its imports)::

    layers = Layers.prepare(python_read_paths([agent_code_dir]))
    budget = address_space_for(256 << 20)
    layers.confine_zygote()          # netns, private root, no capabilities, Landlock, seccomp
    ...
    if os.fork() == 0:               # each sandbox process
        layers.confine_child(ResourceLimits(cpu_seconds=30, address_space=budget))
        os.closerange(4, ...)        # after: confine_child needs ``layers.child_fds``

The order is the part that is easy to get wrong, so it lives here and nowhere else:

- everything expensive is built first, while the process can still open paths:
  both seccomp programs and both Landlock rulesets;
- the user and network namespace comes before dropping capabilities (entering it grants
  a fresh set in the namespace, and writing the id maps needs them);
- the private root comes right after it: building it takes CAP_SYS_ADMIN in that user
  namespace, and /proc, which writing the id maps needs, is gone once it is in place;
- capabilities are dropped before no_new_privs, which must precede Landlock and seccomp
  (both refuse an unprivileged caller without it);
- Landlock before seccomp, so the filter never has to allow Landlock's own setup;
- in each child, rlimits before the fork filter, which forbids changing them again.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from corral.sandbox import seccomp
from corral.sandbox.capabilities import drop_capabilities, set_no_new_privs
from corral.sandbox.landlock import Ruleset
from corral.sandbox.namespaces import enter_private_network
from corral.sandbox.rlimits import ResourceLimits
from corral.sandbox.rootfs import enter_private_root


class Layer(enum.StrEnum):
    """The layers by name, as ``corral doctor`` prints them."""

    NETWORK_NAMESPACE = "network-namespace"
    MOUNT_NAMESPACE = "mount-namespace"
    CAPABILITIES = "capabilities"
    NO_NEW_PRIVS = "no-new-privs"
    LANDLOCK = "landlock"
    LANDLOCK_TCP = "landlock-tcp"
    LANDLOCK_SCOPES = "landlock-scopes"
    SECCOMP = "seccomp"
    RLIMITS = "rlimits"


@dataclass(slots=True)
class Layers:
    """Everything the zygote prepares before sandboxing itself; see the module notes.

    A field is None when its layer was skipped: only ever on the runtime's explicit
    ``--insecure-sandbox``, for layers :func:`corral.sandbox.support.probe_support`
    found missing.
    """

    read_only: Ruleset | None
    scope: Ruleset | None
    base_filter: seccomp.Filter | None
    child_filter: seccomp.Filter | None
    #: The paths the private root holds (:mod:`corral.sandbox.rootfs`).
    root: tuple[str, ...] | None
    private_network: bool = True
    drop_capabilities: bool = True

    @classmethod
    def prepare(
        cls, read_paths: Iterable[str | os.PathLike[str]], skip: Collection[str] = ()
    ) -> Layers:
        """Build the filters and rulesets; read access is granted beneath ``read_paths``
        only (see :func:`corral.sandbox.landlock.python_read_paths`), and they are all
        the private root holds. ``skip`` names
        layers to leave out; no-new-privs and rlimits are never skipped, and landlock-tcp
        follows the kernel's Landlock ABI."""
        paths = tuple(os.fspath(path) for path in read_paths)
        landlock = Layer.LANDLOCK not in skip
        use_seccomp = Layer.SECCOMP not in skip
        read_only = Ruleset.read_only(paths) if landlock else None
        scoped = landlock and Layer.LANDLOCK_SCOPES not in skip
        return cls(
            read_only=read_only,
            scope=Ruleset.scope_only() if scoped else None,
            base_filter=seccomp.base_filter() if use_seccomp else None,
            child_filter=seccomp.child_filter() if use_seccomp else None,
            root=paths if Layer.MOUNT_NAMESPACE not in skip else None,
            private_network=Layer.NETWORK_NAMESPACE not in skip,
            drop_capabilities=Layer.CAPABILITIES not in skip,
        )

    def confine_zygote(self) -> None:
        """Sandbox the calling (zygote) process, for good. Its children inherit it all.

        The read-only ruleset's descriptor is closed once applied: children need only
        the scope ruleset's (:attr:`child_fds`).
        """
        if self.private_network:
            enter_private_network()
        if self.root is not None:
            enter_private_root(self.root)
        if self.drop_capabilities:
            drop_capabilities()
        set_no_new_privs()
        if self.read_only is not None:
            self.read_only.restrict_self()
            self.read_only.close()
        if self.base_filter is not None:
            self.base_filter.load()

    def confine_child(self, limits: ResourceLimits) -> None:
        """Add the per-child layers in a freshly forked child: rlimits, its own Landlock
        domain (scopes: no signals to the zygote, siblings or host), the fork filter."""
        limits.apply()
        if self.scope is not None:
            self.scope.restrict_self()
        if self.child_filter is not None:
            self.child_filter.load()

    @property
    def child_fds(self) -> tuple[int, ...]:
        """Descriptors a child needs until :meth:`confine_child` has run."""
        return () if self.scope is None else (self.scope.fd,)

    def close(self) -> None:
        """Close the rulesets (in the zygote when it retires, or in a confined child)."""
        for ruleset in (self.read_only, self.scope):
            if ruleset is not None:
                ruleset.close()
