"""``make run``: the example agents at work, beside the fake API batched_sync.py pages.

Serves the demo API (``paged_api.py``) on threads of this process, then runs
``corral dev`` on ``examples/`` in it: each example agent is deployed and
installed once (priority "examples"), a worker prints each execution, and saving
an example deploys its new version. Ctrl-C stops both. The database is the
usual one: ``CORRAL_DATABASE_URL``, else the SQLite file ``./.corral/corral.db``.

Run it from the repository's root: ``python -m examples.demo.run``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from examples.demo.paged_api import PAGES, PER_PAGE, PagedApi, PortTaken

from corral.cli import main

EXAMPLES = Path(__file__).parents[1]


def run() -> None:
    try:
        api = PagedApi()
    except (PortTaken, ValueError) as exc:
        sys.exit(f"Error: {exc}")
    print(
        f"  demo paginated API up: {api.url}/items?page=1..{PAGES}, {PER_PAGE} items a page "
        "(batched-sync pages through it)",
        flush=True,
    )
    main(["dev", os.path.relpath(EXAMPLES), "--priority", "examples"], prog_name="corral")


if __name__ == "__main__":
    run()
