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

_LAZY_SUBMODULES = ("keras", "lightning")


def __getattr__(name: str) -> object:
    """em.keras / em.lightning: imported on first use, so `import runstore` stays light."""
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"runstore.{name}")
    raise AttributeError(f"module 'runstore' has no attribute {name!r}")
