"""UIData over the machine's local store, strictly read-only.

Why it cannot disturb training: every request opens its own connection with ``mode=ro`` (the
file is never opened for writing) and ``PRAGMA query_only``, reads in one short transaction
and closes it. In WAL mode a reader never blocks a writer, and a short read never holds back
checkpoints for long. Nothing here migrates, creates or repairs anything: a store the UI
cannot read yet (missing, or a newer schema) is a clear error, not a write.

Folders are the runs' upload targets (``runs.folder``): the folder a run will sync to.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runstore.schema import MIGRATIONS
from runstore.ui import series as series_mod
from runstore.ui.data import (
    ArtifactDetail,
    ArtifactObject,
    ArtifactRef,
    Folder,
    MetricRef,
    NotFound,
    RunDetail,
    RunRow,
    RunsPage,
    RunsQuery,
    SeriesSummary,
    common_keys,
    default_metrics,
    flatten,
    lower_is_better,
)

_SAMPLE_RUNS = 200
_SAMPLE_METRIC_RUNS = 20
_SORTS = {"name": "r.name", "status": "r.status", "start": "r.start_timestamp"}


class StoreUnreadable(RuntimeError):
    """The local store cannot be opened read-only."""


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _json_path(key: str) -> str:
    return "$" + "".join('."' + p.replace('"', '""') + '"' for p in key.split("."))


class LocalData:
    """The pages' data from the store in ``home`` (RUNSTORE_HOME)."""

    read_only_note: str | None = "local store, read-only"

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.db_path = self.home / "runstore.db"
        if not self.db_path.is_file():
            raise StoreUnreadable(
                f"no local store at {str(self.db_path)!r}. Try: log a run first, or set "
                "RUNSTORE_HOME to the store's directory")
        with self.connect() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreUnreadable(
                f"the store {str(self.db_path)!r} has schema version {version}, newer than "
                f"this runstore knows ({len(MIGRATIONS)}). Try: upgrade runstore")

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection in one short read transaction."""
        uri = f"file:{self.db_path}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=5, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.OperationalError as exc:
            raise StoreUnreadable(f"cannot open {str(self.db_path)!r} read-only: {exc}. "
                                  "Try: check the file's permissions") from exc
        try:
            conn.execute("PRAGMA query_only = 1")
            conn.execute("BEGIN")
            yield conn
        finally:
            conn.close()

    # -- folders and runs ------------------------------------------------------------------
    def folders(self) -> list[Folder]:
        with self.connect() as conn:
            rows = conn.execute("SELECT folder, COUNT(*) FROM runs GROUP BY folder "
                                "ORDER BY folder").fetchall()
        return [Folder(path, n, 0) for path, n in rows]

    def recent_runs(self, limit: int) -> list[RunRow]:
        """The store's latest runs, any folder (newest first)."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT uuid, name, folder, alternative_name, status, start_timestamp, "
                "end_timestamp, labels FROM runs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [RunRow(uuid, name, f"{folder}/{alt}", status, start, end, json.loads(labels),
                       {}, {}) for uuid, name, folder, alt, status, start, end, labels in rows]

    def runs(self, q: RunsQuery) -> RunsPage:
        cond, args = ["r.folder = ?"], [q.folder]
        if q.status:
            cond.append("r.status = ?")
            args.append(q.status)
        if q.name:
            cond.append("(r.name LIKE ? ESCAPE '\\' OR r.alternative_name LIKE ? ESCAPE '\\')")
            args += [f"%{_like_escape(q.name)}%"] * 2
        if q.label:
            # the label's JSON text (the SDK writes labels with json.dumps) as a cheap
            # necessary condition before the exact test
            cond.append("r.labels LIKE ? ESCAPE '\\' "
                        "AND EXISTS (SELECT 1 FROM json_each(r.labels) WHERE value = ?)")
            args += [f"%{_like_escape(json.dumps(q.label))}%", q.label]
        where = " AND ".join(cond)
        direction = "DESC" if q.desc else "ASC"
        join, order_args = "", []
        if q.sort.startswith(("last:", "best:")):
            which, _, ref_text = q.sort.partition(":")
            ref = MetricRef.parse(ref_text)
            if which == "last":
                expr = ("(SELECT value FROM metrics m WHERE m.run_id = r.id AND m.type = ? "
                        "AND m.key = ? ORDER BY m.seq DESC LIMIT 1)")
            else:
                agg = "MIN" if lower_is_better(ref.key) else "MAX"
                expr = (f"(SELECT {agg}(value) FROM metrics m "
                        "WHERE m.run_id = r.id AND m.type = ? AND m.key = ?)")
            order_args = [ref.type, ref.key]
            order = f"{expr} IS NULL, {expr} {direction}"
            order_args = order_args * 2
        elif q.sort.startswith("h:"):
            expr = "json_extract(r.hparams, ?)"
            order = f"{expr} IS NULL, {expr} {direction}"
            order_args = [_json_path(q.sort[2:])] * 2
        else:
            order = f"{_SORTS.get(q.sort, 'r.start_timestamp')} {direction}"
        with self.connect() as conn:
            total = conn.execute(f"SELECT COUNT(*) FROM runs r WHERE {where}", args).fetchone()[0]
            rows = conn.execute(
                f"SELECT r.id, r.uuid, r.name, r.alternative_name, r.status, r.start_timestamp, "
                f"r.end_timestamp, r.labels, r.hparams FROM runs r {join} WHERE {where} "
                f"ORDER BY {order}, r.id {direction} LIMIT ? OFFSET ?",
                [*args, *order_args, q.page_size, (q.page - 1) * q.page_size]).fetchall()
            sample = conn.execute("SELECT id, hparams, labels FROM runs WHERE folder = ? "
                                  "ORDER BY id DESC LIMIT ?", (q.folder, _SAMPLE_RUNS)).fetchall()
            # metric names from the latest few runs only: without the server's summary table,
            # listing them reads every row of those runs
            ids = ",".join(str(r[0]) for r in sample[:_SAMPLE_METRIC_RUNS]) or "NULL"
            refs = conn.execute(
                "SELECT type, key FROM (SELECT DISTINCT run_id, type, key FROM metrics "
                f"WHERE run_id IN ({ids})) GROUP BY type, key ORDER BY COUNT(*) DESC, type, key"
            ).fetchall()
            keys = common_keys(flatten(json.loads(doc)) for _id, doc, _labels in sample)
            metric_refs = [MetricRef(t, k) for t, k in refs]
            if q.default_columns:
                q.hparams, q.metrics = keys[:4], default_metrics(metric_refs)
            summaries: dict[int, dict[MetricRef, SeriesSummary]] = {r[0]: {} for r in rows}
            for ref in q.metrics:
                for run_id, summary in self._summaries(conn, list(summaries), ref):
                    summaries[run_id][ref] = summary
        labels = sorted({x for *_rest, doc in sample for x in json.loads(doc)})
        out = [RunRow(uuid, name, f"{q.folder}/{alt}", status, start, end, json.loads(lab),
                      flatten(json.loads(hp)), summaries[rid])
               for rid, uuid, name, alt, status, start, end, lab, hp in rows]
        return RunsPage(out, total, keys, metric_refs, labels)

    @staticmethod
    def _summaries(conn: sqlite3.Connection, run_ids: list[int], ref: MetricRef):
        if not run_ids:
            return
        marks = ",".join("?" * len(run_ids))
        last = dict(((rid, (value, step)) for rid, value, step, _ in conn.execute(
            f"SELECT run_id, value, step, MAX(seq) FROM metrics WHERE run_id IN ({marks}) "
            "AND type = ? AND key = ? GROUP BY run_id", (*run_ids, ref.type, ref.key))))
        for rid, n, nans, mn, mx in conn.execute(
                f"SELECT run_id, COUNT(*), SUM(value IS NULL), MIN(value), MAX(value) "
                f"FROM metrics WHERE run_id IN ({marks}) AND type = ? AND key = ? "
                "GROUP BY run_id", (*run_ids, ref.type, ref.key)):
            value, step = last[rid]
            yield rid, SeriesSummary(n, nans, mn, mx, value, step)

    # -- one run ---------------------------------------------------------------------------
    def _run_row(self, conn: sqlite3.Connection, uuid: str) -> sqlite3.Row:
        cur = conn.execute("SELECT * FROM runs WHERE uuid = ?", (uuid,))
        cur.row_factory = sqlite3.Row  # type: ignore[assignment]
        row = cur.fetchone()
        if row is None:
            raise NotFound(f"run {uuid} not found")
        return row

    def run(self, uuid: str) -> RunDetail:
        with self.connect() as conn:
            run = self._run_row(conn, uuid)
            series: dict[tuple[str, str], SeriesSummary] = {}
            last = {(t, k): (v, s) for t, k, v, s, _ in conn.execute(
                "SELECT type, key, value, step, MAX(seq) FROM metrics WHERE run_id = ? "
                "GROUP BY type, key", (run["id"],))}
            for t, k, n, nans, mn, mx in conn.execute(
                    "SELECT type, key, COUNT(*), SUM(value IS NULL), MIN(value), MAX(value) "
                    "FROM metrics WHERE run_id = ? GROUP BY type, key ORDER BY type, key",
                    (run["id"],)):
                series[(t, k)] = SeriesSummary(n, nans, mn, mx, *last[(t, k)])
            links = conn.execute(
                "SELECT s.direction, s.kind, s.entry, a.uuid, a.name, a.alternative_name "
                "FROM associations s LEFT JOIN artifacts a ON a.id = s.artifact_id "
                "WHERE s.run_id = ? ORDER BY s.direction, s.position", (run["id"],)).fetchall()
            sizes = {u: (n, size) for u, n, size in conn.execute(
                "SELECT a.uuid, COUNT(*), COALESCE(SUM(o.size_bytes), 0) FROM artifact_objects o "
                "JOIN artifacts a ON a.id = o.artifact_id WHERE a.id IN (SELECT artifact_id "
                "FROM associations WHERE run_id = ?) GROUP BY a.uuid", (run["id"],))}
            history = [{"action": a, "timestamp": t, "host": h, "path": p, "id": i}
                       for a, t, h, p, i in conn.execute(
                           "SELECT action, timestamp, host, path, remote_id FROM remote_history "
                           "WHERE entity = 'run' AND entity_uuid = ? ORDER BY id", (uuid,))]
            sync_row = conn.execute(
                "SELECT state, attempts, last_error, remote_path, synced_at FROM sync_state "
                "WHERE run_id = ?", (run["id"],)).fetchone()
        inputs: list[ArtifactRef] = []
        outputs: list[ArtifactRef] = []
        for direction, kind, entry_text, a_uuid, a_name, a_alt in links:
            entry = json.loads(entry_text)
            if a_uuid is not None:
                ref = ArtifactRef(a_uuid, a_name, a_alt, kind, *sizes.get(a_uuid, (0, 0)))
            else:
                ref = ArtifactRef(None, str(entry.get("name") or entry.get("path") or entry)
                                  if isinstance(entry, dict) else str(entry), None, kind)
            (inputs if direction == "input" else outputs).append(ref)
        sync = None
        if sync_row is not None:
            sync = dict(zip(("state", "attempts", "last_error", "remote_path", "synced_at"),
                            sync_row, strict=True))
        stdout = Path(run["local_dir"]) / "stdout.log"
        return RunDetail(
            uuid=run["uuid"], name=run["name"], alternative_name=run["alternative_name"],
            path=f"{run['folder']}/{run['alternative_name']}", folder=run["folder"],
            status=run["status"], start_timestamp=run["start_timestamp"],
            end_timestamp=run["end_timestamp"], labels=json.loads(run["labels"]),
            description=run["description"], hparams=json.loads(run["hparams"]),
            platform=json.loads(run["platform"]), git=json.loads(run["git"]), series=series,
            inputs=inputs, outputs=outputs, history=history, sync=sync,
            stdout_path=stdout if stdout.is_file() else None)

    def series(self, uuid: str, type_: str, key: str, lo: int | None, hi: int | None,
               points: int) -> dict[str, Any]:
        with self.connect() as conn:
            run = self._run_row(conn, uuid)
            got = series_mod.local_series(conn, run["id"], type_, key, lo, hi, points)
        if got is None:
            raise NotFound(f"run {uuid} has no metric {type_}/{key}")
        return got

    # -- artifacts -------------------------------------------------------------------------
    def _artifact_row(self, conn: sqlite3.Connection, uuid: str) -> sqlite3.Row:
        cur = conn.execute("SELECT * FROM artifacts WHERE uuid = ?", (uuid,))
        cur.row_factory = sqlite3.Row  # type: ignore[assignment]
        row = cur.fetchone()
        if row is None:
            raise NotFound(f"artifact {uuid} not found")
        return row

    def artifact(self, uuid: str) -> ArtifactDetail:
        with self.connect() as conn:
            art = self._artifact_row(conn, uuid)
            objects = [ArtifactObject(*o) for o in conn.execute(
                "SELECT path, kind, size_bytes, sha256, uri FROM artifact_objects "
                "WHERE artifact_id = ? ORDER BY path", (art["id"],))]
            links = conn.execute(
                "SELECT DISTINCT s.direction, r.uuid, r.name FROM associations s "
                "JOIN runs r ON r.id = s.run_id WHERE s.artifact_id = ? ORDER BY r.name",
                (art["id"],)).fetchall()
            history = [{"action": a, "timestamp": t, "host": h, "path": p, "id": i}
                       for a, t, h, p, i in conn.execute(
                           "SELECT action, timestamp, host, path, remote_id FROM remote_history "
                           "WHERE entity = 'artifact' AND entity_uuid = ? ORDER BY id", (uuid,))]
        return ArtifactDetail(
            uuid=art["uuid"], name=art["name"], alternative_name=art["alternative_name"],
            path=art["alternative_name"], folder="", labels=json.loads(art["labels"]),
            description=art["description"], created_timestamp=art["created_timestamp"],
            objects=objects,
            produced_by=[(u, n) for d, u, n in links if d == "output"],
            consumed_by=[(u, n) for d, u, n in links if d == "input"], history=history)

    def blob(self, artifact_uuid: str, obj_path: str) -> tuple[Path | str, int]:
        with self.connect() as conn:
            art = self._artifact_row(conn, artifact_uuid)
            row = conn.execute("SELECT sha256, size_bytes FROM artifact_objects WHERE "
                               "artifact_id = ? AND path = ? AND kind = 'file'",
                               (art["id"], obj_path)).fetchone()
        if row is None:
            raise NotFound(f"artifact {artifact_uuid} has no file {obj_path}")
        sha = str(row[0])
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise NotFound(f"artifact {artifact_uuid}: {obj_path} has no valid content hash")
        path = self.home / "blobs" / sha[:2] / sha
        if not path.is_file():
            raise NotFound(f"the bytes of {obj_path} are not in this store")
        return path, int(row[1] or 0)
