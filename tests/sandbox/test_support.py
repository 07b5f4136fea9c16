"""probe_support: one entry per layer, found in throwaway children, never in the caller."""

from __future__ import annotations

import errno
import os
import signal

import pytest

from corral.errors import SandboxUnavailable
from corral.sandbox.capabilities import capabilities, no_new_privs
from corral.sandbox.layers import Layer
from corral.sandbox.namespaces import network_namespace
from corral.sandbox.seccomp import filter_mode
from corral.sandbox.support import FULL_STACK, LayerSupport, SupportReport, probe_support
from corral.sandbox.trial import run_trial
from tests.sandbox.conftest import REQUIRE_SANDBOX


def test_every_layer_is_reported_with_a_detail(support: SupportReport) -> None:
    assert [layer.name for layer in support] == [*Layer, FULL_STACK]
    assert all(layer.detail for layer in support)
    assert all(layer.remedy for layer in support.missing)


def test_every_layer_is_available_here(support: SupportReport) -> None:
    """On the machines Corral targets (Linux 6.12+ with Landlock) nothing is missing."""
    if not support.complete and not REQUIRE_SANDBOX:
        pytest.skip(f"this machine lacks layers:\n{support}")
    assert support.complete, str(support)
    assert support[Layer.LANDLOCK].detail.startswith("ABI ")


def test_probing_leaves_the_caller_unrestricted() -> None:
    before = network_namespace(), capabilities(), no_new_privs(), filter_mode()
    probe_support()
    assert (network_namespace(), capabilities(), no_new_privs(), filter_mode()) == before
    assert filter_mode() == 0


def test_require_names_each_missing_layer_and_its_fix() -> None:
    report = SupportReport(
        (
            LayerSupport("seccomp", True, "x86_64"),
            LayerSupport("landlock-scopes", False, "Landlock ABI 5", "run Linux 6.12+"),
        )
    )
    with pytest.raises(SandboxUnavailable) as raised:
        report.require()
    assert raised.value.layers == ("landlock-scopes",)
    message = str(raised.value)
    assert "landlock-scopes: Landlock ABI 5. To fix: run Linux 6.12+." in message
    assert "--insecure-sandbox" in message


def test_a_complete_report_requires_nothing() -> None:
    SupportReport((LayerSupport("seccomp", True, "x86_64"),)).require()


# -- run_trial, which every probe and test relies on ---------------------------------


def test_trial_returns_the_childs_value() -> None:
    outcome = run_trial(lambda: {"pid": os.getpid()})
    assert outcome.ok
    assert outcome.value["pid"] != os.getpid()


def test_trial_reports_the_childs_exception_and_errno() -> None:
    outcome = run_trial(lambda: os.open("/nonexistent/corral", os.O_RDONLY))
    assert (outcome.error, outcome.errno) == ("FileNotFoundError", errno.ENOENT)


def test_trial_reports_a_killing_signal() -> None:
    outcome = run_trial(lambda: os.kill(os.getpid(), signal.SIGKILL))
    assert outcome.signal == signal.SIGKILL
    assert outcome.describe() == "killed by SIGKILL"


def test_trial_kills_a_child_past_its_timeout() -> None:
    read_end, write_end = os.pipe()
    try:
        outcome = run_trial(lambda: os.read(read_end, 1), timeout=0.2)  # blocks for ever
    finally:
        os.close(read_end)
        os.close(write_end)
    assert outcome.signal == signal.SIGKILL
