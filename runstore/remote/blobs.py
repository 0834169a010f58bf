"""Sending bytes as blobs: the resumable, content-addressed step of the sync protocol.

``push_file`` sends the first ``size`` bytes of any file under their sha256 (POST /uploads says
where the server stands, PATCH /uploads/{sha} appends parts from there); ``push_blob`` does it
for a blob of the local store. Used for artifact objects and for a run's stdout.log alike.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from runstore.errors import PermanentRemoteError, RunstoreError
from runstore.protocol import BLOB_PART_BYTES
from runstore.remote.client import Client
from runstore.store import Store

_READ_BYTES = 1 << 20

Progress = Callable[[int, int], None]


class LocalDataError(RunstoreError):
    """The local store lacks something the upload needs (a run, an artifact or a blob)."""


class Tally:
    """What one upload sent, and its progress (done, total) for a progress bar."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.total = 0
        self.done = 0
        self.metrics_sent = 0
        self.blobs_sent = 0
        self.bytes_sent = 0

    def add_total(self, n: int) -> None:
        self.total += n
        self._report()

    def advance(self, n: int) -> None:
        self.done += n
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.done, max(self.total, self.done))


def _file_parts(path: str, start: int, end: int):
    def produce():
        with open(path, "rb") as fh:
            fh.seek(start)
            left = end - start
            while left > 0:
                block = fh.read(min(_READ_BYTES, left))
                if not block:
                    raise LocalDataError(f"file {path} shrank while uploading")
                left -= len(block)
                yield block
    return produce


def push_file(client: Client, path: str, sha: str, size: int, tally: Tally) -> bool:
    """Upload the first size bytes of a file as blob sha, resuming at the server's offset;
    True if bytes were sent (False: the server had it already)."""
    status = client.request("POST", "/uploads", json={"sha256": sha, "size_bytes": size})
    sent_any = False
    resyncs = 0
    base = status["offset"]
    tally.advance(base)
    while not status["complete"]:
        offset = status["offset"]
        end = min(size, offset + BLOB_PART_BYTES)
        try:
            status = client.request(
                "PATCH", f"/uploads/{sha}", params={"offset": offset, "size": size},
                content=_file_parts(path, offset, end),
                headers={"Content-Type": "application/octet-stream",
                         "Content-Length": str(end - offset)})
        except PermanentRemoteError as exc:
            # 409: the server is at another offset (our earlier answer got lost, or the server
            # restarted mid-part): ask where it stands and go on from there.
            if exc.status_code != 409 or resyncs >= 5:
                raise
            resyncs += 1
            status = client.request("POST", "/uploads", json={"sha256": sha, "size_bytes": size})
            continue
        sent_any = True
        tally.bytes_sent += end - offset
        tally.advance(status["offset"] - offset)
    return sent_any


def push_blob(client: Client, store: Store, sha: str, size: int, tally: Tally) -> bool:
    """Upload one blob of the local store, resuming at the server's offset; True if bytes
    were sent."""
    path = str(store.blob_path(sha))
    if not os.path.exists(path):
        raise LocalDataError(f"blob {sha} is missing from the local store {store.home}")
    return push_file(client, path, sha, size, tally)
