"""The one exception tree: what ``except`` clauses, agents and the CLI rely on."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import corral
from corral import errors
from corral.sdk.errors import from_wire, wire_name

CLASSES = {
    name: value
    for name, value in vars(errors).items()
    if isinstance(value, type) and value.__module__ == errors.__name__
}


def test_every_error_is_a_corral_error_and_the_docstring_draws_each_one() -> None:
    drawn = dict(re.findall(r"[│├└─ ]*(\w+)(?: \(([\w, ]+)\))?", errors.__doc__ or ""))
    for name, cls in CLASSES.items():
        assert issubclass(cls, errors.CorralError), name
        assert name in drawn, f"{name} is missing from the tree in corral/errors.py"
        builtin = [
            b.__name__ for b in cls.__bases__ if b.__module__ == "builtins" and b is not Exception
        ]
        assert drawn[name] == ", ".join(builtin), f"{name}: the tree shows its builtin base"


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (errors.UnknownInstance, LookupError),
        (errors.UnknownTask, LookupError),
        (errors.DatabaseURLError, ValueError),
        (errors.QuotaConfigError, ValueError),
        (errors.LimitError, ValueError),
        (errors.AgentDefinitionError, ValueError),
        (errors.FetchTimeout, TimeoutError),
        (errors.FetchError, ConnectionError),
        (errors.DatabaseUnavailable, ConnectionError),
        (errors.SchemaOutOfDate, RuntimeError),
        (errors.UnknownOperation, PermissionError),
    ],
)
def test_except_clauses_written_for_builtins_still_catch(
    error: type[Exception], builtin: type[Exception]
) -> None:
    with pytest.raises(builtin):
        raise error("x")


def test_errors_agents_catch_keep_their_type_across_the_wire() -> None:
    for name in corral.__all__:
        cls = getattr(corral, name)
        if isinstance(cls, type) and issubclass(cls, errors.CorralError):
            if cls is errors.CorralError:
                continue
            crossed = from_wire(wire_name(cls("why")), "why")
            assert type(crossed) is cls, name
    # A host error an agent has no class for arrives as its nearest builtin.
    assert type(from_wire(wire_name(errors.UnknownInstance("x")), "x")) is LookupError


def test_the_module_imports_nothing_so_the_sandbox_may_load_it() -> None:
    tree = ast.parse(inspect.getsource(errors))
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "pathlib"}, imported


def test_no_module_of_corral_defines_an_error_outside_the_tree() -> None:
    """One home: a new error class goes in corral/errors.py, under CorralError."""
    src = Path(errors.__file__).parent
    strays = []
    for path in src.rglob("*.py"):
        if path.name == "errors.py" and path.parent == src:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                bases = {ast.unparse(base) for base in node.bases}
                if any(base.endswith(("Error", "Exception")) for base in bases):
                    strays.append(f"{path.relative_to(src)}: {node.name}")
    assert strays == []
