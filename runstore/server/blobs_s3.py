"""Blobs in an S3-compatible bucket, through obstore (the Rust object_store crate).

Why obstore: one maintained client for S3 and its clones with native asyncio (no thread per
request, so a blob handler never blocks the event loop), streaming in both directions,
multipart uploads and conditional writes (``PutMode.Create`` = ``If-None-Match: *``).

Layout under ``s3://BUCKET/PREFIX``::

    blobs/ab/<sha256>                               complete, verified blobs
    uploads/<user>-<sha256>-<size>/<offset:020d>    staged parts of an upload in progress

Replicas share nothing but the bucket and the database, so an upload's progress lives in the
bucket: every request body becomes one staged part object, visible only once the body arrived
whole (a cut request is a multipart upload that is aborted, so it leaves nothing and the client
resumes at the last whole part). The offset is the sum of the contiguous parts (a LIST).

Verification and the final write happen in one pass: the bytes (the request body when the
whole blob arrives in the first request, otherwise the staged parts in order) are hashed while
they stream to ``blobs/<sha>``, and the last chunk is only handed over once the digest
matched. A mismatch raises inside the upload, which aborts it: a blob name never holds other
bytes, not even for a moment. A blob of up to ``CREATE_ONLY_MAX`` bytes is written with
``If-None-Match: *`` (create-only: a second writer gets "already exists" and nothing changes).
object_store cannot complete a multipart upload conditionally, so a larger blob is written
after a HEAD found it absent; two replicas racing past that HEAD both complete uploads of the
same verified bytes, and S3 replaces an object atomically, so a reader sees those bytes
either way.

Environment: the usual ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``,
``AWS_ENDPOINT_URL`` (e.g. ``http://127.0.0.1:8333`` for SeaweedFS or MinIO),
``AWS_ALLOW_HTTP=true`` for a plain-HTTP endpoint; read by obstore itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from typing import Any

from runstore.server.errors import Conflict, HashMismatch, Invalid, TooLarge

CREATE_ONLY_MAX = 8 * 1024 * 1024   # one PUT (buffered by obstore), conditional
MULTIPART_CHUNK = 5 * 1024 * 1024   # S3's minimum part size
MULTIPART_CONCURRENCY = 2           # parts in flight per upload: memory ~ 2 x 5 MiB
READ_CHUNK = 1 << 20


class S3Backend:
    """The Backend (runstore.server.blobs) over one bucket and prefix."""

    def __init__(self, bucket: str, prefix: str = "", **config: Any) -> None:
        from obstore.store import S3Store

        if not bucket:
            raise Invalid("s3:// needs a bucket name. Try: --blobs s3://BUCKET/PREFIX")
        options: dict[str, Any] = {}
        if os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://") or \
                os.environ.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true"):
            options["allow_http"] = True
        # Conditional PUT (If-None-Match) must be switched on explicitly in object_store.
        config.setdefault("conditional_put", os.environ.get("AWS_CONDITIONAL_PUT", "etag"))
        self.store = S3Store(bucket, prefix=prefix.strip("/") or None,
                             config=config,  # type: ignore[arg-type]
                             client_options=options)  # type: ignore[arg-type]
        self.description = f"s3://{bucket}/{prefix.strip('/')}"

    @classmethod
    def from_url(cls, url: str) -> S3Backend:
        rest = url[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        return cls(bucket, prefix)

    @staticmethod
    def _blob(sha: str) -> str:
        return f"blobs/{sha[:2]}/{sha}"

    @staticmethod
    def _parts_prefix(key: str) -> str:
        return f"uploads/{key}/"

    # -- staged parts ----------------------------------------------------------------------
    async def _parts(self, key: str) -> list[tuple[int, int, str]]:
        """The contiguous staged parts from offset 0: (offset, size, path)."""
        import obstore

        found: list[tuple[int, int, str]] = []
        async for batch in obstore.list(self.store, prefix=self._parts_prefix(key)):
            for meta in batch:
                name = meta["path"].rsplit("/", 1)[-1]
                if name.isdigit():
                    found.append((int(name), int(meta["size"]), meta["path"]))
        found.sort()
        contiguous: list[tuple[int, int, str]] = []
        at = 0
        for offset, size, path in found:
            if offset != at or size == 0:
                break
            contiguous.append((offset, size, path))
            at += size
        return contiguous

    async def staged(self, key: str) -> int:
        return sum(size for _, size, _ in await self._parts(key))

    async def append(self, key: str, sha: str, offset: int, size: int,
                     chunks: AsyncIterator[bytes]) -> int:
        parts = await self._parts(key)
        current = sum(s for _, s, _ in parts)
        if offset != current:
            raise Conflict(f"at offset {current}, not {offset}; resume from {current}")
        if offset == 0 and size <= CREATE_ONLY_MAX and await self.exists(sha):
            # Stored already (another user, or another replica): verify these bytes anyway,
            # the caller only owns the blob after sending them. (A larger one is staged and
            # verified at its last part like any other: _put_verified skips the write.)
            hasher = hashlib.sha256()
            n = 0
            async for chunk in chunks:
                n += len(chunk)
                if n > size:
                    raise TooLarge(f"more bytes than the declared {size}")
                hasher.update(chunk)
            if n < size:
                return 0
            if hasher.hexdigest() != sha:
                raise HashMismatch(f"the bytes sent do not match sha256 {sha}; nothing stored")
            return size
        if offset == 0 and size <= CREATE_ONLY_MAX:
            # A small blob comes whole in one request (the client's parts are 8 MiB):
            # straight to its place, verified on the way, no staging.
            counter = _Counter()
            try:
                await self._put_verified(sha, size, _limit(chunks, size, counter), counter)
                return size
            except _ShortBody:
                # Only part of the blob came: stage what came (the client sends the rest).
                pass
            if counter.n == 0:
                return 0
            await self._put_part(key, 0, _replay(counter.kept))
            written = counter.n
        else:
            counter = _Counter()
            await self._put_part(key, offset, _limit(chunks, size - offset, counter, keep=False,
                                                        declared=size))
            written = offset + counter.n
        if written < size:
            return written
        await self._commit_parts(key, sha, size)
        return size

    async def _put_part(self, key: str, offset: int, chunks: AsyncIterator[bytes]) -> None:
        """One staged part, a multipart upload completed only when the body ended whole (a
        body cut short, or too long, aborts it: nothing staged)."""
        import obstore

        try:
            await obstore.put_async(self.store, f"{self._parts_prefix(key)}{offset:020d}",
                                    chunks, use_multipart=True, chunk_size=MULTIPART_CHUNK,
                                    max_concurrency=MULTIPART_CONCURRENCY)
        except Exception as exc:
            inner = _cause(exc, (TooLarge,))
            if inner is not None:
                raise inner from None
            raise

    async def _commit_parts(self, key: str, sha: str, size: int) -> None:
        import obstore

        parts = await self._parts(key)
        if sum(s for _, s, _ in parts) != size:
            raise Conflict(f"at offset {sum(s for _, s, _ in parts)}; staged parts changed "
                           "while committing, resume from there")

        async def staged_bytes() -> AsyncIterator[bytes]:
            for _, _, path in parts:
                result = await obstore.get_async(self.store, path)
                async for chunk in result.stream(min_chunk_size=READ_CHUNK):
                    yield bytes(chunk)

        try:
            await self._put_verified(sha, size, staged_bytes(), None)
        except FileNotFoundError:
            # Another replica committed this same upload (same user, same staged bytes,
            # verified there) and removed the parts while we read them.
            if not await self.exists(sha):
                raise
        except HashMismatch:
            await self._drop(parts)
            raise
        await self._drop(parts)

    async def _drop(self, parts: list[tuple[int, int, str]]) -> None:
        import obstore

        if parts:
            await obstore.delete_async(self.store, [path for _, _, path in parts])

    # -- the verified write ----------------------------------------------------------------
    async def _put_verified(self, sha: str, size: int, chunks: AsyncIterator[bytes],
                            counter: _Counter | None) -> None:
        """Stream chunks to blobs/<sha>, hashing them; the upload only completes when the
        digest matched (else HashMismatch aborts it). Already there: nothing changes."""
        import obstore
        from obstore.exceptions import AlreadyExistsError

        verified = _verify(chunks, sha, size)
        path = self._blob(sha)
        try:
            if size <= CREATE_ONLY_MAX:
                await obstore.put_async(self.store, path, verified, mode="create")
            elif await self.exists(sha):
                async for _ in verified:  # still verify what the caller sent
                    pass
            else:
                await obstore.put_async(self.store, path, verified, use_multipart=True,
                                        chunk_size=MULTIPART_CHUNK,
                                        max_concurrency=MULTIPART_CONCURRENCY)
        except AlreadyExistsError:
            async for _ in verified:  # drain, to verify the caller's bytes
                pass
        except Exception as exc:
            # obstore wraps an exception raised by the iterator; give back ours.
            inner = _cause(exc, (HashMismatch, TooLarge, _ShortBody, FileNotFoundError))
            if inner is not None:
                raise inner from None
            raise

    async def exists(self, sha: str) -> bool:
        import obstore

        try:
            await obstore.head_async(self.store, self._blob(sha))
        except FileNotFoundError:
            return False
        return True

    async def read(self, sha: str, start: int = 0) -> AsyncIterator[bytes]:
        import obstore

        # A ranged GET from start (the tail of a log without fetching the rest)
        options: Any = {"range": {"offset": start}} if start else None
        result = await obstore.get_async(self.store, self._blob(sha), options=options)
        async for chunk in result.stream(min_chunk_size=READ_CHUNK):
            yield bytes(chunk)

    async def close(self) -> None:
        return None


class _ShortBody(Exception):
    """The request body ended before the declared size: not the whole blob."""


class _Counter:
    def __init__(self) -> None:
        self.n = 0
        self.kept: list[bytes] = []


async def _limit(chunks: AsyncIterator[bytes], room: int, counter: _Counter,
                 keep: bool = True, declared: int | None = None) -> AsyncIterator[bytes]:
    """Pass chunks through, counting; TooLarge past room (the declared size less the offset).
    keep: remember them (at most one request body of <= 8 MiB, the direct path) so a short
    body can be staged instead."""
    async for chunk in chunks:
        counter.n += len(chunk)
        if counter.n > room:
            raise TooLarge(f"more bytes than the declared {declared or room}")
        if keep:
            counter.kept.append(chunk)
        yield chunk


async def _replay(kept: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in kept:
        yield chunk


async def _verify(chunks: AsyncIterator[bytes], sha: str, size: int) -> AsyncIterator[bytes]:
    """Yield chunks, holding the last one back until the digest is known: HashMismatch (or
    _ShortBody) is raised before the upload can complete."""
    hasher = hashlib.sha256()
    held: bytes | None = None
    n = 0
    async for chunk in chunks:
        if not chunk:
            continue
        hasher.update(chunk)
        n += len(chunk)
        if held is not None:
            yield held
        held = chunk
    if n < size:
        raise _ShortBody()
    if n > size:
        raise TooLarge(f"more bytes than the declared {size}")
    if hasher.hexdigest() != sha:
        raise HashMismatch(f"the bytes sent do not match sha256 {sha}; nothing stored")
    if held is not None:
        yield held


def _cause(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:
        if isinstance(cur, kinds):
            return cur
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return None
