"""What every command shares: one clear line on stderr for a user's error."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.invoke import corral


@pytest.mark.parametrize("command", [["worker", "--until-idle"], ["dev", "."], ["exec", "x", "f"]])
def test_a_bad_quota_in_the_environment_is_one_clear_line(
    db: str, command: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "x").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CORRAL_QUOTAS_STORE_BYTES", "lots")
    code, out, err = corral("--db", db, *command)
    assert (code, out) == (1, "")
    assert err == (
        "Error: CORRAL_QUOTAS_STORE_BYTES must be a whole number of bytes, or of KiB, MiB or "
        "GiB (64MiB), got 'lots'\n"
    )
