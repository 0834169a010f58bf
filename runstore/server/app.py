"""The FastAPI application of the runstore server.

Why FastAPI: the wire messages are pydantic models already (runstore.protocol), FastAPI turns
them into request validation and an OpenAPI document for free, it streams request bodies
(blob uploads never sit in memory), and it runs on uvicorn with no other moving parts.

Two guards wrap every route, in a plain ASGI middleware so that no route can skip them:
* a body size limit, enforced on Content-Length up front and on the bytes as they stream in
  (413 before anything is buffered);
* bearer-token authentication for every path except PUBLIC_PATHS; under t9k.PREFIX (the
  t9k compatibility API) authentication by the ``apikey=`` query parameter only; the web UI's
  paths (``/`` and ``/ui/...``, runstore/ui/apps.py) log in with a session cookie instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic_core
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from sqlalchemy.exc import DataError

from runstore import protocol as p
from runstore.server import artifacts, reads, rollups, runfiles, service, t9k
from runstore.server.auth import AuthError, User, authenticate
from runstore.server.blobs import BlobStore, open_backend
from runstore.server.db import Database
from runstore.server.errors import ServiceError
from runstore.server.paths import BadPath, check_sha256, check_uuid
from runstore.server.timing import ServerTiming
from runstore.ui.apps import frozen_startup_heap, mount_server_ui
from runstore.ui.routes import is_ui_path

API = p.API_PREFIX
# The only paths served without a token: liveness, and the API description (no data in it).
PUBLIC_PATHS = frozenset({f"{API}/health", f"{API}/openapi.json", f"{API}/docs"})
UPLOAD_PREFIX = f"{API}/uploads/"


def _json(status: int, detail: str, code: str,
          headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


class Gate:
    """ASGI middleware: body size limits and authentication, before any route runs."""

    def __init__(self, app, database: Database, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.database = database
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit = self.upload_limit if path.startswith(UPLOAD_PREFIX) else self.json_limit
        compat = t9k.under_prefix(path)
        if compat:
            limit = max(limit, t9k.BODY_LIMIT)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                return await _json(400, "bad Content-Length", "bad_request")(scope, receive, send)
            if too_big:
                resp = _json(413, f"request body larger than {limit} bytes", "too_large",
                             {"Connection": "close"})
                return await resp(scope, receive, send)
        if compat:
            refused = await run_in_threadpool(t9k.authenticate, self.database, scope)
            if refused is not None:
                return await refused(scope, receive, send)
        elif path not in PUBLIC_PATHS and not is_ui_path(path):
            auth = headers.get(b"authorization")
            try:
                user = await run_in_threadpool(
                    authenticate, self.database, auth.decode("latin-1") if auth else None)
            except AuthError as exc:
                resp = _json(401, str(exc), "unauthorized", {"WWW-Authenticate": "Bearer"})
                return await resp(scope, receive, send)
            scope.setdefault("state", {})["user"] = user
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body larger than {limit} bytes")
            return message

        return await self.app(scope, limited_receive, send)


def _user(request: Request) -> User:
    return request.state.user


def _checked(fn, *args):
    try:
        return fn(*args)
    except BadPath as exc:
        raise HTTPException(422, str(exc)) from None


async def _body(request: Request, model: type[p.Message]) -> Any:
    return _validated(await request.body(), model)


def _validated(raw: bytes, model: type[p.Message]) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ()))
        raise HTTPException(422, f"invalid {model.__name__}: {where}: {err.get('msg')}") from None


def _metric_chunk(raw: bytes) -> tuple[int, list]:
    """(offset, rows) of a MetricChunk body. The ingest hot path: pydantic-core's JSON parser
    alone costs half of validating the model (whose rows are lists of anything, checked by
    decode_metric_rows anyway); a body of any other shape goes through the model, for its
    error message."""
    try:
        doc = pydantic_core.from_json(raw)
    except ValueError:
        doc = None
    if type(doc) is dict and doc.keys() == {"offset", "rows"} \
            and type(doc["offset"]) is int and 0 <= doc["offset"] <= p.INT64_MAX \
            and type(doc["rows"]) is list:
        return doc["offset"], doc["rows"]
    chunk = _validated(raw, p.MetricChunk)
    return chunk.offset, chunk.rows


def create_app(data_dir: Path | str, database_url: str | None = None, *,
               database: Database | None = None,
               json_limit: int = p.MAX_JSON_BODY_BYTES,
               upload_limit: int = p.MAX_BLOB_PART_BYTES, blobs: str | None = None) -> FastAPI:
    """The ASGI app over a data directory (SQLite + blobs), or a database URL (or an opened
    Database) + the data directory's blobs; ``blobs`` puts them elsewhere (a directory or
    s3://BUCKET/PREFIX, see blobs.open_backend)."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if database is None:
        database = Database(database_url) if database_url else Database.for_data_dir(data_dir)
    blob_store = BlobStore(data_dir, database, open_backend(data_dir, blobs))
    rollups.backfill(database)  # runs stored by a version without the web UI's rollups
    app = FastAPI(title="runstore server", version=str(p.PROTOCOL_VERSION),
                  openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs", redoc_url=None,
                  swagger_ui_oauth2_redirect_url=None, lifespan=frozen_startup_heap)
    app.state.database = database
    app.state.blobs = blob_store
    app.add_middleware(Gate, database=database, json_limit=json_limit,
                       upload_limit=upload_limit)

    @app.exception_handler(ServiceError)
    async def _service_error(_request: Request, exc: ServiceError):
        return _json(exc.status_code, str(exc), exc.code)

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException):
        return _json(exc.status_code, str(exc.detail), "http_error", exc.headers)

    @app.exception_handler(DataError)
    async def _data_error(_request: Request, exc: DataError):
        # A value the database cannot hold, e.g. a NUL character in a string on PostgreSQL
        # (SQLite stores it): the client's mistake, not a server failure.
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "bad value"
        return _json(422, f"a value cannot be stored: {reason}", "invalid")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        err = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in err.get("loc", ()))
        return _json(422, f"invalid request: {where}: {err.get('msg', 'bad value')}", "invalid")

    def write(fn, *args):
        with database.write() as conn:
            return fn(conn, *args)

    def read(fn, *args):
        with database.read() as conn:
            return fn(conn, *args)

    @app.get(f"{API}/health", response_model=p.Health)
    def health() -> p.Health:
        return p.Health()

    @app.get(f"{API}/whoami", response_model=p.WhoAmI)
    def whoami(request: Request) -> p.WhoAmI:
        user = _user(request)
        return p.WhoAmI(user=user.name, root=user.root)

    @app.post(f"{API}/folders", response_model=p.FolderInfo)
    def create_folder(request: Request, body: p.FolderCreate) -> p.FolderInfo:
        return write(service.ensure_folder, _user(request), body.path, body.make_parents)

    @app.get(f"{API}/folders/{{path:path}}", response_model=p.FolderListing)
    def get_folder(request: Request, path: str) -> p.FolderListing:
        return read(reads.list_folder, _user(request), "/" + path)

    @app.get(f"{API}/resolve", response_model=p.ResolvedNode)
    def resolve(request: Request, path: str = Query(max_length=4096)) -> p.ResolvedNode:
        return read(reads.resolve, _user(request), path)

    @app.get(f"{API}/runs", response_model=list[p.NodeSummary])
    def list_runs(request: Request) -> list[p.NodeSummary]:
        return read(reads.list_runs, _user(request))

    @app.post(f"{API}/runs/claim", response_model=p.ClaimResponse)
    def claim_run(request: Request, body: p.RunClaim) -> p.ClaimResponse:
        return write(service.claim_run, _user(request), body)

    @app.get(f"{API}/runs/{{uuid}}", response_model=p.RunDetail)
    def get_run(request: Request, uuid: str) -> p.RunDetail:
        _checked(check_uuid, uuid)
        return read(reads.run_detail, _user(request), uuid)

    @app.put(f"{API}/runs/{{uuid}}/metrics", response_model=p.MetricAck,
             openapi_extra={"requestBody": {"content": {"application/json": {
                 "schema": p.MetricChunk.model_json_schema()}}, "required": True}})
    async def put_metrics(request: Request, uuid: str) -> p.MetricAck:
        _checked(check_uuid, uuid)
        offset, wire = _metric_chunk(await request.body())
        if len(wire) > p.MAX_METRIC_CHUNK_ROWS:
            raise HTTPException(413, f"at most {p.MAX_METRIC_CHUNK_ROWS} rows per chunk")
        try:
            rows = p.decode_metric_rows(wire)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        del wire
        return await run_in_threadpool(write, service.append_metrics, _user(request), uuid,
                                       offset, rows)

    @app.get(f"{API}/runs/{{uuid}}/metrics", response_model=p.MetricPage)
    def get_metrics(request: Request, uuid: str, offset: int = Query(0, ge=0, le=p.INT64_MAX),
                    limit: int = Query(10_000, ge=1, le=p.MAX_METRIC_CHUNK_ROWS),
                    type: str | None = None, key: str | None = None) -> p.MetricPage:
        _checked(check_uuid, uuid)
        return read(reads.metric_page, _user(request), uuid, offset, limit, type, key)

    @app.put(f"{API}/runs/{{uuid}}/lineage", response_model=p.Lineage)
    def put_lineage(request: Request, uuid: str, body: p.LineageUpdate) -> p.Lineage:
        _checked(check_uuid, uuid)
        return write(service.set_lineage, _user(request), uuid, body)

    @app.post(f"{API}/runs/{{uuid}}/finalize", response_model=p.FinalizeResponse)
    def finalize(request: Request, uuid: str, body: p.RunFinalize) -> p.FinalizeResponse:
        _checked(check_uuid, uuid)
        return write(service.finalize_run, _user(request), uuid, body)

    # A run's files (stdout.log): the bytes went up as a blob; this points the run at them.
    # A route of its own, not a field of finalize: every upload of a Running run sends its
    # grown stdout while finalize stays about rows and state, and a request of a few bytes
    # keeps a huge log out of JSON bodies (runstore/server/runfiles.py).
    @app.put(f"{API}/runs/{{uuid}}/files/{{path}}", response_model=p.RunFileInfo)
    def put_run_file(request: Request, uuid: str, path: str,
                     body: p.RunFileSet) -> p.RunFileInfo:
        _checked(check_uuid, uuid)
        return write(runfiles.set_run_file, _user(request), uuid, path, body)

    @app.get(f"{API}/runs/{{uuid}}/files/{{path}}")
    async def get_run_file(request: Request, uuid: str, path: str):
        _checked(check_uuid, uuid)
        info = await run_in_threadpool(read, runfiles.run_file, _user(request), uuid, path)
        if not await blob_store.exists(info.sha256):
            raise HTTPException(404, f"the bytes of {path} are not on this server")
        return StreamingResponse(blob_store.read(info.sha256),
                                 media_type="application/octet-stream",
                                 headers={"Content-Length": str(info.size_bytes)})

    @app.post(f"{API}/blobs/missing", response_model=p.BlobMissing)
    def blobs_missing(request: Request, body: p.BlobQuery) -> p.BlobMissing:
        return p.BlobMissing(missing=read(artifacts.missing_blobs, _user(request), body.sha256))

    @app.get(f"{API}/blobs/{{sha256}}")
    async def get_blob(request: Request, sha256: str):
        _checked(check_sha256, sha256)
        user = _user(request)
        size = await blob_store.owned_size(user.id, sha256)
        if size is None or not await blob_store.exists(sha256):
            raise HTTPException(404, f"blob {sha256} not found")
        return StreamingResponse(blob_store.read(sha256), media_type="application/octet-stream",
                                 headers={"Content-Length": str(size)})

    @app.post(f"{API}/uploads", response_model=p.UploadStatus)
    async def start_upload(request: Request, body: p.UploadStart) -> p.UploadStatus:
        _checked(check_sha256, body.sha256)
        return await blob_store.status(_user(request).id, body.sha256, body.size_bytes)

    @app.patch(f"{API}/uploads/{{sha256}}", response_model=p.UploadStatus,
               openapi_extra={"requestBody": {"content": {"application/octet-stream": {
                   "schema": {"type": "string", "format": "binary"}}}, "required": True}})
    async def upload_part(request: Request, sha256: str,
                          offset: int = Query(ge=0, le=p.INT64_MAX),
                          size: int = Query(ge=0, le=p.INT64_MAX)) -> p.UploadStatus:
        _checked(check_sha256, sha256)
        return await blob_store.write(_user(request).id, sha256, size, offset, request.stream())

    @app.post(f"{API}/artifacts/claim", response_model=p.ClaimResponse)
    def claim_artifact(request: Request, body: p.ArtifactClaim) -> p.ClaimResponse:
        return write(artifacts.claim_artifact, _user(request), body)

    @app.get(f"{API}/artifacts/{{uuid}}", response_model=p.ArtifactDetail)
    def get_artifact(request: Request, uuid: str) -> p.ArtifactDetail:
        _checked(check_uuid, uuid)
        return read(artifacts.artifact_detail, _user(request), uuid)

    t9k.register(app, database, blob_store, data_dir)
    mount_server_ui(app, database, blob_store)
    app.add_middleware(ServerTiming)  # (outermost: added last)
    return app


__all__ = ["create_app", "PUBLIC_PATHS"]
