"""``corral config``: the effective configuration, and where each value came from."""

from __future__ import annotations

import json
from typing import Any

import click

from corral.cli.output import print_json


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def config(obj: Any, as_json: bool) -> None:
    """Print every setting's effective value and where it came from.

    A setting comes from a command-line option (--db), else its CORRAL_<SECTION>_<KEY>
    variable, else its key in the configuration file (--config PATH, else
    $CORRAL_CONFIG), else its default; docs/configuration.md says what each means.

    The output is TOML, each value's source in a comment after it: it can serve as
    a configuration file. With --json: an object of sections (database_url at the
    top level), each key's value and source.
    """
    loaded = obj.config
    settings = loaded.settings()
    if as_json:
        document: dict[str, Any] = {}
        for dotted, value, source in settings:
            *section, name = dotted.split(".")
            place = document.setdefault(section[0], {}) if section else document
            place[name] = {"value": value, "source": source}
        print_json(document)
        return
    click.echo(
        f"# configuration file: {loaded.file}"
        if loaded.file
        else "# configuration file: none (--config PATH or CORRAL_CONFIG names one)"
    )
    sections: dict[str, list[tuple[str, str]]] = {}
    for dotted, value, source in settings:
        section, _, name = dotted.rpartition(".")
        sections.setdefault(section, []).append((f"{name} = {json.dumps(value)}", source))
    for section, lines in sections.items():
        if section:
            click.echo(f"\n[{section}]")
        width = max(len(line) for line, _ in lines)
        for line, source in lines:
            click.echo(f"{line:<{width}}  # {source}")


COMMANDS = [config]
