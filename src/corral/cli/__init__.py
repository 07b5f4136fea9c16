"""The ``corral`` command: operate a Corral database from the shell.

``main`` is the group; each module of this package holds a group of commands and
registers them on it.
"""

from corral.cli.main import main

__all__ = ["main"]
