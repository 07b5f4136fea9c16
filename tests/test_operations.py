"""Every tool operation the sandbox can call is answered by the host and has a test.

The operations are named once, in ``corral.sdk.operations.Op``. A test declares
the ones its agents call with ``@pytest.mark.exercises(Op.X, ...)``, and the
fixture in tests/conftest.py fails it if they did not call them; here, every
operation the host answers must be declared by some test. A new operation added
without a test fails ``test_every_operation_the_host_answers_has_a_test``, by name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.config import RuntimeConfig
from corral.db.raw import close_databases
from corral.plot.service import NO_CAUSE
from corral.quotas import Quotas
from corral.runtime.services import Services
from corral.runtime.tools import STORE_METHODS, ExecTools, InstanceTools
from corral.sdk.operations import Op
from corral.state import open_store
from corral.state.store import OPERATIONS

TESTS = Path(__file__).parent


def _no_fetch(args: list[object]) -> None:
    raise AssertionError("nothing here fetches")


@pytest.fixture
def instance_tools(tmp_path: Path) -> Iterator[InstanceTools]:
    """The tools a worker gives an execution, on a SQLite database."""
    services = Services(RuntimeConfig(database_url=f"sqlite:///{tmp_path}/ops.db"))
    yield InstanceTools(
        open_store(None, "inst"),
        services.queue,
        services.callbacks,
        services.webhooks,
        _no_fetch,
        services.plot.bound("inst", "a", "default", NO_CAUSE, lambda: 0.0),
        instance="inst",
        class_name="A",
        methods=frozenset({"f"}),
        clock=lambda: 0.0,
        quotas=Quotas(),
    )
    close_databases()


def host_operations(tools: InstanceTools) -> frozenset[str]:
    """What the host answers: the tools' dispatch, and ``run.inline``, which the
    sandbox host answers itself (``SandboxProcess._call``)."""
    return tools.operations | {Op.RUN_INLINE}


def test_the_host_answers_the_operations_the_sdk_sends_and_no_others(
    instance_tools: InstanceTools,
) -> None:
    assert host_operations(instance_tools) == set(Op)
    exec_tools = ExecTools(
        open_store(None, "exec"), _no_fetch, class_name="A", methods=frozenset(), quotas=Quotas()
    )
    assert exec_tools.operations | {Op.RUN_INLINE} == set(Op)
    assert set(STORE_METHODS.values()) <= OPERATIONS.keys()  # each is a Store operation


def declared_operations(folder: Path) -> set[Op]:
    """The operations the tests under ``folder`` are marked as exercising."""
    found: set[Op] = set()
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "exercises"
            ):
                continue
            for arg in node.args:
                assert isinstance(arg, ast.Attribute), (
                    f"{path}:{node.lineno}: name operations as Op.NAME in an exercises mark"
                )
                found.add(Op[arg.attr])
    return found


def test_every_operation_the_host_answers_has_a_test(instance_tools: InstanceTools) -> None:
    declared = declared_operations(TESTS)
    untested = sorted(host_operations(instance_tools) - declared)
    assert not untested, (
        f"no test exercises {', '.join(untested)}: write one that makes an agent call it, "
        "marked @pytest.mark.exercises(Op.NAME)"
    )
