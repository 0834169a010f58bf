"""A run's stdout.log on its way to the server: sent as a blob, then set on the run.

Every upload_run sends the file as it is at that moment, unless it is missing or empty: its
first ``size`` bytes (the size read once; the SDK's tee only appends, so those bytes stay put
while they are read) are hashed, sent as a blob unless the server has them (resumable,
deduplicated, streamed in parts: a huge log never goes into a JSON body), then set on the run
with ``PUT /runs/{uuid}/files/stdout.log {sha256, size_bytes}``. Sending the same content again
costs two small requests and changes nothing; the server keeps the longer of two copies (see
runstore/server/runfiles.py), so a slow upload of an earlier state never shortens it.

The hash of an unchanged file is remembered in this process (by device, inode, size and
mtime), and so is what the server acknowledged holding for the run: a daemon that uploads a
live run every second neither reads its whole log nor sends a request for it while it has not
changed. (A process that starts afresh asks once: the requests are idempotent.)
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import Any

from runstore.errors import PermanentRemoteError
from runstore.remote.blobs import LocalDataError, Tally, push_file
from runstore.remote.client import Client

STDOUT = "stdout.log"
_READ_BYTES = 1 << 20
_CACHE_MAX = 4096
_cache: dict[tuple[int, int, int, int], str] = {}
# (server, user, run uuid) -> (sha256, size) the server said it holds after our last PUT
_acked: dict[tuple[str, str, str], tuple[str, int]] = {}
_cache_lock = threading.Lock()


def snapshot(path: Path) -> tuple[str, int] | None:
    """(sha256, size) of the file's bytes now; None if it is missing, unreadable, empty or
    not a file (a log is never a reason for a run not to go up)."""
    try:
        fh = path.open("rb")
    except OSError:
        return None
    with fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with _cache_lock:
            sha = _cache.get(key)
        if sha is not None:
            return sha, st.st_size
        digest = hashlib.sha256()
        left = st.st_size
        while left > 0:
            block = fh.read(min(_READ_BYTES, left))
            if not block:
                raise LocalDataError(f"file {path} shrank while it was read")
            digest.update(block)
            left -= len(block)
    sha = digest.hexdigest()
    with _cache_lock:
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()
        _cache[key] = sha
    return sha, st.st_size


def _forget_hashes() -> None:
    with _cache_lock:
        _cache.clear()


def push_stdout(client: Client, run: Any, tally: Tally, *, resumed: bool) -> bool:
    """Send the run's stdout.log as it is now and set it on the server's copy of the run;
    True if the server holds exactly these bytes afterwards. resumed: the claim found the
    server's copy of the run (else it is a new copy: what was acknowledged for an earlier
    one, since replaced, says nothing about it)."""
    path = Path(run["local_dir"]) / STDOUT
    key = (client.host, client.user, str(run["uuid"]))
    for attempt in (1, 2):
        try:
            snap = snapshot(path)
            if snap is None:
                return False
            sha, size = snap
            with _cache_lock:
                if resumed and _acked.get(key) == snap:
                    return True  # the server holds exactly this already
            tally.add_total(size)
            push_file(client, str(path), sha, size, tally)
            break
        except (LocalDataError, PermanentRemoteError) as exc:
            # The file was rewritten, not appended to, between the hash and the send (the
            # server found other bytes: 422 hash_mismatch; or it shrank): read it again, once.
            retry = isinstance(exc, LocalDataError) or exc.status_code == 422
            if not retry or attempt == 2:
                raise
            _forget_hashes()
    try:
        held = client.request("PUT", f"/runs/{run['uuid']}/files/{STDOUT}",
                              json={"sha256": sha, "size_bytes": size})
    except PermanentRemoteError as exc:
        if exc.status_code == 404:
            # The run was claimed a moment ago, so this is a server from before run files
            # (no such route): the run goes up without its stdout. (A run deleted since is
            # found out by finalize.)
            return False
        raise
    with _cache_lock:
        if len(_acked) >= _CACHE_MAX:
            _acked.clear()
        _acked[key] = (held["sha256"], held["size_bytes"])
    return bool(held["sha256"] == sha)
