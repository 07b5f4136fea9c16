"""``corral doctor`` and ``corral migrate``: is this machine and database ready."""

from __future__ import annotations

import json

from tests.cli.invoke import corral


def test_migrate_creates_then_reports_current(db: str) -> None:
    code, out, _ = corral("--db", db, "migrate")
    assert code == 0
    assert "upgraded from empty to revision" in out
    code, out, _ = corral("--db", db, "migrate")
    assert code == 0
    assert "already at revision" in out


def test_migrate_rejects_unsupported_database() -> None:
    code, _, err = corral("--db", "mysql://root@localhost/test", "migrate")
    assert code == 1
    assert "unsupported database 'mysql'" in err


def test_doctor_reports_every_layer() -> None:
    code, out, _ = corral("doctor", "--json")
    layers = {layer["name"]: layer for layer in json.loads(out)}
    assert {"seccomp", "landlock", "network-namespace", "rlimits"} <= set(layers)
    assert code == (0 if all(layer["available"] for layer in layers.values()) else 1)
