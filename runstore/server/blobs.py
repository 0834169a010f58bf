"""Content-addressed blob storage with resumable, hash-verified uploads.

``BlobStore`` is what the routes (and any module that stores bytes, e.g. compat objects) use:

    await store.status(user_id, sha, size)          where an upload stands
    await store.write(user_id, sha, size, offset, chunks)   append one request body
    await store.put_bytes(user_id, data) -> sha     a small object in one call
    store.read(sha, start) -> async iterator of bytes   stream a verified blob (from start)
    await store.exists(sha)                         is the blob stored (any owner)

Where the bytes live is a ``Backend``: ``LocalBackend`` (a directory, the default) or
``S3Backend`` (runstore.server.blobs_s3, any S3-compatible bucket through obstore). Both keep
the same rules:

* a blob is named by its sha256 only, and only ever written after the bytes were hashed and
  matched the name (a mismatch stores nothing);
* an upload in progress is staged apart from the blobs and resumes at the offset the backend
  reports (the client is told the right offset otherwise); partial uploads are never visible;
* a blob is written create-only: two writers of the same bytes cannot corrupt it.

The database records which blobs exist and who may read them (``blobs``, ``blob_owners``); a
user owns a blob only after sending its bytes. Every database call runs in a worker thread and
every file operation too, so a blob handler never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from runstore import protocol as p
from runstore.server import db
from runstore.server.errors import Conflict, HashMismatch, Invalid, TooLarge

MAX_BLOB_BYTES = 1 << 40
READ_CHUNK = 1 << 20


class Backend(Protocol):
    """Where blob bytes live. ``key`` names one upload in progress (user, sha, size)."""

    description: str

    async def staged(self, key: str) -> int:
        """How many bytes of the upload are safely staged (where the client resumes)."""

    async def append(self, key: str, sha: str, offset: int, size: int,
                     chunks: AsyncIterator[bytes]) -> int:
        """Stage the chunks at offset (Conflict unless it is staged(key)); return the staged
        size. At size: hash the staged bytes, and when they match sha make the blob visible
        (create-only) and drop the staging, else drop it and raise HashMismatch. TooLarge past
        size. A request cut short keeps at most what arrived."""

    async def exists(self, sha: str) -> bool: ...

    def read(self, sha: str, start: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from offset start, in chunks (FileNotFoundError if absent)."""

    async def close(self) -> None: ...


class LocalBackend:
    """A directory, as before the S3 backend existed::

        blobs/ab/<sha256>                       complete, verified blobs
        uploads/<user_id>-<sha256>-<size>.part  an upload in progress (appended in order)

    The part file is fsynced before a part is acknowledged, so a killed server loses at most
    the unacknowledged part. The running hash of an upload is kept between requests (rebuilt
    from disk after a restart). Uploads of one key are serialised by an in-process lock: the
    directory is only shared by the processes of one machine's server.
    """

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "blobs"
        self.uploads = data_dir / "uploads"
        self.root.mkdir(parents=True, exist_ok=True)
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.description = str(data_dir)
        self._hashers: dict[str, tuple[int, object]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def path(self, sha: str) -> Path:
        return self.root / sha[:2] / sha

    def _part(self, key: str) -> Path:
        return self.uploads / f"{key}.part"

    async def staged(self, key: str) -> int:
        part = self._part(key)
        return await run_in_threadpool(lambda: part.stat().st_size if part.exists() else 0)

    async def append(self, key: str, sha: str, offset: int, size: int,
                     chunks: AsyncIterator[bytes]) -> int:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # staging and the commit of one upload: one request at a time
            written = await self._stage(key, offset, size, chunks)
            if written == size:
                await self._commit(key, sha, size)
        if written == size:
            self._locks.pop(key, None)
        return written

    async def _stage(self, key: str, offset: int, size: int,
                     chunks: AsyncIterator[bytes]) -> int:
        current = await self.staged(key)
        if offset != current:
            raise Conflict(f"at offset {current}, not {offset}; "
                           f"resume from {current}")
        part = self._part(key)
        hasher = await run_in_threadpool(self._hasher, key, part, current)
        written = current
        fh = await run_in_threadpool(part.open, "ab")
        try:
            async for chunk in chunks:
                if written + len(chunk) > size:
                    raise TooLarge(f"more bytes than the declared {size}")
                await run_in_threadpool(_write_and_hash, fh, hasher, chunk)
                written += len(chunk)
            await run_in_threadpool(_flush_sync, fh)
        except BaseException:
            # Whatever reached the file stays (the client resumes at the file's size);
            # the running hash no longer matches it, so drop it.
            self._hashers.pop(key, None)
            raise
        finally:
            await run_in_threadpool(fh.close)
        self._hashers[key] = (written, hasher)
        return written

    def _hasher(self, key: str, part: Path, current: int):
        cached = self._hashers.get(key)
        if cached is not None and cached[0] == current:
            return cached[1]
        hasher = hashlib.sha256()
        if current:
            with part.open("rb") as fh:
                while block := fh.read(READ_CHUNK):
                    hasher.update(block)
        return hasher

    async def _commit(self, key: str, sha: str, size: int) -> None:
        part = self._part(key)
        hasher = await run_in_threadpool(self._hasher, key, part, size)
        self._hashers.pop(key, None)
        if hasher.hexdigest() != sha:  # type: ignore[attr-defined]
            part.unlink(missing_ok=True)
            raise HashMismatch(f"the bytes sent do not match sha256 {sha}; nothing stored")
        await run_in_threadpool(self._move_into_place, part, sha)

    def _move_into_place(self, part: Path, sha: str) -> None:
        final = self.path(sha)
        if final.exists():
            part.unlink(missing_ok=True)
            return
        final.parent.mkdir(exist_ok=True)
        os.replace(part, final)
        with contextlib.suppress(OSError):
            dir_fd = os.open(final.parent, os.O_RDONLY)
            os.fsync(dir_fd)
            os.close(dir_fd)

    async def exists(self, sha: str) -> bool:
        return await run_in_threadpool(self.path(sha).exists)

    async def read(self, sha: str, start: int = 0) -> AsyncIterator[bytes]:
        fh = await run_in_threadpool(self.path(sha).open, "rb")
        try:
            if start:
                await run_in_threadpool(fh.seek, start)
            while chunk := await run_in_threadpool(fh.read, READ_CHUNK):
                yield chunk
        finally:
            await run_in_threadpool(fh.close)

    async def close(self) -> None:
        return None


def _write_and_hash(fh, hasher, chunk: bytes) -> None:
    fh.write(chunk)
    hasher.update(chunk)


def _flush_sync(fh) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def open_backend(data_dir: Path, blobs: str | None) -> Backend:
    """The backend a ``--blobs`` value names: None or a path is a directory (default: the
    data directory), ``s3://BUCKET/PREFIX`` a bucket (runstore.server.blobs_s3)."""
    if blobs is None:
        return LocalBackend(data_dir)
    if blobs.startswith("s3://"):
        try:
            from runstore.server.blobs_s3 import S3Backend

            return S3Backend.from_url(blobs)
        except ImportError as exc:
            raise Invalid(f"--blobs {blobs} needs obstore ({exc.name} is missing). "
                          "Try: pip install 'runstore[s3]'") from None
    if "://" in blobs:
        raise Invalid(f"unsupported blob location {blobs!r}. Try: a directory or "
                      "s3://BUCKET/PREFIX")
    return LocalBackend(Path(blobs))


class BlobStore:
    """The upload protocol and blob ownership over a Backend and the server database."""

    def __init__(self, data_dir: Path, database: db.Database,
                 backend: Backend | None = None) -> None:
        self.backend: Backend = backend or LocalBackend(data_dir)
        self.database = database

    @staticmethod
    def _key(user_id: int, sha: str, size: int) -> str:
        return f"{user_id}-{sha}-{size}"

    def _owned_sync(self, user_id: int, sha: str) -> bool:
        with self.database.read() as conn:
            return conn.execute(select(db.blob_owners.c.sha256).where(
                db.blob_owners.c.user_id == user_id, db.blob_owners.c.sha256 == sha)
            ).first() is not None

    async def owned(self, user_id: int, sha: str) -> bool:
        """True once the user has sent this blob's bytes (and may read or reference it)."""
        return await run_in_threadpool(self._owned_sync, user_id, sha)

    def _size_sync(self, user_id: int, sha: str) -> int | None:
        with self.database.read() as conn:
            return conn.execute(select(db.blobs.c.size_bytes).join(
                db.blob_owners, db.blob_owners.c.sha256 == db.blobs.c.sha256).where(
                db.blob_owners.c.user_id == user_id, db.blobs.c.sha256 == sha)).scalar()

    async def owned_size(self, user_id: int, sha: str) -> int | None:
        """The blob's size if the user may read it, else None."""
        return await run_in_threadpool(self._size_sync, user_id, sha)

    async def status(self, user_id: int, sha: str, size: int) -> p.UploadStatus:
        """Where an upload stands (creating nothing)."""
        if size > MAX_BLOB_BYTES:
            raise TooLarge(f"blob of {size} bytes is larger than {MAX_BLOB_BYTES}")
        if await self.owned(user_id, sha):
            return p.UploadStatus(sha256=sha, size_bytes=size, offset=size, complete=True)
        offset = await self.backend.staged(self._key(user_id, sha, size))
        return p.UploadStatus(sha256=sha, size_bytes=size, offset=offset, complete=False)

    async def write(self, user_id: int, sha: str, size: int, offset: int,
                    chunks: AsyncIterator[bytes]) -> p.UploadStatus:
        """Append the request body at offset; complete the blob when it reaches size."""
        if size > MAX_BLOB_BYTES:
            raise TooLarge(f"blob of {size} bytes is larger than {MAX_BLOB_BYTES}")
        if await self.owned(user_id, sha):
            async for _ in chunks:  # drain: the client may resend a finished upload
                pass
            return p.UploadStatus(sha256=sha, size_bytes=size, offset=size, complete=True)
        key = self._key(user_id, sha, size)
        try:
            written = await self.backend.append(key, sha, offset, size, chunks)
        except Conflict as exc:
            raise Conflict(f"upload of {sha} is {exc}") from None
        except TooLarge as exc:
            raise TooLarge(f"{exc} for {sha}") from None
        if written < size:
            return p.UploadStatus(sha256=sha, size_bytes=size, offset=written, complete=False)
        await run_in_threadpool(self._register, user_id, sha, size)
        return p.UploadStatus(sha256=sha, size_bytes=size, offset=size, complete=True)

    async def put_bytes(self, user_id: int, data: bytes) -> str:
        """Store a small object in one call (through the same verified path); its sha256."""
        sha = hashlib.sha256(data).hexdigest()

        async def one() -> AsyncIterator[bytes]:
            yield data

        status = await self.status(user_id, sha, len(data))
        if not status.complete:
            await self.write(user_id, sha, len(data), status.offset, one())
        return sha

    def _register(self, user_id: int, sha: str, size: int) -> None:
        with self.database.write() as conn:
            # Two users may finish the same bytes at once: whoever is second inserts nothing.
            db.insert_ignore(conn, db.blobs, sha256=sha, size_bytes=size, created_at=time.time())
            db.insert_ignore(conn, db.blob_owners, user_id=user_id, sha256=sha)

    async def exists(self, sha: str) -> bool:
        return await self.backend.exists(sha)

    def read(self, sha: str, start: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from offset start (the tail of a log: a ranged read, not the
        whole blob), streamed; ownership is the caller's check."""
        return self.backend.read(sha, start)

    async def close(self) -> None:
        await self.backend.close()


def check_size(size: int) -> int:
    if size < 0:
        raise Invalid("size must be >= 0")
    return size
