"""Command line: `runstore ...`. Each module registers its commands on the group in base.py.

local.py   ls, describe, sql             (the local store)
remote.py  login, logout, upload         (talking to a server)
server.py  serve, user                   (running a server)
transfer.py import                       (bundles, t9k .em directories)
"""

from runstore.cli import local, remote, server, transfer  # noqa: F401  (registers the commands)
from runstore.cli.base import main

__all__ = ["main"]
