"""The `corral` command as an operator uses it: migrate, then read state."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sqlite3
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from examples.demo.paged_api import PagedApi

from corral.cli import main
from corral.db.raw import close_databases, open_database
from corral.state import close_backends, open_store


@pytest.fixture
def db(tmp_path: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp_path}/cli.db"
    close_backends()


def corral(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


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


def test_state_ls_and_get_show_values_with_their_types(db: str) -> None:
    store = open_store(db, "inst-1")
    asyncio.run(store.set_many({"cfg:a": (1, 2), "cfg:b": Decimal("1.10"), "other": None}))

    code, out, _ = corral("--db", db, "state", "ls", "inst-1", "--prefix", "cfg:", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"key": "cfg:a", "value": {"$tuple": [1, 2]}},
        {"key": "cfg:b", "value": {"$decimal": "1.10"}},
    ]

    code, out, _ = corral("--db", db, "state", "get", "inst-1", "other", "--json")
    assert (code, json.loads(out)) == (0, None)  # a stored None is present, not missing

    code, out, _ = corral("--db", db, "state", "ls", "inst-1", "--prefix", "cfg:")
    assert code == 0
    used = asyncio.run(store.usage())
    assert used[1] == 3
    assert f"2 key(s); the store holds 3, {used[0]:,} bytes" in out


def test_state_get_missing_key_exits_1_with_a_message(db: str) -> None:
    code, out, err = corral("--db", db, "state", "get", "inst-1", "nope")
    assert code == 1
    assert out == ""
    assert "no key 'nope' in inst-1" in err


def test_state_get_bad_key_is_a_clear_error(db: str) -> None:
    code, _, err = corral("--db", db, "state", "get", "inst-1", "x" * 600)
    assert code == 1
    assert "the limit is 512" in err


EXAMPLE = Path(__file__).parents[1] / "examples" / "greeter.py"


def test_doctor_reports_every_layer() -> None:
    code, out, _ = corral("doctor", "--json")
    layers = {layer["name"]: layer for layer in json.loads(out)}
    assert {"seccomp", "landlock", "network-namespace", "rlimits"} <= set(layers)
    assert code == (0 if all(layer["available"] for layer in layers.values()) else 1)


def test_exec_prints_the_execution_record(db: str) -> None:
    args = ["--db", db, "exec", str(EXAMPLE), "greet", "--arg", '"ann"', "--instance", "demo"]
    code, out, _ = corral(*args, "--json")
    record = json.loads(out)
    assert code == 0
    assert record["outcome"] == "ok"
    assert record["result"] == {"message": "Hello, ann!", "visits": 1, "requests_left": 96}
    assert record["requests_used"] == 4
    assert record["trigger"] == "exec"
    assert record["instance"] == "demo"
    assert record["logs"] == [{"level": "info", "line": "greeting ann (visit 1)"}]
    assert record["cpu_ms"] > 0
    assert record["peak_rss_bytes"] > 0
    for field in ("id", "method", "error", "duration_ms", "started_at"):
        assert field in record

    code, out, _ = corral(*args, "--json")  # the store persisted in --db
    assert json.loads(out)["result"]["visits"] == 2
    assert json.loads(out)["result"]["message"] == "hi ann"  # within the TTL cooldown


def test_exec_failure_exits_1_and_shows_the_error(tmp_path: Path) -> None:
    agent = tmp_path / "broken.py"
    agent.write_text(
        "from corral.sdk import Agent\nclass A(Agent):\n    def f(self):\n        1/0\n"
    )
    code, out, _ = corral("exec", str(agent), "f")
    assert code == 1
    assert "ZeroDivisionError: division by zero" in out
    assert "1/0" in out  # the traceback quotes the agent's own line


def test_exec_without_an_agent_class_says_so(tmp_path: Path) -> None:
    agent = tmp_path / "empty.py"
    agent.write_text("x = 1\n")
    code, out, _ = corral("exec", str(agent), "f", "--json")
    assert code == 1
    assert json.loads(out)["error"]["message"] == (
        "the agent code must define exactly one Agent (or Twist) class; found none"
    )


def test_exec_holds_the_agent_to_the_quotas_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = tmp_path / "keys.py"
    agent.write_text(
        "from corral.sdk import Agent\nclass A(Agent):\n    async def f(self):\n"
        "        for key in 'abc':\n            await self.set(key, 1)\n"
    )
    monkeypatch.setenv("CORRAL_QUOTAS_STORE_KEYS", "2")
    code, out, _ = corral("exec", str(agent), "f", "--json")
    assert code == 1
    assert json.loads(out)["error"]["type"] == "QuotaExceeded"
    assert json.loads(out)["error"]["message"] == (
        "this instance's store would hold 3 keys, over its 2-key quota: delete keys or store "
        "less (nothing was written)"
    )


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


def test_exec_rejects_an_argument_that_is_not_json() -> None:
    code, _, err = corral("exec", str(EXAMPLE), "greet", "--arg", "ann")
    assert code == 2
    assert "argument 1 is not JSON" in err


def test_exec_rejects_bad_agent_limits(tmp_path: Path) -> None:
    agent = tmp_path / "limits.py"
    agent.write_text(
        "from corral.sdk import Agent\nclass A(Agent):\n    limits = {'ram': 5}\n"
        "    def f(self):\n        return 1\n"
    )
    code, out, _ = corral("exec", str(agent), "f", "--json")
    assert code == 1
    assert json.loads(out)["error"] == {
        "type": "LimitError",
        "message": "unknown limit(s) 'ram'; the limits are cpu_s, memory_mb, requests, timeout_s",
        "traceback": "",
    }


def test_exec_fetches_under_the_agents_allow_list(tmp_path: Path) -> None:
    api = PagedApi(port=0)
    agent = tmp_path / "pager.py"
    agent.write_text(
        "from corral import Agent\n"
        "class Pager(Agent):\n"
        f"    network = ['{api.url}/items']\n"
        "    async def first(self):\n"
        f"        page = (await self.fetch('{api.url}/items?page=1')).json()\n"
        "        try:\n"
        f"            await self.fetch('{api.url}/admin')\n"
        "        except PermissionError as exc:\n"
        "            return [len(page['items']), str(exc)]\n"
    )
    try:
        code, out, _ = corral("exec", str(agent), "first", "--json")
    finally:
        api.close()
    record = json.loads(out)
    assert code == 0
    assert record["requests_used"] == 2
    count, refusal = record["result"]
    assert count == 50
    assert refusal.startswith(f"fetching {api.url}/admin is not allowed: no pattern of this")


def test_deploy_refuses_a_bad_network_pattern(db: str, tmp_path: Path) -> None:
    agent = tmp_path / "net.py"
    agent.write_text(
        "from corral import Agent\nclass A(Agent):\n    network = ['api.example.com']\n"
        "    def f(self):\n        pass\n"
    )
    code, _, err = corral("--db", db, "deploy", str(agent))
    assert code == 1
    assert (
        f"cannot deploy {agent}: network pattern 'api.example.com' is not valid: it does not "
        "start with http:// or https://"
    ) in err


SECONDS = "a number of seconds from 0.001 to 900 (the operator's ceiling)"


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("{'timeout_s': float('inf')}", f"limit timeout_s must be {SECONDS}, got inf"),
        ("{'timeout_s': float('-inf')}", f"limit timeout_s must be {SECONDS}, got -inf"),
        ("{'timeout_s': float('nan')}", f"limit timeout_s must be {SECONDS}, got nan"),
        ("{'timeout_s': 1e300}", f"limit timeout_s must be {SECONDS}, got 1e+300"),
        ("{'timeout_s': 0}", f"limit timeout_s must be {SECONDS}, got 0"),
        ("{'cpu_s': -1}", f"limit cpu_s must be {SECONDS}, got -1"),
        ("{'cpu_s': 901}", f"limit cpu_s must be {SECONDS}, got 901"),
        ("{'timeout_s': '60'}", f"limit timeout_s must be {SECONDS}, got '60'"),
        (
            "{'memory_mb': 0.5}",
            "limit memory_mb must be a whole number of MiB from 16 to 4096 (the operator's "
            "ceiling), got 0.5",
        ),
        (
            "{'memory_mb': 8}",
            "limit memory_mb must be a whole number of MiB from 16 to 4096 (the operator's "
            "ceiling), got 8",
        ),
        (
            "{'memory_mb': 8192}",
            "limit memory_mb must be a whole number of MiB from 16 to 4096 (the operator's "
            "ceiling), got 8192",
        ),
        (
            "{'requests': 0.5}",
            "limit requests must be a whole number from 1 to 100000 (the operator's ceiling), "
            "got 0.5",
        ),
        (
            "{'requests': True}",
            "limit requests must be a whole number from 1 to 100000 (the operator's ceiling), "
            "got True",
        ),
        (
            "{'ram': 512}",
            "unknown limit(s) 'ram'; the limits are cpu_s, memory_mb, requests, timeout_s",
        ),
        (
            "[('timeout_s', 5)]",
            "limits must be a dict of limit names to values, such as {'timeout_s': 120}, "
            "got [('timeout_s', 5)]",
        ),
    ],
)
def test_deploy_refuses_limits_out_of_range_naming_the_limit_and_range(
    db: str, tmp_path: Path, limits: str, message: str
) -> None:
    agent = tmp_path / "limited.py"
    agent.write_text(
        f"from corral import Agent\nclass A(Agent):\n    limits = {limits}\n"
        "    def f(self):\n        pass\n"
    )
    code, out, err = corral("--db", db, "deploy", str(agent))
    assert (code, out, err) == (1, "", f"Error: cannot deploy {agent}: {message}\n")
    code, _, err = corral("--db", db, "install", "limited")  # nothing was stored
    assert (code, err) == (
        1,
        "Error: there is no agent 'limited': deploy it first (corral deploy)\n",
    )


TICK = "tick_ms must be a whole number of milliseconds from 1 to 86400000, or None for ticks"


@pytest.mark.parametrize(
    ("declaration", "message"),
    [
        ("    tick_ms = 0.5\n", f"{TICK} that are only posted, got 0.5"),
        ("    tick_ms = float('inf')\n", f"{TICK} that are only posted, got inf"),
        # Agent code runs in the process that describes it, and may forge the answer.
        (
            "    import sys\n"
            "    sys.modules['corral.sandbox.child'].describe = lambda cls, methods: {\n"
            "        'class': 'P', 'methods': 5, 'limits': {}, 'network': [], 'tick_ms': None}\n",
            "the agent's methods must be a list of names, got 5",
        ),
    ],
)
def test_deploy_refuses_a_bad_tick_and_a_forged_description(
    db: str, tmp_path: Path, declaration: str, message: str
) -> None:
    agent = tmp_path / "ticker.py"
    agent.write_text(
        f"from corral.sdk import Plugin\nclass P(Plugin):\n{declaration}"
        "    async def decide(self, ctx):\n        pass\n"
    )
    code, out, err = corral("--db", db, "deploy", str(agent))
    assert (code, out, err) == (1, "", f"Error: cannot deploy {agent}: {message}\n")


def test_install_of_a_stored_version_with_a_bad_tick_is_a_clear_error(
    db: str, tmp_path: Path
) -> None:
    """A version deployed before deploy checked ticks: nothing is installed."""
    agent = tmp_path / "ticker.py"
    agent.write_text(
        "from corral.sdk import Plugin\nclass P(Plugin):\n    tick_ms = 1000\n"
        "    async def decide(self, ctx):\n        pass\n"
    )
    assert corral("--db", db, "deploy", str(agent))[0] == 0
    database = open_database(db)
    [(stored,)] = database.fetch_all("SELECT description FROM versions")
    database.write(
        "UPDATE versions SET description = :d",
        {"d": json.dumps({**json.loads(stored), "tick_ms": 1e300})},
    )
    close_databases()
    code, out, err = corral("--db", db, "install", "ticker")
    assert (code, out) == (1, "")
    assert err == (
        f"Error: cannot install ticker: {TICK} that are only posted, got 1e+300; deploy a "
        "version that fixes it\n"
    )
    code, out, _ = corral("--db", db, "instances", "--json")
    assert (code, json.loads(out)) == (0, [])


def test_limits_at_their_floors_and_ceilings_deploy_and_the_memory_floor_runs(
    db: str, tmp_path: Path
) -> None:
    floors = tmp_path / "floors.py"
    floors.write_text(
        "from corral import Agent\nclass A(Agent):\n"
        "    limits = {'requests': 1, 'timeout_s': 0.001, 'cpu_s': 0.001, 'memory_mb': 16}\n"
        "    def f(self):\n        pass\n"
    )
    code, out, err = corral("--db", db, "deploy", str(floors), "--json")
    assert (code, json.loads(out)["version"]) == (0, 1), err
    ceilings = tmp_path / "ceilings.py"
    ceilings.write_text(
        "from corral import Agent\nclass A(Agent):\n"
        "    limits = {'requests': 100000, 'timeout_s': 900, 'cpu_s': 900, 'memory_mb': 4096}\n"
        "    def f(self):\n        pass\n"
    )
    code, out, err = corral("--db", db, "deploy", str(ceilings), "--json")
    assert (code, json.loads(out)["version"]) == (0, 1), err
    # The least memory an agent may ask for is room enough for a small execution.
    small = tmp_path / "small.py"
    small.write_text(
        "import json\nfrom corral import Agent\nclass A(Agent):\n"
        "    limits = {'memory_mb': 16}\n"
        "    async def f(self):\n"
        "        await self.store.set('rows', [{'i': i, 's': 'x' * 50} for i in range(2000)])\n"
        "        rows = await self.store.get('rows')\n"
        "        return [len(json.dumps(rows)), self.budget.requests_left]\n"
    )
    code, out, _ = corral("exec", str(small), "f", "--json")
    assert (code, json.loads(out)["result"]) == (0, [142_890, 998])


def test_exec_strict_reports_state_left_in_globals(tmp_path: Path) -> None:
    agent = tmp_path / "counter.py"
    agent.write_text(
        "from corral import Agent\n"
        "seen = []\n"
        "class Counter(Agent):\n"
        "    def bump(self):\n"
        "        seen.append(1)\n"
        "        return len(seen)\n"
    )
    code, out, _ = corral("exec", str(agent), "bump", "--strict", "--json")
    assert code == 0
    assert json.loads(out)["logs"] == [
        {
            "level": "warning",
            "line": "strict mode: this execution changed module global seen; the next "
            "execution may run in a fresh process without it: keep state in self.store",
        }
    ]
    code, out, _ = corral("exec", str(agent), "bump", "--json")
    assert json.loads(out)["logs"] == []  # only strict mode looks


def test_deploy_install_and_a_worker_run_a_chain_of_tasks(db: str, tmp_path: Path) -> None:
    agent = tmp_path / "pager.py"
    agent.write_text(
        "from corral import Agent\n"
        "class Pager(Agent):\n"
        "    async def activate(self, priority):\n"
        "        print(f'activated for {priority}')\n"
        "        await self.run_task(await self.callback(self.page, 1))\n"
        "    async def page(self, n):\n"
        "        await self.set('pages', n)\n"
        "        if n < 5:\n"
        "            await self.run_task(await self.callback(self.page, n + 1))\n"
    )
    code, out, _ = corral("--db", db, "deploy", str(agent), "--json")
    assert code == 0
    assert json.loads(out)["version"] == 1
    code, out, _ = corral("--db", db, "install", "pager", "--priority", "work", "--json")
    instance = json.loads(out)["id"]
    code, _, err = corral("--db", db, "worker", "--until-idle")
    assert code == 0
    assert "6 execution(s) run" in err
    assert corral("--db", db, "state", "get", instance, "pages")[1].strip() == "5"
    code, out, _ = corral("--db", db, "executions", instance, "--json")
    records = json.loads(out)
    assert [r["method"] for r in records].count("page") == 5
    assert {r["outcome"] for r in records} == {"ok"}
    _, out, _ = corral("--db", db, "logs", instance)
    assert "info: activated for work" in out
    _, out, _ = corral("--db", db, "deploy", str(agent), "--json")
    assert json.loads(out)["created"] is False  # same code: same version


def test_a_worker_stops_on_a_database_error_that_waiting_would_not_fix(db: str) -> None:
    assert corral("--db", db, "migrate")[0] == 0
    with contextlib.closing(sqlite3.connect(db.removeprefix("sqlite:///"))) as conn:
        conn.execute("DROP TABLE tasks")  # a schema broken behind Corral's back
    code, _, err = corral("--db", db, "worker")
    assert code == 1
    assert err == (
        "Error: the worker stopped on a database error that waiting would not fix: "
        "OperationalError: no such table: tasks; check the database URL, its user's rights "
        "and the schema (corral migrate), then start the worker again\n"
    )


def test_a_worker_that_cannot_reach_its_database_says_so(postgres_server: str) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = sa.make_url(postgres_server).set(port=port).render_as_string(False)
    code, _, err = corral("--db", url, "worker")
    assert code == 1
    assert err.startswith("Error: cannot start the worker: the database is unreachable (")
    assert err.endswith("Connection refused); start it again once the database is up\n")


def test_install_of_an_unknown_agent_says_deploy_first(db: str) -> None:
    code, _, err = corral("--db", db, "install", "nobody")
    assert code == 1
    assert "there is no agent 'nobody': deploy it first (corral deploy)" in err


def test_deploy_refuses_code_without_an_agent_and_a_bad_name(db: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    code, _, err = corral("--db", db, "deploy", str(empty))
    assert code == 1
    assert (
        f"cannot deploy {empty}: AgentDefinitionError: the agent code must define exactly one "
        "Agent (or Twist) class; found none"
    ) in err
    agent = tmp_path / "ok.py"
    agent.write_text("from corral import Agent\nclass A(Agent):\n    def f(self):\n        pass\n")
    code, _, err = corral("--db", db, "deploy", str(agent), "--name", "a b")
    assert code == 1
    assert "an agent name is letters, digits, '-' and '_', got 'a b'; use --name" in err


def test_deploy_of_code_that_does_not_load_names_the_line(db: str, tmp_path: Path) -> None:
    agent = tmp_path / "broken.py"
    agent.write_text("from corral import Agent\nclass A(Agent):\n    def f(self)\n        pass\n")
    code, _, err = corral("--db", db, "deploy", str(agent))
    assert code == 1
    assert (
        f"cannot deploy {agent}:3: AgentDefinitionError: the agent code does not compile: "
        "expected ':' (line 3)"
    ) in err
    agent.write_text("from corral import Agent\n\n{}['nope']\n")
    code, _, err = corral("--db", db, "deploy", str(agent))
    assert code == 1
    assert f"cannot deploy {agent}:3: KeyError: 'nope'" in err


def test_install_refuses_config_that_is_not_a_json_object(db: str, tmp_path: Path) -> None:
    code, _, err = corral("--db", db, "install", "x", "--config", "{nope")
    assert code == 2
    assert "--config is not JSON" in err
    code, _, err = corral("--db", db, "install", "x", "--config", "[1]")
    assert code == 2
    assert "--config must be a JSON object" in err


def test_task_commands_name_what_is_wrong(db: str) -> None:
    code, _, err = corral("--db", db, "tasks", "retry", "99")
    assert code == 1
    assert "there is no dead-lettered task 99 (see corral tasks --dead)" in err
    code, _, err = corral("--db", db, "tasks", "cancel", "x")
    assert code == 2
    assert "usage: corral tasks cancel ID (a task id, a number)" in err
    code, _, err = corral("--db", db, "tasks", "cancel", "7")
    assert code == 1
    assert "there is no pending task 7 (it may have run, or be running now)" in err
    code, _, err = corral("--db", db, "uninstall", "nobody-1")
    assert code == 1
    assert "there is no instance 'nobody-1' (see corral instances)" in err
