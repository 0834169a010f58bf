"""Writing a bundle: a consistent snapshot of the selected runs, committed last.

The rows are copied out of ONE read transaction on the live database (WAL: loggers go on
writing meanwhile) into a fresh SQLite file, never by copying the live file. Watermarks
(how far each run went out) are marked in the store only after COMMIT is durable, so a
failed export (disk full, a kill) marks nothing and the next export carries the same rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from runstore.bundle import stdout
from runstore.bundle.format import (
    COMMIT,
    MANIFEST,
    RECORDS,
    BundleError,
    Manifest,
    RunEntry,
    fsync_path,
    sha256_file,
)
from runstore.rows import resolve_run
from runstore.schema import MIGRATIONS
from runstore.store import BUSY_TIMEOUT_MS, Store, _split_sql, hostname
from runstore.timeutil import now_iso

MODES = ("since-last", "all", "runs")
# What of a run, besides its rows, makes it worth carrying again when it changes.
_STATE_COLUMNS = ("name", "labels", "description", "status", "start_timestamp", "end_timestamp",
                  "hparams", "platform", "git", "folder", "make_folder", "conflict_strategy",
                  "auto_upload", "generation")


@dataclass
class ExportResult:
    path: Path
    manifest: Manifest
    metric_rows: int
    blobs: int
    bytes: int
    runs: list[RunEntry] = field(default_factory=list)


def store_id(store: Store) -> str:
    """The stable id of a store (made by schema migration 3)."""
    return str(store.read("SELECT value FROM store_meta WHERE key = 'store_id'")[0][0])


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, released when the process dies (no stale lock files)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _create_records(path: Path) -> None:
    """An empty records.sqlite with the store's schema but no triggers (nothing fires)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        for script in MIGRATIONS:
            for statement in _split_sql(script):
                conn.execute(statement)
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")\
                .fetchall():
            conn.execute(f'DROP TRIGGER "{name}"')
        conn.execute("DELETE FROM store_meta")
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        conn.execute("COMMIT")
    finally:
        conn.close()


def _state(conn: sqlite3.Connection, run: sqlite3.Row) -> str:
    """A fingerprint of a run's metadata and lineage (not its rows, counted apart)."""
    parts = [run[c] for c in _STATE_COLUMNS]
    logged = stdout.stdout_size(run["local_dir"])
    if logged:  # a log that grew is carried again (no part for none: older states hold)
        parts.append(["stdout.log", logged])
    parts.append(conn.execute(
        "SELECT json_group_array(json_array(direction, position, kind, entry)) FROM "
        "(SELECT * FROM main.associations WHERE run_id = ? ORDER BY direction, position)",
        (run["id"],)).fetchone()[0])
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def _columns(conn: sqlite3.Connection, table: str) -> str:
    return ", ".join(f'"{r[1]}"' for r in conn.execute(f"PRAGMA main.table_info({table})"))


def _copy_blob(source: Path, target: Path) -> int:
    """Copy a store blob into the bundle (kernel copy, then fsync); returns its size.

    Not hashed again here: its name is its sha256, checked when it entered the store, and
    the importer checks every byte against the manifest (a blob damaged on this disk since
    is refused there, named).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def export_bundle(store: Store, out_dir: str | os.PathLike[str], *, mode: str = "since-last",
                  runs: Sequence[str] = ()) -> ExportResult | None:
    """Write a bundle of what changed since the last export (or all, or the named runs).

    Returns None when there is nothing to carry (nothing written, no sequence number used).
    """
    if mode not in MODES:
        raise ValueError(f"export mode {mode!r} is not one of {', '.join(MODES)}")
    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"cannot create the bundle directory {str(out)!r}: {exc.strerror}. "
                          "Try: a writable directory (the transfer disk's mount point).") from exc
    # RUN references by the project's one resolver (UUID, alternative name, directory,
    # unique name, UUID prefix); runs are never deleted, so the snapshot still holds them.
    uuids = [resolve_run(store, ref)["uuid"] for ref in runs] if mode == "runs" else []
    with _file_lock(store.home / "export.lock"):
        return _export_locked(store, out, mode, uuids)


def _export_locked(store: Store, out: Path, mode: str, names: Sequence[str]
                   ) -> ExportResult | None:
    bundle_id = str(uuidlib.uuid4())
    partial = out / f".partial-{bundle_id}"
    partial.mkdir()
    try:
        result = _write(store, partial, out, bundle_id, mode, names)
    except sqlite3.OperationalError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise BundleError(
            f"writing the bundle in {str(out)!r} failed ({exc}: disk full or a file-size "
            "limit?); no COMMIT was written and nothing was marked exported. Try: free space "
            "there, or export to a disk with room.") from exc
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise BundleError(
            f"writing the bundle in {str(out)!r} failed ({exc.strerror or exc}); no COMMIT was "
            "written and nothing was marked exported. Try: free space there, or export to a "
            "disk with room.") from exc
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if result is None:  # nothing to carry
        shutil.rmtree(partial, ignore_errors=True)
    return result


def _write(store: Store, partial: Path, out: Path, bundle_id: str, mode: str,
           names: Sequence[str]) -> ExportResult | None:
    records = partial / RECORDS
    files: dict[str, dict[str, object]] = {}
    total = 0

    def blob(sha: str) -> Path:
        return partial / "blobs" / sha[:2] / sha

    # Copies, hashing and SQLite's page copy release the GIL: on a full export the blobs in
    # use now are copied while the snapshot is taken (the snapshot then says which go).
    with ThreadPoolExecutor(max_workers=2) as pool:
        early: dict[str, Future[int]] = {}
        conn = sqlite3.connect(store.db_path, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if _everything_goes(conn, mode):
                for (sha,) in conn.execute(
                        "SELECT DISTINCT o.sha256 FROM artifact_objects o JOIN associations a "
                        "ON a.artifact_id = o.artifact_id WHERE o.sha256 IS NOT NULL"):
                    early[sha] = pool.submit(_copy_blob, store.blob_path(sha), blob(sha))
                snap = _snapshot_by_backup(conn, records)
            else:
                snap = _snapshot_by_copy(conn, records, mode, names)
        finally:
            conn.close()
        if snap is None:
            return None  # the caller removes the partial directory
        source_store, sequence, entries, marks, blobs = snap
        hashed = pool.submit(_fsync_and_hash, records)
        for sha in sorted(blobs):
            size = early.pop(sha).result() if sha in early else \
                _copy_blob(store.blob_path(sha), blob(sha))
            files[f"blobs/{sha[:2]}/{sha}"] = {"sha256": sha, "size": size}
            total += size
        for sha, copying in early.items():  # in use a moment ago, not in the snapshot
            copying.result()
            blob(sha).unlink()
        entries, logs = stdout.carry(store, partial, entries)
        for name, (log_sha, log_size) in logs.items():
            if name not in files:
                files[name] = {"sha256": log_sha, "size": log_size}
                total += log_size
        sha, size = hashed.result()
    files[RECORDS] = {"sha256": sha, "size": size}
    total += size
    manifest = Manifest(bundle_id=bundle_id, source_store=source_store, source_host=hostname(),
                        sequence=sequence, created_at=now_iso(),
                        schema_version=len(MIGRATIONS), mode=mode, runs=tuple(entries),
                        files=files)
    raw = json.dumps(manifest.to_json(), indent=1, sort_keys=True).encode()
    _write_durably(partial / MANIFEST, raw)
    for d in {p.parent for p in partial.rglob("*") if p.is_file()}:
        fsync_path(d)
    # The commit point: COMMIT (the manifest's hash) is renamed into place, then the whole
    # directory gets its final name; readers ignore dot-names and bundles without COMMIT.
    _write_durably(partial / (COMMIT + ".tmp"),
                   json.dumps({"manifest_sha256": hashlib.sha256(raw).hexdigest()}).encode())
    os.replace(partial / (COMMIT + ".tmp"), partial / COMMIT)
    fsync_path(partial)
    final = out / manifest.name
    os.replace(partial, final)
    fsync_path(out)

    rows = sum(e.rows_to - e.rows_from for e in entries)
    with store.write() as wconn:
        wconn.execute("INSERT INTO bundle_exports (sequence, bundle_id, created_at, path, "
                      "run_count, metric_rows) VALUES (?, ?, ?, ?, ?, ?)",
                      (sequence, bundle_id, manifest.created_at, str(final), len(entries), rows))
        wconn.executemany(
            "INSERT INTO bundle_watermarks (run_id, rows_exported, state, sequence) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET "
            "rows_exported = max(rows_exported, excluded.rows_exported), "
            "state = excluded.state, sequence = excluded.sequence",
            [(run_id, rows_to, state, sequence) for run_id, rows_to, state in marks])
        wconn.executemany("INSERT OR IGNORE INTO bundle_blobs_exported (sha256, sequence) "
                          "VALUES (?, ?)", [(s, sequence) for s in blobs])
    return ExportResult(final, manifest, rows, len(blobs), total, list(entries))


def _everything_goes(conn: sqlite3.Connection, mode: str) -> bool:
    """Whether every run goes whole (--all, or a store's first export): then the snapshot is
    a page copy of the database (SQLite's backup API, several times faster than copying
    rows). The export lock keeps the watermarks from changing between here and there."""
    if mode == "all":
        return True
    return mode == "since-last" and conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM bundle_watermarks) AND NOT EXISTS "
        "(SELECT 1 FROM bundle_blobs_exported)").fetchone()[0] == 1


def _snapshot_by_copy(conn: sqlite3.Connection, records: Path, mode: str,
                      names: Sequence[str]):
    """Rows copied from one read transaction of the live store into a fresh records file."""
    _create_records(records)
    conn.execute("ATTACH DATABASE ? AS b", (str(records),))
    conn.execute("BEGIN")  # one read snapshot of the live store for everything below
    snap = _snapshot(conn, mode, names)
    conn.execute("COMMIT" if snap is not None else "ROLLBACK")
    conn.execute("DETACH DATABASE b")
    return snap


def _snapshot_by_backup(conn: sqlite3.Connection, records: Path):
    """The whole database copied page by page in one step (one consistent snapshot, taken
    while loggers go on), then trimmed to what a bundle holds: no triggers, no bookkeeping,
    only the artifacts that runs use."""
    copy = sqlite3.connect(records, isolation_level=None)
    copy.row_factory = sqlite3.Row
    try:
        copy.execute("PRAGMA synchronous = OFF")  # fsynced once, before COMMIT is written
        conn.backup(copy)  # pages=-1: all at once, inside one read transaction
        copy.execute("PRAGMA journal_mode = DELETE")
        copy.execute("BEGIN")
        source_store = copy.execute("SELECT value FROM store_meta WHERE key = 'store_id'"
                                    ).fetchone()[0]
        sequence = copy.execute("SELECT COALESCE(MAX(sequence), 0) + 1 FROM bundle_exports"
                                ).fetchone()[0]
        chosen, entries, marks = _select(copy, "all", ())
        if not chosen:
            copy.execute("ROLLBACK")
            return None
        for (name,) in copy.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                                    ).fetchall():
            copy.execute(f'DROP TRIGGER "{name}"')
        for table in ("store_meta", "bundle_exports", "bundle_watermarks",
                      "bundle_blobs_exported", "bundle_imports", "bundle_run_origin"):
            copy.execute(f"DELETE FROM {table}")
        used = "SELECT artifact_id FROM associations WHERE artifact_id IS NOT NULL"
        copy.execute(f"DELETE FROM artifact_objects WHERE artifact_id NOT IN ({used})")
        copy.execute(f"DELETE FROM artifacts WHERE id NOT IN ({used})")
        copy.execute("DELETE FROM blobs WHERE sha256 NOT IN (SELECT sha256 FROM "
                     "artifact_objects WHERE sha256 IS NOT NULL)")
        copy.execute("DELETE FROM remote_history WHERE entity_uuid NOT IN (SELECT uuid FROM "
                     "runs UNION SELECT uuid FROM artifacts)")
        shas = {r[0] for r in copy.execute("SELECT sha256 FROM blobs")}
        copy.execute("COMMIT")
    finally:
        copy.close()
    return source_store, sequence, entries, marks, shas


def _fsync_and_hash(path: Path) -> tuple[str, int]:
    fsync_path(path)
    return sha256_file(path)


def _write_durably(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _select(conn: sqlite3.Connection, mode: str, names: Sequence[str]
            ) -> tuple[list[tuple[int, int, int]], list[RunEntry], list[tuple[int, int, str]]]:
    """The runs to carry: (id, rows_from, rows_to), their manifest entries, new watermarks."""
    wanted = set(names) if mode == "runs" else None  # UUIDs (export_bundle resolved them)
    marks_now = {r["run_id"]: r for r in conn.execute("SELECT * FROM main.bundle_watermarks")}
    entries: list[RunEntry] = []
    marks: list[tuple[int, int, str]] = []
    chosen: list[tuple[int, int, int]] = []
    for run in conn.execute("SELECT * FROM main.runs ORDER BY id").fetchall():
        if wanted is not None and run["uuid"] not in wanted:
            continue
        count = conn.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM main.metrics "
                             "WHERE run_id = ?", (run["id"],)).fetchone()[0]
        state = _state(conn, run)
        start = 0
        if mode == "since-last" and run["id"] in marks_now:
            mark = marks_now[run["id"]]
            if mark["rows_exported"] >= count and mark["state"] == state:
                continue  # nothing new since it last went out
            start = min(mark["rows_exported"], count)
        chosen.append((run["id"], start, count))
        entries.append(RunEntry(run["uuid"], run["alternative_name"], run["generation"],
                                run["status"], start, count))
        marks.append((run["id"], count, state))
    return chosen, entries, marks


def pending_changes(store: Store) -> list[RunEntry]:
    """What ``export_bundle(mode='since-last')`` would carry now (nothing is written)."""
    conn = sqlite3.connect(store.db_path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("BEGIN")
        return _select(conn, "since-last", ())[1]
    finally:
        conn.close()


def _snapshot(conn: sqlite3.Connection, mode: str, names: Sequence[str]):
    """Inside the read transaction: choose what goes, copy its rows into the attached ``b``."""
    source_store = conn.execute("SELECT value FROM main.store_meta WHERE key = 'store_id'"
                                ).fetchone()[0]
    sequence = conn.execute("SELECT COALESCE(MAX(sequence), 0) + 1 FROM main.bundle_exports"
                            ).fetchone()[0]
    chosen, entries, marks = _select(conn, mode, names)
    if not chosen:
        return None
    ids = ",".join(str(c[0]) for c in chosen)
    conn.execute(f"INSERT INTO b.runs SELECT {_columns(conn, 'runs')} FROM main.runs "
                 f"WHERE id IN ({ids})")
    cols = _columns(conn, "metrics")
    for run_id, start, end in chosen:
        conn.execute(f"INSERT INTO b.metrics SELECT {cols} FROM main.metrics "
                     "WHERE run_id = ? AND seq >= ? AND seq < ?", (run_id, start, end))
    art_ids = "SELECT artifact_id FROM main.associations WHERE run_id IN " \
              f"({ids}) AND artifact_id IS NOT NULL"
    conn.execute(f"INSERT INTO b.artifacts SELECT {_columns(conn, 'artifacts')} "
                 f"FROM main.artifacts WHERE id IN ({art_ids})")
    conn.execute(f"INSERT INTO b.artifact_objects SELECT {_columns(conn, 'artifact_objects')} "
                 f"FROM main.artifact_objects WHERE artifact_id IN ({art_ids})")
    shas = {r[0] for r in conn.execute(
        f"SELECT DISTINCT sha256 FROM main.artifact_objects WHERE artifact_id IN ({art_ids}) "
        "AND sha256 IS NOT NULL")}
    conn.execute(f"INSERT INTO b.blobs SELECT {_columns(conn, 'blobs')} FROM main.blobs "
                 "WHERE sha256 IN (SELECT sha256 FROM b.artifact_objects)")
    conn.execute(f"INSERT INTO b.associations SELECT {_columns(conn, 'associations')} "
                 f"FROM main.associations WHERE run_id IN ({ids})")
    conn.execute(f"INSERT INTO b.sync_state SELECT {_columns(conn, 'sync_state')} "
                 f"FROM main.sync_state WHERE run_id IN ({ids})")
    conn.execute(f"INSERT INTO b.remote_history SELECT {_columns(conn, 'remote_history')} "
                 "FROM main.remote_history WHERE entity_uuid IN (SELECT uuid FROM b.runs "
                 "UNION SELECT uuid FROM b.artifacts)")
    if mode == "since-last":
        sent = {r[0] for r in conn.execute("SELECT sha256 FROM main.bundle_blobs_exported")}
        shas -= sent
    return source_store, sequence, entries, marks, shas
