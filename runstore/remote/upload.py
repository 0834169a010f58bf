"""Uploading one run or artifact: the idempotent steps of the sync protocol.

ensure folder -> claim -> blobs + artifacts -> metric chunks from the server's count ->
lineage -> stdout.log (runfiles.py) -> finalize -> (locally, in one transaction) mark synced +
a remote history record.
Every step can be repeated: a retry after a lost answer, a killed client or a killed server
never makes a second copy, and resumes where the server stands.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from runstore import rules, syncstate
from runstore.errors import PermanentRemoteError
from runstore.protocol import METRIC_CHUNK_ROWS, encode_metric_row
from runstore.remote.blobs import LocalDataError, Progress, Tally, push_blob
from runstore.remote.client import Client
from runstore.remote.runfiles import push_stdout
from runstore.rows import remote_history
from runstore.rules import check_conflict_strategy
from runstore.store import Store
from runstore.timeutil import now_iso


class FolderNotFoundError(PermanentRemoteError, ValueError):
    """The folder does not exist and make_folder is false (t9k raises ValueError)."""


class DivergedError(PermanentRemoteError):
    """The server's copy of a run is not an earlier state of the local one."""


class StoredValueError(LocalDataError):
    """A value already in the store breaks the rules the server applies (written by an older
    SDK or by hand): uploading cannot succeed, so it is refused before anything is sent, and
    syncd marks the run failed (never an endless retry). `runstore doctor` lists them all."""

    def __init__(self, kind: str, alt: str, field: str, message: str) -> None:
        what = message.split(". Try: ")[0]
        super().__init__(f"{kind} {alt!r} cannot be uploaded: its {field} breaks the "
                         f"server's rules: {what}. Try: `runstore doctor` says how to fix it, "
                         "then `syncd retry` (or upload again)")
        self.field = field


def check_stored(kind: str, row: Any) -> None:
    """StoredValueError naming the first column of an artifacts row the server refuses."""
    problems = rules.artifact_row_problems(row)
    if problems:
        field, message = problems[0]
        raise StoredValueError(kind, row["alternative_name"], field, message)


@dataclass(frozen=True)
class _State:
    """What identifies a run's state for syncing: rows only grow, status only changes within
    a generation from Running to an end (load_run starts the next generation), and the
    metadata a user may still edit after the end."""
    generation: int
    status: str
    metric_count: int
    labels: str
    description: str
    hparams: str

    COLUMNS = "generation, status, metric_count, labels, description, hparams"

    @classmethod
    def of(cls, run: Any, metric_count: int) -> _State:
        return cls(run["generation"], run["status"], metric_count, run["labels"],
                   run["description"], run["hparams"])


@dataclass(frozen=True)
class UploadResult:
    run_uuid: str            # the uploaded entity's UUID (a run's, or an artifact's)
    outcome: str             # 'created' | 'resumed' | 'skipped' | 'renamed' | 'replaced'
    remote_path: str
    metrics_sent: int
    blobs_sent: int
    bytes_sent: int
    complete: bool
    kind: str = "Run"


# -- folders ---------------------------------------------------------------------------------
def ensure_folder(client: Client, folder: str, make_folder: bool) -> str:
    """Create the remote folder if allowed; returns its absolute path."""
    path = client.folder_path(folder)
    try:
        client.request("POST", "/folders", json={"path": path, "make_parents": make_folder})
    except PermanentRemoteError as exc:
        if exc.status_code == 404:
            raise FolderNotFoundError(f"Folder does not exist: {path}. Try: make_folder=True "
                                      "(runstore upload -m)", 404) from exc
        raise
    return path


def _artifact_row(store: Store, artifact_uuid: str):
    rows = store.read("SELECT * FROM artifacts WHERE uuid = ?", (artifact_uuid,))
    if not rows:
        raise LocalDataError(f"no artifact {artifact_uuid} in the local store {store.home}")
    return rows[0]


def push_artifact(client: Client, store: Store, artifact_uuid: str, folder_path: str,
                  strategy: str, tally: Tally) -> dict[str, Any]:
    """Blobs the server lacks, then the artifact claim (metadata + objects)."""
    art = _artifact_row(store, artifact_uuid)
    check_stored("artifact", art)
    objects = [dict(r) for r in store.read(
        "SELECT path, kind, sha256, size_bytes, uri FROM artifact_objects WHERE artifact_id = ? "
        "ORDER BY path", (art["id"],))]
    for obj in objects:
        try:
            rules.check_object_path(obj["path"])
            if obj["uri"] is not None:
                rules.check_uri(obj["uri"])
        except rules.InvalidInputError as exc:
            field = "object path" if "object path" in str(exc) else "reference uri"
            raise StoredValueError("artifact", art["alternative_name"], field,
                                   str(exc)) from None
    sizes = {o["sha256"]: o["size_bytes"] for o in objects if o["kind"] == "file"}
    if sizes:
        missing = client.request("POST", "/blobs/missing", json={"sha256": sorted(sizes)})
        missing = missing["missing"]
        tally.add_total(sum(sizes[s] for s in missing))
        for sha in missing:
            if push_blob(client, store, sha, sizes[sha], tally):
                tally.blobs_sent += 1
    record = {"action": "upload", "timestamp": now_iso(), "host": client.host,
              "path": f"{folder_path}/{art['name']}", "id": art["uuid"]}
    return client.request("POST", "/artifacts/claim", json={
        "uuid": art["uuid"], "name": art["name"], "alternative_name": art["alternative_name"],
        "folder": folder_path, "conflict_strategy": strategy,
        "metadata": {"labels": json.loads(art["labels"]), "description": art["description"],
                     "created_timestamp": art["created_timestamp"],
                     "remote": remote_history(store, "artifact", art["uuid"]) + [record]},
        "objects": objects})


# -- runs ------------------------------------------------------------------------------------
def _run_row(store: Store, run_uuid: str):
    rows = store.read("SELECT * FROM runs WHERE uuid = ?", (run_uuid,))
    if not rows:
        raise LocalDataError(f"no run {run_uuid} in the local store {store.home}")
    return rows[0]


def _run_metadata(store: Store, run, record: dict[str, Any] | None) -> dict[str, Any]:
    history = remote_history(store, "run", run["uuid"]) + ([record] if record else [])
    return {"labels": json.loads(run["labels"]), "description": run["description"],
            "status": run["status"], "start_timestamp": run["start_timestamp"],
            "end_timestamp": run["end_timestamp"], "hparams": json.loads(run["hparams"]),
            "platform": json.loads(run["platform"]), "git": json.loads(run["git"]),
            "remote": history, "generation": run["generation"]}


def _resend(body: bytes) -> Callable[[], bytes]:
    """A body factory that sends the same bytes on every attempt."""
    return lambda: body


def _metric_body(offset: int, rows: list[tuple]) -> bytes:
    wire = [encode_metric_row(r) for r in rows]
    return json.dumps({"offset": offset, "rows": wire}, separators=(",", ":"),
                      allow_nan=False).encode()


def check_server_copy(client: Client, store: Store, run: Any,
                      local_count: int) -> dict[str, Any] | None:
    """Compare the server's copy of this run (if any) with the local one.

    Returns None to go on uploading, or the server's run when it already holds every local
    row and more: a store restored from a backup or snapshot ("power-loss prefix") is behind,
    and its older metadata must not overwrite the server's. Raises DivergedError when the two
    hold different rows at the same sequence number (a restored store that logged again):
    rows are matched by offset, so uploading would silently keep two histories; when the
    server holds more rows but this store's copy is the newer state (changed here after it
    fell behind); or when the server holds a newer state that is not this store's: neither
    side may be dropped silently.
    """
    try:
        remote = client.request("GET", f"/runs/{run['uuid']}")
    except PermanentRemoteError as exc:
        if exc.status_code == 404:
            return None  # the server has never seen this run
        raise
    server_count = remote["metric_count"]
    shared = min(server_count, local_count)
    if shared > 0:
        page = client.request("GET", f"/runs/{run['uuid']}/metrics",
                              params={"offset": shared - 1, "limit": 1})
        mine = store.connection().execute(
            "SELECT type, key, step, epoch, value, timestamp FROM metrics WHERE run_id = ? "
            "AND seq = ?", (run["id"], shared - 1)).fetchone()
        if page["rows"] != [encode_metric_row(tuple(mine))]:
            raise DivergedError(
                f"run {run['alternative_name']} ({run['uuid']}): metric row {shared - 1} on the "
                "server differs from this store's; the store was restored from an older copy "
                "and logged different rows since. The server's copy was left unchanged. Try: "
                "keep the server's copy (runstore ls --remote), or log the rest as a new run.",
                409)
    if server_count <= local_count:
        # Nothing sent yet: a newer state from elsewhere is refused before any row goes up.
        _newer_on_server(store, run, remote["metadata"]["generation"])
        return None
    if run["generation"] > remote["metadata"]["generation"]:
        raise DivergedError(
            f"run {run['alternative_name']} ({run['uuid']}): the server holds "
            f"{server_count} metric rows, this store {local_count}, and this store changed the "
            "run since (load_run() or an edit after its end): uploading would drop the "
            "server's rows or this change. The server's copy was left unchanged. Try: make the "
            "change on a fresh copy (load_run('/<user>/<folder>/<run>') where the run is not "
            "in the store).", 409)
    return remote


def _chunk_body(store: Store, run: Any, run_uuid: str, offset: int, end: int,
                good: set[str]) -> tuple[bytes, int]:
    """The request body of rows offset.. (at most one chunk, before end) and its row count."""
    rows = store.connection().execute(
        "SELECT type, key, step, epoch, value, timestamp FROM metrics "
        "WHERE run_id = ? AND seq >= ? AND seq < ? ORDER BY seq LIMIT ?",
        (run["id"], offset, end, METRIC_CHUNK_ROWS)).fetchall()
    if not rows:
        raise LocalDataError(f"run {run_uuid}: metric rows from seq {offset} are "
                             "missing locally")
    _check_metric_text(run, rows, good)
    return _metric_body(offset, rows), len(rows)


def push_metrics(client: Client, store: Store, run, run_uuid: str, start: int, end: int,
                 tally: Tally) -> int:
    """Rows start..end-1 in chunks; returns the server's count after the last chunk.

    While a chunk is on the wire, a helper thread reads and encodes the next one (the one at
    offset + rows, what the server almost always acknowledges), so the client's share of the
    time overlaps the server's instead of adding to it. Only the body is prepared ahead: which
    offset is sent next is decided by the acknowledgement exactly as without it, and a body
    prepared for another offset is dropped.
    """
    server_count = start
    gaps = 0
    good: set[str] = set()
    ahead: tuple[int, Future] | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="runstore-chunks") as pool:
        try:
            while server_count < end:
                if ahead is not None and ahead[0] == server_count:
                    body, n = ahead[1].result()
                else:
                    body, n = _chunk_body(store, run, run_uuid, server_count, end, good)
                ahead = None
                if server_count + n < end:
                    ahead = (server_count + n, pool.submit(
                        _chunk_body, store, run, run_uuid, server_count + n, end, good))
                try:
                    ack = client.request("PUT", f"/runs/{run_uuid}/metrics",
                                         content=_resend(body),
                                         headers={"Content-Type": "application/json"})
                except PermanentRemoteError as exc:
                    if exc.status_code != 409 or gaps >= 3:
                        raise
                    gaps += 1  # the server holds fewer rows than we thought: ask it, go on
                    server_count = client.request("GET", f"/runs/{run_uuid}")["metric_count"]
                    continue
                tally.metrics_sent += ack["inserted"]
                tally.advance(ack["metric_count"] - server_count)
                server_count = ack["metric_count"]
        finally:
            pool.submit(store.close)  # the helper thread's own connection to the store
    return server_count


def _check_metric_text(run: Any, rows: list, good: set[str]) -> None:
    """StoredValueError for the first metric type or key of rows the server would refuse."""
    for type_, key, *_ in rows:
        for field, text in (("metric type", type_), ("metric key", key)):
            if text not in good:
                if not rules.metric_text_ok(text):
                    check = (rules.check_metric_type if field == "metric type"
                             else rules.check_metric_key)
                    try:
                        check(text)
                    except rules.InvalidInputError as exc:
                        raise StoredValueError("run", run["alternative_name"], field,
                                               str(exc)) from None
                good.add(text)


def _lineage(store: Store, run) -> dict[str, list]:
    out: dict[str, list] = {"input": [], "output": []}
    for r in store.read(
            "SELECT a.direction, a.kind, a.entry, ar.uuid AS artifact_uuid FROM associations a "
            "LEFT JOIN artifacts ar ON ar.id = a.artifact_id WHERE a.run_id = ? "
            "ORDER BY a.direction, a.position", (run["id"],)):
        out[r["direction"]].append({"kind": r["kind"], "artifact_uuid": r["artifact_uuid"],
                                    "entry": json.loads(r["entry"])})
    return out


def upload_run(store: Store, run_uuid: str, client: Client, *, folder: str | None = None,
               make_folder: bool | None = None, conflict_strategy: str | None = None,
               progress: Progress | None = None) -> UploadResult:
    """Upload one run (metadata, metrics, its artifacts, lineage); safe to repeat."""
    run = _run_row(store, run_uuid)
    # The stored columns the server will see (a target given here overrides the stored one).
    overridden = {"folder"} if folder is not None else set()
    if conflict_strategy is not None:
        overridden.add("conflict_strategy")
    problems = [p for p in rules.run_row_problems(run) if p[0] not in overridden]
    if problems:
        raise StoredValueError("run", run["alternative_name"], *problems[0])
    strategy = check_conflict_strategy(conflict_strategy or run["conflict_strategy"])
    folder = run["folder"] if folder is None else folder
    try:
        rules.check_folder(folder)
    except rules.InvalidInputError as exc:  # syncd passes the run's own target as folder=
        raise StoredValueError("run", run["alternative_name"], "folder", str(exc)) from None
    make_folder = bool(run["make_folder"]) if make_folder is None else make_folder
    finished = run["status"] in ("Complete", "Error")
    # Rows that exist now; a Running run may log more, they go up next time.
    local_count = store.read("SELECT COALESCE(MAX(seq) + 1, 0) FROM metrics WHERE run_id = ?",
                             (run["id"],))[0][0]
    # The state this upload sends. The run is marked synced only if it is still in exactly
    # this state when the server has acknowledged it (see _mark_done).
    seen = _State.of(run, local_count)
    tally = Tally(progress)

    folder_path = ensure_folder(client, folder, make_folder)
    ahead = check_server_copy(client, store, run, local_count)
    if ahead is not None:  # the server holds all of this (restored) store's rows, and more
        marked = finished and _mark_done(store, run_uuid, ahead["path"], seen, client,
                                         history=False)
        return UploadResult(run_uuid, "resumed", ahead["path"], 0, 0, 0,
                            bool(ahead["complete"]) and marked)
    record = {"action": "upload", "timestamp": now_iso(), "host": client.host,
              "path": f"{folder_path}/{run['name']}", "id": run_uuid}
    claim = client.request("POST", "/runs/claim", json={
        "uuid": run_uuid, "name": run["name"], "alternative_name": run["alternative_name"],
        "folder": folder_path, "conflict_strategy": strategy,
        "metadata": _run_metadata(store, run, record)})
    if claim["outcome"] == "skipped":
        marked = finished and _mark_done(store, run_uuid, claim["remote_path"], seen, client,
                                         history=False, acked=0)
        return UploadResult(run_uuid, "skipped", claim["remote_path"], 0, 0, 0, marked)

    tally.add_total(max(0, local_count - claim["metric_count"]))
    lineage = _lineage(store, run)
    artifact_uuids = {e["artifact_uuid"] for d in lineage.values() for e in d
                      if e["artifact_uuid"]}
    for art_uuid in sorted(artifact_uuids):
        # A run's artifacts go into its folder; a name clash never blocks the run ('new').
        push_artifact(client, store, art_uuid, folder_path, "new", tally)

    acked = push_metrics(client, store, run, run_uuid, claim["metric_count"], local_count,
                         tally)
    client.request("PUT", f"/runs/{run_uuid}/lineage", json={
        **lineage, "generation": run["generation"],
        "status": run["status"] if finished else "Running"})
    # stdout.log as it is now (a Running run's grows: each upload sends the newer copy), before
    # finalize, so a run complete on the server has its log there too.
    push_stdout(client, run, tally, resumed=claim["outcome"] == "resumed")
    # Re-read for what may change within one generation while we uploaded (hparams,
    # description, a Running run's end). Only what was sent is final: a run that was Running
    # when this upload began stays Running on the server. A run loaded back meanwhile
    # (load_run: a newer generation) is finalized as the state we read and sent; its new
    # generation goes up with the next upload.
    again = _run_row(store, run_uuid)
    if again["generation"] == run["generation"]:
        run = again
    metadata = _run_metadata(store, run, record)
    if run["status"] != "Running" and not finished:
        metadata["status"], metadata["end_timestamp"] = "Running", None
    done = client.request("POST", f"/runs/{run_uuid}/finalize",
                          json={"metric_count": acked, "metadata": metadata})
    # What went up: the metadata of `run`, and the rows the server acknowledged (all of the
    # ended run's, unless it was loaded back and logged more: then not marked, see below).
    sent = _State.of(run, acked)
    if finished and done.get("generation", sent.generation) > sent.generation:
        _newer_on_server(store, run, done["generation"])  # it moved on while we uploaded
    marked = finished and _mark_done(store, run_uuid, done["remote_path"], sent, client,
                                     history=True)
    # Complete only if the server's copy is final and this store agrees (marked synced): a
    # run that was Running when this upload began went up partially, whatever the server
    # holds now, and a run that changed while we uploaded needs another upload.
    return UploadResult(run_uuid, claim["outcome"], done["remote_path"], tally.metrics_sent,
                        tally.blobs_sent, tally.bytes_sent, marked and bool(done["complete"]))


def _newer_on_server(store: Store, run: Any, server_generation: int) -> None:
    """Refuse if the server holds a newer state of the run than this store has ever had.

    Generations come from this store's own changes, so a newer one on the server came from
    elsewhere: the run was changed on another machine (or this store was restored from an
    older copy). Applying ours would drop that change silently, and keeping ours unsent would
    drop this store's: refuse, with the reason. If this store has moved on as far (a newer
    upload of its own got there first), the newer state is ours: go on.
    """
    now = store.read("SELECT generation FROM runs WHERE uuid = ?", (run["uuid"],))[0][0]
    if server_generation > now:
        raise DivergedError(
            f"run {run['alternative_name']} ({run['uuid']}): the server holds a newer state of "
            f"it (generation {server_generation}, this store {now}), changed elsewhere; this "
            "store's state of it was not applied, the server keeps its own. Try: make the "
            "change on a fresh copy (load_run('/<user>/<folder>/<run>') where the run is not "
            "in the store).", 409)


def _mark_done(store: Store, run_uuid: str, remote_path: str, sent: _State, client: Client,
               *, history: bool, acked: int | None = None) -> bool:
    """Mark the run synced if it is still exactly in the state the server acknowledged.

    Checked inside the write transaction: the run may have been loaded back (load_run) and
    logged more, or ended again, or had its description changed, while we uploaded. Then the
    server's copy is not all of it and the run stays pending (the end or the edit made it
    pending again). Returns whether it was marked.
    """
    with store.write() as conn:
        now = conn.execute(f"SELECT {_State.COLUMNS} FROM runs WHERE uuid = ?",
                           (run_uuid,)).fetchone()
        if now is None or _State(*now) != sent or sent.status == "Running":
            return False
        syncstate.mark_synced(conn, run_uuid, remote_path,
                              sent.metric_count if acked is None else acked)
        if history:
            conn.execute(
                "INSERT INTO remote_history (entity, entity_uuid, action, timestamp, host, path,"
                " remote_id) VALUES ('run', ?, 'upload', ?, ?, ?, ?)",
                (run_uuid, now_iso(), client.host, remote_path, run_uuid))
    return True


def upload_artifact(store: Store, artifact_uuid: str, client: Client, *,
                    folder: str | None = None, make_folder: bool | None = None,
                    conflict_strategy: str | None = None,
                    progress: Progress | None = None) -> UploadResult:
    """Upload one artifact (missing blobs, then metadata + objects); safe to repeat."""
    strategy = check_conflict_strategy(conflict_strategy or "new")
    _artifact_row(store, artifact_uuid)
    tally = Tally(progress)
    folder_path = ensure_folder(client, "default" if folder is None else folder,
                                bool(make_folder))
    claim = push_artifact(client, store, artifact_uuid, folder_path, strategy, tally)
    if claim["outcome"] != "skipped":
        with store.write() as conn:
            conn.execute(
                "INSERT INTO remote_history (entity, entity_uuid, action, timestamp, host, path,"
                " remote_id) VALUES ('artifact', ?, 'upload', ?, ?, ?, ?)",
                (artifact_uuid, now_iso(), client.host, claim["remote_path"], artifact_uuid))
    return UploadResult(artifact_uuid, claim["outcome"], claim["remote_path"], 0,
                        tally.blobs_sent, tally.bytes_sent, True, kind="Artifact")
