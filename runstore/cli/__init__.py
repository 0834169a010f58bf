"""Command line: `runstore ...`. Each module registers its commands on the group in base.py.

local.py    ls, describe, sql             (the local store)
remote.py   login, logout, upload         (talking to a server)
server.py   serve (also --workers N), user
scale.py    server migrate                (SQLite + directory -> PostgreSQL + S3)
doctor.py   doctor                        (stored values the server would refuse)
transfer.py export, import                (bundles across an air gap; t9k .em directories)
ui.py       ui                            (the web UI over the local store)
"""

from runstore.cli import (  # noqa: F401  (registers the commands)
    doctor,
    local,
    remote,
    scale,
    server,
    transfer,
    ui,
)
from runstore.cli.base import main

__all__ = ["main"]
