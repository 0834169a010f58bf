"""runstore.remote: the one client of the sync protocol. Every upload goes through here
(Run.upload(), `runstore upload`, syncd); the daemon decides when, this decides how.

client.py    Client: HTTP + retries (tenacity), errors translated where they enter
upload.py    upload_run / upload_artifact: the idempotent, resumable steps
blobs.py     bytes sent as content-addressed, resumable blobs
runfiles.py  a run's stdout.log: sent as a blob, then set on the run
session.py   t9k's login / logout / upload(path, ...)
download.py  list_remote, download_run, download_artifact
"""

from runstore.remote.client import Client
from runstore.remote.download import download_artifact, download_run, list_remote
from runstore.remote.session import login, logout, resolve_targets, upload
from runstore.remote.upload import (
    DivergedError,
    FolderNotFoundError,
    LocalDataError,
    StoredValueError,
    UploadResult,
    ensure_folder,
    upload_artifact,
    upload_run,
)

__all__ = [
    "Client", "UploadResult", "FolderNotFoundError", "DivergedError", "LocalDataError",
    "StoredValueError",
    "upload_run", "upload_artifact", "upload", "login", "logout", "list_remote", "download_run",
    "download_artifact", "ensure_folder", "resolve_targets",
]
