"""Schemathesis against the admin API's own OpenAPI schema, over real HTTP to a
``corral serve`` process (SQLite and PostgreSQL): with an admin token no request
gets a 5xx; without one, every request gets 401.

The schema is fetched from the server (``/api/v1/openapi.json``); every operation
is tried but ``/logs/stream`` (a stream that ends only when its client leaves: its
inputs are tested in test_api_resources.py) and the two that revoke a token (the
fuzz would revoke its own and go on unauthorised: test_api.py revokes tokens).
The command each run makes is in ``schemathesis_command``; docs/api.md quotes it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from corral.config import RuntimeConfig
from corral.runtime.services import Services
from tests.server.conftest import Process, prepare_hooks, start_server

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
#: Seconds one run may take before the test fails (it takes 5-30 s here).
RUN_TIMEOUT_S = 240
#: Operations left out of the fuzz, and why: see the module's docstring.
EXCLUDED = ["/logs/stream", "/tokens/{token_id}", "/tokens/{token_id}/revoke"]


def schemathesis_command(
    schema: str, *, base_url: str | None, token: str | None, phases: str, examples: int
) -> list[str]:
    """``schemathesis run`` as these tests run it: the check is ``not_a_server_error``;
    a fixed seed, two workers. ``phases``: ``fuzzing`` (``examples`` cases an operation,
    drawn from its schema), and ``coverage`` (each parameter's boundaries and wrong
    types, one at a time: a thousand requests more)."""
    command = [
        SCHEMATHESIS, "run", schema,
        "--checks", "not_a_server_error",
        "--phases", phases,
        "--max-examples", str(examples),
        "--seed", "1",
        "--workers", "2",
        "--generation-database", "none",
        "--no-color",
    ]  # fmt: skip
    for path in EXCLUDED:
        command += ["--exclude-path", path]
    if base_url is not None:
        command += ["--url", base_url]
    if token is not None:
        command += ["-H", f"Authorization: Bearer {token}"]
    return command


def run(command: list[str], tmp_path: Path) -> str:
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def cases(output: str) -> tuple[int, int]:
    """(generated, passed) from a run's summary: ``N generated, N passed``."""
    found = re.search(r"(\d+) generated, (\d+) passed", output)
    assert found is not None, output
    return int(found[1]), int(found[2])


def served(url: str, tmp_path: Path, processes: Callable[..., Process]) -> tuple[str, str]:
    """``corral serve`` on ``url``, with the test agent and two webhooks for the lists to
    show, and an admin token: (the server's URL, the token)."""
    prepare_hooks(url, tmp_path, "async", "sync")
    token = Services(RuntimeConfig(database_url=url)).tokens.create("admin", "fuzz", now=1)[1]
    _, server = start_server(processes, url)
    return server, token


def test_with_an_admin_token_no_request_gets_a_server_error(
    sql_url: str, tmp_path: Path, processes: Callable[..., Process], sandbox: None
) -> None:
    url, token = served(sql_url, tmp_path, processes)
    # The coverage phase's thousand requests on PostgreSQL, whose text refuses more (NUL)
    # and whose numbers are bounded: the stricter of the two, within the suite's time.
    phases = "coverage,fuzzing" if sql_url.startswith("postgresql") else "fuzzing"
    command = schemathesis_command(
        f"{url}/api/v1/openapi.json",
        base_url=None,
        token=token,
        phases=phases,
        examples=5,
    )
    output = run(command, tmp_path)
    generated, passed = cases(output)
    assert generated == passed > 100, output
    assert "failed" not in output.split("SUMMARY")[-1], output
    print(f"\n{phases}: {generated} generated, {passed} passed, 0 server errors")


def test_without_a_token_every_request_is_401(
    tmp_path: Path, processes: Callable[..., Process], sandbox: None
) -> None:
    url, token = served(f"sqlite:///{tmp_path}/corral.db", tmp_path, processes)
    # The schema is not served without a token either: it is read here, once, with one.
    schema = httpx.get(
        f"{url}/api/v1/openapi.json", headers={"authorization": f"Bearer {token}"}
    ).json()
    (tmp_path / "openapi.json").write_text(json.dumps(schema))
    har = tmp_path / "requests.har"
    command = schemathesis_command(
        "openapi.json", base_url=f"{url}/api/v1", token=None, phases="fuzzing", examples=5
    )
    output = run([*command, "--report", "har", "--report-har-path", str(har)], tmp_path)
    entries = json.loads(har.read_text())["log"]["entries"]
    statuses = [entry["response"]["status"] for entry in entries]
    assert len(statuses) > 100, output
    assert set(statuses) == {401}, [
        (e["request"]["method"], e["request"]["url"])
        for e in entries
        if e["response"]["status"] != 401
    ][:10]
    print(f"\nwithout a token: {len(statuses)} requests, every one answered 401")
