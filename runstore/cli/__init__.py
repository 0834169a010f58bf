"""Command line: `runstore ...`. Each module registers its commands on the group in base.py.

local.py   ls, describe, sql             (the local store)
remote.py  login, logout, upload         (talking to a server)
server.py  serve, user                   (running a server)
doctor.py  doctor                        (stored values the server would refuse)
ui.py      ui                            (the web UI over the local store)
"""

from runstore.cli import doctor, local, remote, server, ui  # noqa: F401  (registers the commands)
from runstore.cli.base import main

__all__ = ["main"]
