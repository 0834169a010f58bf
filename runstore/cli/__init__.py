"""Command line: `runstore ...`. Each module registers its commands on the group in base.py.

local.py   ls, describe, sql             (the local store)
remote.py  login, logout, upload         (talking to a server)
server.py  serve, user                   (running a server)
doctor.py  doctor                        (stored values the server would refuse)
scale.py   serve --workers, server migrate  (several processes; SQLite -> PostgreSQL + S3)
"""

import runstore.cli.scale  # noqa: F401  (serve --workers, server migrate)
from runstore.cli import doctor, local, remote, server  # noqa: F401  (registers the commands)
from runstore.cli.base import main

__all__ = ["main"]
