"""``corral deploy``, ``install``, ``uninstall`` and ``instances``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.db.raw import close_databases, open_database
from tests.cli.invoke import corral


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
    assert (
        "an agent name is letters, digits, '-' and '_', at most 100 characters, got 'a b'; "
        "use --name"
    ) in err
    # Its instances carry the name into every activity and event they make: bounded.
    code, _, err = corral("--db", db, "deploy", str(agent), "--name", "a" * 101)
    assert code == 1
    assert "at most 100 characters, got 'aaaa" in err
    assert corral("--db", db, "deploy", str(agent), "--name", "a" * 100)[0] == 0


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


def test_deploy_of_a_file_that_is_not_text_says_so(db: str, tmp_path: Path) -> None:
    binary = tmp_path / "binary.py"
    binary.write_bytes(bytes(range(256)))
    assert corral("--db", db, "deploy", str(binary)) == (
        1,
        "",
        f"Error: cannot deploy {binary}:2: not UTF-8 text (byte 128 is 0x80): an agent is "
        "Python source, saved as UTF-8\n",
    )


def test_the_instances_table_never_cuts_an_id_or_a_date(db: str, tmp_path: Path) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text("from corral import Agent\nclass A(Agent):\n    def f(self):\n        pass\n")
    name = "an-agent-whose-name-is-long-enough-to-widen-the-table"
    assert corral("--db", db, "deploy", str(agent), "--name", name)[0] == 0
    instance = json.loads(corral("--db", db, "install", name, "--json")[1])["id"]
    code, out, _ = corral("--db", db, "instances")
    assert code == 0
    [row] = [line for line in out.splitlines() if instance in line]
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells[:5] == [instance, name, "default", "active", ""]
    assert len(cells[5]) == len("2026-12-07 20:01:45")  # the installation time, whole


def test_a_task_the_cli_enqueues_gets_the_configured_attempts(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = tmp_path / "hello.py"
    agent.write_text("from corral import Agent\nclass Hello(Agent):\n    pass\n")
    assert corral("--db", db, "deploy", str(agent))[0] == 0
    monkeypatch.setenv("CORRAL_RETRIES_ATTEMPTS", "5")
    code, out, _ = corral("--db", db, "install", "hello", "--json")
    assert code == 0
    code, out, _ = corral("--db", db, "tasks", json.loads(out)["id"], "--json")
    assert [(t["method"], t["max_attempts"]) for t in json.loads(out)] == [("activate", 5)]


@pytest.mark.parametrize("set_in", ["environment", "file"])
def test_an_agent_above_a_configured_ceiling_is_refused_naming_the_limit_and_the_ceiling(
    db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, set_in: str
) -> None:
    agent = tmp_path / "slow.py"
    agent.write_text(
        "from corral import Agent\nclass Slow(Agent):\n    limits = {'timeout_s': 600}\n"
        "    def f(self):\n        return 1\n"
    )
    options: list[str] = []
    if set_in == "environment":
        monkeypatch.setenv("CORRAL_CEILINGS_TIMEOUT_S", "120")
    else:
        config = tmp_path / "corral.toml"
        config.write_text("[ceilings]\ntimeout_s = 120\n")
        options = ["--config", str(config)]
    refusal = (
        "limit timeout_s must be a number of seconds from 0.001 to 120 (the operator's "
        "ceiling), got 600"
    )
    code, out, err = corral(*options, "--db", db, "deploy", str(agent))
    assert (code, out, err) == (1, "", f"Error: cannot deploy {agent}: {refusal}\n")
    code, out, _ = corral(*options, "exec", str(agent), "f", "--json")
    assert code == 1
    assert json.loads(out)["error"]["message"] == refusal
