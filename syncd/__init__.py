"""syncd: the sync daemon. Watches the local store and uploads finished runs to the server.

syncd imports runstore; runstore never imports syncd. Upload logic lives in runstore.remote;
syncd decides when and how often.
"""

from syncd.daemon import PassResult, Syncer
from syncd.errors import AlreadyRunningError, ServiceError, SettingsError, SyncError
from syncd.loop import run_forever
from syncd.settings import Settings, load_settings

__all__ = [
    "AlreadyRunningError",
    "PassResult",
    "ServiceError",
    "Settings",
    "SettingsError",
    "SyncError",
    "Syncer",
    "load_settings",
    "run_forever",
]
