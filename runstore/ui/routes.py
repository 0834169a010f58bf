"""The web UI's routes, shared by `runstore serve` (login) and `runstore ui` (local, no login).

Everything lives under ``/ui/`` (``/`` redirects there), so the server's bearer-token gate can
leave exactly these paths to the cookie login here and keep ``/api/v1`` as it is. Pages are
rendered by Jinja2 with autoescaping on; data for scripts goes through ``|tojson`` (which
escapes ``<``, ``>``, ``&`` and quotes), and the scripts only ever set ``textContent``: a run
can carry any string without it becoming markup.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from runstore.ui import format as fmt
from runstore.ui.data import (
    PAGE_SIZES,
    STATUSES,
    LoginRequired,
    MetricRef,
    NotFound,
    RunDetail,
    RunsQuery,
    UIData,
)

HERE = Path(__file__).parent
PREFIX = "/ui"
STDOUT_TAIL_BYTES = 64 * 1024
RECENT_RUNS = 10
TYPE_ORDER = {"train": 0, "val": 1, "test": 2}


def is_ui_path(path: str) -> bool:
    """Paths the web UI serves (and authenticates itself)."""
    return path == "/" or path == PREFIX or path.startswith(PREFIX + "/")


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.autoescape = True
    env.filters.update(value=fmt.value, metric=fmt.metric, duration=fmt.duration, when=fmt.when,
                       size=fmt.size, jsonish=fmt.jsonish)
    env.globals.update(type_label=fmt.type_label, STATUSES=STATUSES, PAGE_SIZES=PAGE_SIZES)
    return templates


def _int(text: str | None, name: str) -> int | None:
    if text in (None, ""):
        return None
    try:
        return int(str(text))
    except ValueError:
        raise BadRequest(f"{name}={text!r} is not an integer. Try: {name}=100") from None


class BadRequest(ValueError):
    pass


def build_router(get_data: Callable[[Request], UIData], *,
                 login: bool) -> tuple[APIRouter, Callable[..., Response]]:
    """The pages, over whatever UIData ``get_data`` returns for a request (raising
    LoginRequired when there is no user); and the page renderer, for more routes."""
    templates = make_templates()
    router = APIRouter()

    def page(request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
        ctx.setdefault("data_note", None)
        ctx.update(login_enabled=login, user=getattr(request.state, "ui_user", None),
                   csrf=getattr(request.state, "csrf", ""))
        return templates.TemplateResponse(request, name, ctx, status_code=status_code)

    @router.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @router.get(PREFIX, include_in_schema=False)
    @router.get(PREFIX + "/", include_in_schema=False)
    def home(request: Request) -> Response:
        data = get_data(request)
        return page(request, "folders.html", folders=data.folders(),
                    recent=data.recent_runs(RECENT_RUNS), data_note=data.read_only_note)

    @router.get(PREFIX + "/folder", include_in_schema=False)
    def folder(request: Request, path: str = Query(max_length=4096)) -> Response:
        data = get_data(request)
        q = _runs_query(request, path)
        q.default_columns = not q.hparams and not q.metrics \
            and "cols" not in request.query_params
        result = data.runs(q)
        pages = max(1, -(-result.total // q.page_size))
        return page(request, "runs.html", q=q, result=result, pages=pages,
                    data_note=data.read_only_note, url=fmt.RunsUrl(q))

    @router.get(PREFIX + "/run/{uuid}", include_in_schema=False)
    async def run(request: Request, uuid: str) -> Response:
        # async for the server's stdout.log tail (a ranged read from its blob store); the
        # database reads and the rendering still run in worker threads
        data = await run_in_threadpool(get_data, request)
        detail = await run_in_threadpool(data.run, uuid)
        tail = await _stdout_tail(request, detail)
        groups = _chart_groups(detail.series)
        spec = {"runs": [{"uuid": detail.uuid, "name": detail.name}],
                "charts": [{"type": t, "key": k} for _g, items in groups for t, k, _s in items]}
        return await run_in_threadpool(
            page, request, "run.html", run=detail, stdout_tail=tail, groups=groups, spec=spec,
            hparams=fmt.flat_items(detail.hparams), data_note=data.read_only_note)

    @router.get(PREFIX + "/run/{uuid}/stdout.log", include_in_schema=False)
    async def stdout(request: Request, uuid: str) -> Response:
        data = await run_in_threadpool(get_data, request)
        detail = await run_in_threadpool(data.run, uuid)
        filename = f"{detail.alternative_name}-stdout.log"
        if detail.stdout_path is not None:
            return FileResponse(detail.stdout_path, media_type="text/plain; charset=utf-8",
                                filename=filename)
        if detail.stdout_blob is not None:
            sha, size = detail.stdout_blob
            blobs = request.app.state.blobs
            if await blobs.exists(sha):  # streamed from the directory or the bucket
                return StreamingResponse(
                    blobs.read(sha), media_type="text/plain; charset=utf-8",
                    headers={"Content-Length": str(size),
                             "Content-Disposition": _attachment(filename)})
        raise NotFound(f"run {uuid} has no stdout.log here")

    @router.get(PREFIX + "/compare", include_in_schema=False)
    def compare(request: Request) -> Response:
        data = get_data(request)
        uuids = list(dict.fromkeys(request.query_params.getlist("run")))[:12]
        if not uuids:
            raise BadRequest("no runs to compare. Try: tick two or more runs in a folder")
        runs = [data.run(u) for u in uuids]
        flats = [fmt.flat_dict(r.hparams) for r in runs]
        keys = sorted({k for f in flats for k in f})
        rows = []
        for key in keys:
            values = [f.get(key, fmt.MISSING) for f in flats]
            differs = len({fmt.jsonish(v) for v in values}) > 1
            rows.append((key, values, differs))
        series_keys: dict[tuple[str, str], None] = {}
        for r in runs:
            series_keys.update(dict.fromkeys(r.series))
        charts = sorted(series_keys, key=lambda tk: (TYPE_ORDER.get(tk[0], 9), tk[0], tk[1]))
        spec = {"runs": [{"uuid": r.uuid, "name": r.name} for r in runs],
                "charts": [{"type": t, "key": k} for t, k in charts]}
        return page(request, "compare.html", runs=runs, rows=rows, charts=charts, spec=spec,
                    differing=sum(1 for *_x, d in rows if d), data_note=data.read_only_note)

    @router.get(PREFIX + "/artifact/{uuid}", include_in_schema=False)
    def artifact(request: Request, uuid: str) -> Response:
        data = get_data(request)
        detail = data.artifact(uuid)
        total = sum(o.size_bytes or 0 for o in detail.objects)
        return page(request, "artifact.html", art=detail, total=total,
                    data_note=data.read_only_note)

    @router.get(PREFIX + "/artifact/{uuid}/file", include_in_schema=False)
    async def artifact_file(request: Request, uuid: str,
                            path: str = Query(max_length=4096)) -> Response:
        data = await run_in_threadpool(get_data, request)
        blob, size = await run_in_threadpool(data.blob, uuid, path)
        filename = path.rsplit("/", 1)[-1] or "file"
        if isinstance(blob, Path):
            return FileResponse(blob, media_type="application/octet-stream", filename=filename)
        # the server's blob store (a directory or an S3 bucket): streamed, never in memory
        blobs = request.app.state.blobs
        if not await blobs.exists(blob):
            raise NotFound(f"the bytes of {path} are not on this server")
        return StreamingResponse(
            blobs.read(blob), media_type="application/octet-stream",
            headers={"Content-Length": str(size),
                     "Content-Disposition": _attachment(filename)})

    @router.get(PREFIX + "/api/series", include_in_schema=False)
    def series(request: Request, run: str = Query(max_length=64),
               type: str = Query(max_length=256), key: str = Query(max_length=256),
               lo: str | None = None, hi: str | None = None, points: str | None = None):
        data = get_data(request)
        got = data.series(run, type, key, _int(lo, "lo"), _int(hi, "hi"),
                          _int(points, "points") or 1000)
        return JSONResponse(got)

    return router, page


def _attachment(filename: str) -> str:
    """A Content-Disposition for any file name (RFC 6266 ``filename*``, as FileResponse)."""
    return f"attachment; filename*=utf-8''{quote(filename)}"


def _runs_query(request: Request, folder: str) -> RunsQuery:
    params = request.query_params
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status={status!r} is not one of {', '.join(STATUSES)}. "
                         "Try: status=Complete")
    try:
        metrics = [MetricRef.parse(m) for m in params.getlist("m") if m]
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    sort = params.get("sort") or "start"
    if sort.startswith(("last:", "best:")):
        try:
            MetricRef.parse(sort.partition(":")[2])
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    elif not (sort in ("name", "status", "start") or sort.startswith("h:")):
        raise BadRequest(f"sort={sort!r} is not a column. Try: sort=start")
    page_size = _int(params.get("size"), "size") or 50
    if page_size not in PAGE_SIZES:
        raise BadRequest(f"size={page_size} is not one of {PAGE_SIZES}. Try: size=50")
    return RunsQuery(folder=folder, status=status, label=params.get("label") or None,
                     name=(params.get("name") or "").strip()[:200] or None, sort=sort,
                     desc=params.get("dir", "desc") != "asc",
                     page=max(1, _int(params.get("page"), "page") or 1), page_size=page_size,
                     hparams=[h for h in params.getlist("h") if h][:20], metrics=metrics[:8])


def _chart_groups(series) -> list[tuple[str, list]]:
    groups: dict[str, list] = {}
    for (t, k), s in series.items():
        groups.setdefault(fmt.type_label(t), []).append((t, k, s))
    return sorted(groups.items(), key=lambda g: (TYPE_ORDER.get(g[0], 9), g[0]))


def _tail(path: Path, limit: int) -> tuple[str, bool]:
    """The last ``limit`` bytes of a file as text (cut at a line start), and whether it was
    cut."""
    size = path.stat().st_size
    with path.open("rb") as f:
        if size > limit:
            f.seek(size - limit)
        data = f.read(limit)
    return _tail_text(data, size > limit)


def _tail_text(data: bytes, cut: bool) -> tuple[str, bool]:
    if cut and b"\n" in data:
        data = data[data.index(b"\n") + 1:]
    return data.decode("utf-8", errors="replace"), cut


async def _stdout_tail(request: Request, detail: RunDetail) -> tuple[str, bool] | None:
    """The tail of the run's stdout.log: a local file, or a blob in the server's blob store
    read from size - limit on (a ranged read: a huge log is never fetched whole)."""
    if detail.stdout_path is not None:
        return await run_in_threadpool(_tail, detail.stdout_path, STDOUT_TAIL_BYTES)
    if detail.stdout_blob is None:
        return None
    sha, size = detail.stdout_blob
    start = max(0, size - STDOUT_TAIL_BYTES)
    chunks: list[bytes] = []
    got = 0
    try:
        async with contextlib.aclosing(request.app.state.blobs.read(sha, start)) as stream:
            async for chunk in stream:
                chunks.append(chunk)
                got += len(chunk)
                if got >= STDOUT_TAIL_BYTES:
                    break
    except FileNotFoundError:
        return None  # recorded, but its bytes are not in this blob store
    return _tail_text(b"".join(chunks)[:STDOUT_TAIL_BYTES], start > 0)


# Defense in depth behind the escaping: no inline or foreign script can run on a UI page.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                               "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def install(app: FastAPI, router: APIRouter) -> None:
    """Add the router, static files, security headers and the error pages to an app."""
    templates = make_templates()
    app.include_router(router)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        if is_ui_path(request.url.path):
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
        return response

    app.mount(PREFIX + "/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")

    def error_page(request: Request, status: int, title: str, message: str) -> Response:
        if request.url.path.startswith(PREFIX + "/api/"):
            return JSONResponse({"detail": message, "code": "not_found" if status == 404
                                 else "bad_request"}, status_code=status)
        ctx = {"title": title, "message": message, "login_enabled": False, "user": None,
               "csrf": "", "data_note": None}
        return templates.TemplateResponse(request, "error.html", ctx, status_code=status)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return error_page(request, 404, "Not found", str(exc))

    @app.exception_handler(BadRequest)
    async def _bad_request(request: Request, exc: BadRequest):
        return error_page(request, 400, "Bad request", str(exc))

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, exc: LoginRequired):
        if request.url.path.startswith(PREFIX + "/api/"):
            return JSONResponse({"detail": "log in first", "code": "unauthorized"},
                                status_code=401)
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        from urllib.parse import quote

        return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}",
                                status_code=303)


__all__ = ["build_router", "install", "is_ui_path", "LoginRequired"]
