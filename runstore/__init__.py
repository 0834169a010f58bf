"""runstore: an offline-first, t9k.em-compatible experiment tracker on one SQLite database.

``import runstore as em`` runs a t9k.em script unchanged.
"""

from runstore.api import (
    create_artifact,
    create_run,
    load_artifact,
    load_run,
    login,
    logout,
    upload,
)
from runstore.artifact import Artifact
from runstore.params import Params
from runstore.run import Run

__all__ = [
    "Artifact",
    "Params",
    "Run",
    "create_artifact",
    "create_run",
    "load_artifact",
    "load_run",
    "login",
    "logout",
    "upload",
]
__version__ = "0.1.0"
