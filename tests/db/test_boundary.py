"""Above the database layer, no code asks which backend it runs on.

Every difference between SQLite and PostgreSQL lives in ``corral.db`` (its
per-backend modules, ``corral.db.sqlite`` and ``corral.db.postgres``). This scans
the code of every other package for the ways a backend was asked about: the
``.postgres`` and ``.blocking`` attributes, ``bitmap_scans`` and ``dialect``.
"""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

import corral

SOURCE = Path(corral.__file__).parent
DATABASE_LAYER = SOURCE / "db"

#: Names that ask which backend the code runs on: after a dot, or anywhere.
ATTRIBUTES = {"postgres", "blocking"}
NAMES = {"bitmap_scans", "dialect"}


def backend_questions(path: Path) -> list[str]:
    """``line: code`` of each place in ``path``'s code (not its strings or comments)
    that names a backend question."""
    source = path.read_text()
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    lines = source.splitlines()
    found: list[int] = []  # rows
    for before, token in zip([None, *tokens], tokens, strict=False):
        if token.type != tokenize.NAME:
            continue
        after_dot = before is not None and before.type == tokenize.OP and before.string == "."
        if token.string in NAMES or (after_dot and token.string in ATTRIBUTES):
            found.append(token.start[0])
    return [f"{row}: {lines[row - 1].strip()}" for row in dict.fromkeys(found)]


def above_the_database_layer() -> dict[str, list[str]]:
    """Each module outside ``corral/db`` that asks, with its places."""
    asking = {}
    for path in sorted(SOURCE.rglob("*.py")):
        if path.is_relative_to(DATABASE_LAYER):
            continue
        places = backend_questions(path)
        if places:
            asking[path.relative_to(SOURCE).as_posix()] = places
    return asking


def test_no_code_above_the_database_layer_asks_which_backend_it_runs_on() -> None:
    asking = above_the_database_layer()
    report = "\n".join(
        f"  src/corral/{name}:{place}" for name, places in asking.items() for place in places
    )
    assert not asking, (
        "code above corral/db asks which database backend it runs on; move the "
        f"difference into corral/db (its sqlite/ and postgres/ modules):\n{report}"
    )


def test_the_scan_finds_each_way_of_asking(tmp_path: Path) -> None:
    module = tmp_path / "asking.py"
    module.write_text(
        "if database.postgres:  # .postgres in a comment is no question\n"
        "    pass\n"
        "run = backend.blocking\n"
        'text = "database.postgres in a string is none either"\n'
        "scans = database.bitmap_scans()\n"
        "name = engine.dialect.name\n"
        "sock.setblocking(False)\n"
        "postgres = blocking = 1\n"
        "if backend.blocking or backend.postgres: pass\n"
    )
    assert backend_questions(module) == [
        "1: if database.postgres:  # .postgres in a comment is no question",
        "3: run = backend.blocking",
        "5: scans = database.bitmap_scans()",
        "6: name = engine.dialect.name",
        "9: if backend.blocking or backend.postgres: pass",
    ]
