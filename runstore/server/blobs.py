"""Content-addressed blob storage with resumable, hash-verified uploads.

Layout under the data directory::

    blobs/ab/<sha256>                    complete, verified blobs (named by their hash only)
    uploads/<user_id>-<sha256>-<size>.part  an upload in progress (appended in order)

An upload is appended at the offset the client names, which must be the current size of the
part file (otherwise the client is told the right offset). The part file is fsynced before a
part is acknowledged, so a killed server loses at most the unacknowledged part. When the part
file reaches the declared size its sha256 is checked (the running hash is rebuilt from disk
after a restart); a mismatch deletes it, a match renames it into place. Partial uploads are
never visible as blobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy import select

from runstore import protocol as p
from runstore.server import db
from runstore.server.errors import Conflict, HashMismatch, Invalid, TooLarge

MAX_BLOB_BYTES = 1 << 40


class BlobStore:
    def __init__(self, data_dir: Path, database: db.Database) -> None:
        self.root = data_dir / "blobs"
        self.uploads = data_dir / "uploads"
        self.root.mkdir(parents=True, exist_ok=True)
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.database = database
        # Running hashes of uploads in progress: key -> (offset, hasher).
        self._hashers: dict[str, tuple[int, object]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / sha

    def _part(self, user_id: int, sha: str, size: int) -> Path:
        return self.uploads / f"{user_id}-{sha}-{size}.part"

    def _owned(self, user_id: int, sha: str) -> bool:
        with self.database.read() as conn:
            return conn.execute(select(db.blob_owners.c.sha256).where(
                db.blob_owners.c.user_id == user_id, db.blob_owners.c.sha256 == sha)
            ).first() is not None

    def status(self, user_id: int, sha: str, size: int) -> p.UploadStatus:
        """Where an upload stands (creating nothing but the part file)."""
        if size > MAX_BLOB_BYTES:
            raise TooLarge(f"blob of {size} bytes is larger than {MAX_BLOB_BYTES}")
        if self._owned(user_id, sha):
            return p.UploadStatus(sha256=sha, size_bytes=size, offset=size, complete=True)
        part = self._part(user_id, sha, size)
        offset = part.stat().st_size if part.exists() else 0
        return p.UploadStatus(sha256=sha, size_bytes=size, offset=offset, complete=False)

    async def write(self, user_id: int, sha: str, size: int, offset: int,
                    chunks: AsyncIterator[bytes]) -> p.UploadStatus:
        """Append the request body at offset; complete the blob when it reaches size."""
        key = f"{user_id}-{sha}-{size}"
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if self._owned(user_id, sha):
                async for _ in chunks:  # drain: the client may resend a finished upload
                    pass
                return p.UploadStatus(sha256=sha, size_bytes=size, offset=size, complete=True)
            part = self._part(user_id, sha, size)
            current = part.stat().st_size if part.exists() else 0
            if offset != current:
                raise Conflict(f"upload of {sha} is at offset {current}, not {offset}; "
                               f"resume from {current}")
            hasher = self._hasher(key, part, current)
            written = current
            try:
                with part.open("ab") as fh:
                    async for chunk in chunks:
                        if written + len(chunk) > size:
                            raise TooLarge(f"more bytes than the declared {size} for {sha}")
                        fh.write(chunk)
                        hasher.update(chunk)
                        written += len(chunk)
                    fh.flush()
                    os.fsync(fh.fileno())
            except BaseException:
                # Whatever reached the file stays (the client resumes at the file's size);
                # the running hash no longer matches it, so drop it.
                self._hashers.pop(key, None)
                raise
            self._hashers[key] = (written, hasher)
            if written < size:
                return p.UploadStatus(sha256=sha, size_bytes=size, offset=written,
                                      complete=False)
            self._hashers.pop(key, None)
            self._locks.pop(key, None)
            if hasher.hexdigest() != sha:
                part.unlink(missing_ok=True)
                raise HashMismatch(f"the bytes sent do not match sha256 {sha}; nothing stored")
            self._commit(user_id, sha, size, part)
            return p.UploadStatus(sha256=sha, size_bytes=size, offset=size, complete=True)

    def _hasher(self, key: str, part: Path, current: int):
        cached = self._hashers.get(key)
        if cached is not None and cached[0] == current:
            return cached[1]
        hasher = hashlib.sha256()
        if current:
            with part.open("rb") as fh:
                while block := fh.read(1 << 20):
                    hasher.update(block)
        return hasher

    def _commit(self, user_id: int, sha: str, size: int, part: Path) -> None:
        final = self.path(sha)
        if final.exists():
            part.unlink(missing_ok=True)
        else:
            final.parent.mkdir(exist_ok=True)
            os.replace(part, final)
            with contextlib.suppress(OSError):
                dir_fd = os.open(final.parent, os.O_RDONLY)
                os.fsync(dir_fd)
                os.close(dir_fd)
        with self.database.write() as conn:
            # Two users may finish the same bytes at once: whoever is second inserts nothing.
            db.insert_ignore(conn, db.blobs, sha256=sha, size_bytes=size, created_at=time.time())
            db.insert_ignore(conn, db.blob_owners, user_id=user_id, sha256=sha)


def check_size(size: int) -> int:
    if size < 0:
        raise Invalid("size must be >= 0")
    return size
