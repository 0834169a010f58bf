"""Objects of runs and artifacts: upload (whole, or in parts for files over 100 MiB), list,
download. A run's t9k files are parsed into the tables (ingest.py) and rendered back
(render.py); any other file is a blob in the server's blob store.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from starlette.datastructures import UploadFile

from runstore.server import db
from runstore.server.paths import BadPath, check_object_path
from runstore.server.t9k import ingest, render, tree
from runstore.server.t9k.routes import (
    answer,
    json_body,
    paginate,
    query,
    query_int,
    read,
    router,
    write,
)
from runstore.server.t9k.tree import T9kError

UPLOAD_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_PARTS = 10_000


# -- objects --------------------------------------------------------------------------------
def _split_key(conn, user, path: str) -> tuple[str, Any, str, str]:
    kind, row, node_path, key = tree.split_object(conn, user, path)
    if kind not in ("Run", "Artifact"):
        raise T9kError(400, f"objects belong to a Run or an Artifact, not {node_path}")
    try:
        check_object_path(key)
    except BadPath as exc:
        raise T9kError(400, str(exc)) from None
    return kind, row, node_path, key


def _parsed(kind: str, key: str) -> bool:
    if kind == "Run":
        return ingest.is_parsed_run_file(key)
    return key in ingest.PARSED_ARTIFACT_FILES


def _hash_file(fh) -> tuple[str, int]:
    fh.seek(0)
    digest, size = hashlib.sha256(), 0
    while block := fh.read(1 << 20):
        digest.update(block)
        size += len(block)
    fh.seek(0)
    return digest.hexdigest(), size


async def _put_blob(request: Request, fh, sha: str, size: int) -> None:
    """The file's bytes into the server's blob store (owned by the uploading user)."""
    blobs = request.app.state.blobs
    user_id = request.state.user.id
    status = await blobs.status(user_id, sha, size)
    if status.complete:
        return
    await run_in_threadpool(fh.seek, status.offset)

    async def chunks():
        while block := await run_in_threadpool(fh.read, 1 << 20):
            yield block
    await blobs.write(user_id, sha, size, status.offset, chunks())


async def _store(request: Request, path: str, fh) -> dict:
    """Store an uploaded object: parsed into the tables, or kept as a blob."""
    kind, _row, _node_path, key = await read(request, _split_key, path)
    sha, size = await run_in_threadpool(_hash_file, fh)
    if _parsed(kind, key):
        data = await run_in_threadpool(fh.read)
        await write(request, _ingest, path, data)
    else:
        await _put_blob(request, fh, sha, size)
        await write(request, _record, path, sha, size)
    return {"path": key, "path_type": "object", "size_bytes": size}


def _ingest(conn, user, path: str, data: bytes) -> None:
    db.lock_user(conn, user.id)
    kind, row, _node_path, key = _split_key(conn, user, path)
    if kind == "Run":
        ingest.ingest_run_file(conn, row, key, data)
    else:
        ingest.ingest_artifact_file(conn, row, key, data)


def _record(conn, user, path: str, sha: str, size: int) -> None:
    db.lock_user(conn, user.id)
    kind, row, _node_path, key = _split_key(conn, user, path)
    if kind == "Run":
        ingest.record_run_file(conn, row, key, sha, size)
    else:
        ingest.record_artifact_file(conn, row, key, sha, size)


async def _form_file(request: Request) -> UploadFile:
    try:
        form = await request.form(max_files=1, max_fields=8)
    except HTTPException:  # the body limit (app.py's Gate): its own 413
        raise
    except Exception as exc:  # malformed multipart bodies raise several types
        raise T9kError(400, "the body must be a multipart form with a file 'content': "
                       f"{exc}") from None
    content = form.get("content")
    if not isinstance(content, UploadFile):
        raise T9kError(400, "the body must be a multipart form with a file 'content'")
    return content


@router.post("/apis/v1/objects")
@answer
async def upload_object(request: Request):
    path = query(request, "path")
    content = await _form_file(request)
    try:
        return await _store(request, path, content.file)
    finally:
        await content.close()


def _objects(conn, user, node_path: str) -> tuple[str, Any, dict]:
    kind, row, path = tree.locate(conn, user, node_path)
    if kind == "Folder":
        raise T9kError(400, f"a Folder has no objects: {path}")
    files = render.run_files(conn, row) if kind == "Run" else render.artifact_files(conn, row)
    return kind, row, files


@router.get("/apis/v1/objects/ls")
@answer
async def list_objects(request: Request):
    node_path = query(request, "path")
    page = query_int(request, "page", 1, 1, 1 << 31)
    size = query_int(request, "size", 1000, 1, 1000)
    _kind, _row, files = await read(request, _objects, node_path)
    items = [{"path": k, "path_type": "object", "size_bytes": render.size_of(v)}
             for k, v in sorted(files.items())]
    return paginate(items, page, size)


def _object(conn, user, path: str) -> Any:
    _kind, _row, node_path, key = _split_key(conn, user, path)
    _k, _r, files = _objects(conn, user, node_path)
    if key not in files:
        raise T9kError(404, f"object not found [{path}]")
    return files[key]


@router.get("/apis/v1/objects")
@answer
async def get_object(request: Request):
    path = query(request, "path")
    obj = await read(request, _object, path)
    if isinstance(obj, bytes):
        return Response(obj, media_type="application/octet-stream")
    blobs = request.app.state.blobs  # a local directory or S3 (blobs.py): streamed either way
    if not await blobs.exists(obj[1]):
        raise T9kError(404, f"object not found [{path}]")
    return StreamingResponse(blobs.read(obj[1]), media_type="application/octet-stream",
                             headers={"Content-Length": str(obj[2])})


# -- multipart uploads (files over 100 MiB) --------------------------------------------------
def _upload_dir(request: Request, upload_id: str) -> Path:
    if not UPLOAD_ID_RE.fullmatch(upload_id):
        raise T9kError(404, f"upload not found [{upload_id[:40]}]")
    root: Path = request.app.state.t9k_multipart
    return root / f"{request.state.user.id}-{upload_id}"


@router.post("/apis/v1/objects/multipart")
@answer
async def start_multipart(request: Request):
    path = query(request, "path")
    await read(request, _split_key, path)  # the node must exist now
    upload_id = str(uuid.uuid4())
    where = _upload_dir(request, upload_id)
    where.mkdir(parents=True)
    (where / "path").write_text(path)
    return {"uploadId": upload_id}


def _pending(request: Request, upload_id: str, path: str) -> Path:
    where = _upload_dir(request, upload_id)
    try:
        started_for = (where / "path").read_text()
    except OSError:
        raise T9kError(404, f"upload not found [{upload_id}]") from None
    if started_for != path:
        raise T9kError(400, f"upload {upload_id} is for {started_for}, not {path}")
    return where


@router.put("/apis/v1/objects/multipart/{upload_id}")
@answer
async def upload_part(request: Request, upload_id: str):
    path = query(request, "path")
    number = query_int(request, "partNumber", 0, 1, MAX_PARTS)
    where = _pending(request, upload_id, path)
    content = await _form_file(request)
    try:
        etag = await run_in_threadpool(_save_part, content.file, where, number)
    finally:
        await content.close()
    return {"eTag": etag}


def _save_part(src, where: Path, number: int) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    fd, tmp = tempfile.mkstemp(dir=where, prefix="part-")
    with os.fdopen(fd, "wb") as out:
        while block := src.read(1 << 20):
            digest.update(block)
            out.write(block)
    os.replace(tmp, where / f"{number:05d}.part")
    return digest.hexdigest()


@router.post("/apis/v1/objects/multipart/{upload_id}")
@answer
async def complete_multipart(request: Request, upload_id: str):
    path = query(request, "path")
    where = _pending(request, upload_id, path)
    body = await json_body(request)
    parts = body.get("parts") if isinstance(body, dict) else None
    if not isinstance(parts, list) or not parts:
        raise T9kError(400, "the body must be {\"parts\": [{\"etag\", \"partNumber\"}, ...]}")
    fd, joined = tempfile.mkstemp(dir=where, prefix="joined-")
    try:
        with os.fdopen(fd, "w+b") as out:
            await run_in_threadpool(_join_parts, where, parts, out)
            result = await _store(request, path, out)
    finally:
        await run_in_threadpool(shutil.rmtree, where, True)
    return result


def _join_parts(where: Path, parts: list, out) -> None:
    numbers = []
    for part in parts:
        if not isinstance(part, dict) or not isinstance(part.get("partNumber"), int):
            raise T9kError(400, "each part must be {\"etag\": ..., \"partNumber\": N}")
        numbers.append(part["partNumber"])
    if numbers != sorted(set(numbers)):
        raise T9kError(400, "parts must be listed once each, in order")
    for part in parts:
        name = where / f"{part['partNumber']:05d}.part"
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with name.open("rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
        except OSError:
            raise T9kError(400, f"part {part['partNumber']} was not uploaded") from None
        if digest.hexdigest() != part.get("etag"):
            raise T9kError(400, f"part {part['partNumber']}: etag does not match its bytes")
    out.flush()
