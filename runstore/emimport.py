"""`runstore import PATH`: t9k ``.em`` directories into the local store.

PATH is a whole ``.em/`` (its ``runs/`` and ``artifacts/``), a directory holding run or
artifact directories (``.em/runs``), or one run or artifact directory. Each becomes a runstore
run or artifact like one the SDK made, so syncd then uploads it like any run.

* Identity: a run's uuid is uuid5 of its alternative name (the directory name, as t9k itself
  reads it), an artifact's likewise; importing again finds them and changes nothing.
* Nothing half-written: each run (and each artifact) is one transaction; blobs are
  content-addressed files, written before the rows that name them.
* Broken or partial directories are imported as far as they are valid, with one line per
  problem: a run needs a valid metadata.yaml; a missing or invalid hyperparameters.yaml,
  platform.yaml or git.yaml is imported empty; a metrics file keeps its longest valid prefix
  of records. A run left ``Running`` (its process was killed: t9k marks a run that ends
  without finish() as Error itself) is imported as Error, ending at its last record.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runstore import t9kfiles
from runstore.names import check_name
from runstore.store import Store
from runstore.timeutil import unix_from_iso

# uuid5 namespace of imported t9k runs and artifacts (never change it: identities depend on it)
IMPORT_NS = uuidlib.UUID("5d1b0c7e-2f4a-4e8b-9c3d-7a6e1f0b2c4d")


def run_uuid(alternative_name: str) -> str:
    return uuidlib.uuid5(IMPORT_NS, "t9k-run:" + alternative_name).hex


def artifact_uuid(alternative_name: str) -> str:
    return uuidlib.uuid5(IMPORT_NS, "t9k-artifact:" + alternative_name).hex


class ImportError_(ValueError):
    """PATH is not something to import (one line: what and what to do)."""


@dataclass
class ImportReport:
    imported_runs: list[str] = field(default_factory=list)
    imported_artifacts: list[str] = field(default_factory=list)
    already_runs: list[str] = field(default_factory=list)
    already_artifacts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[str]]:
        return dict(self.__dict__)

    def merge(self, other: ImportReport) -> None:
        for key, values in other.__dict__.items():
            getattr(self, key).extend(values)


def _kind(directory: Path) -> str | None:
    meta = directory / "metadata.yaml"
    if not meta.is_file():
        return "Run" if (directory / "metrics").is_dir() else None
    doc = t9kfiles.load_yaml(meta.read_bytes())
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind in ("Run", "Artifact"):
        return kind
    return "Run" if (directory / "metrics").is_dir() else "Broken"


def discover(path: Path) -> tuple[list[Path], list[Path], list[str]]:
    """(artifact dirs, run dirs, problems) under PATH; ImportError_ if there are none."""
    path = Path(path)
    if not path.is_dir():
        raise ImportError_(f"not a directory: {path}. Try: runstore import path/to/.em")
    arts: list[Path] = []
    runs: list[Path] = []
    problems: list[str] = []

    def add(d: Path, loose: bool) -> None:
        kind = _kind(d)
        if kind == "Run":
            runs.append(d)
        elif kind == "Artifact":
            arts.append(d)
        elif kind == "Broken" or not loose:
            problems.append(f"{d}: metadata.yaml is missing or invalid: not imported")

    if _kind(path) is not None:
        add(path, False)
    else:
        parents = [path / "runs", path / "artifacts"]
        parents = [p for p in parents if p.is_dir()] or [path]
        for parent in parents:
            for d in sorted(parent.iterdir()):
                if d.is_dir():
                    add(d, parent == path)
    if not arts and not runs and not problems:
        raise ImportError_(f"no t9k runs or artifacts in {path}. Try: runstore import "
                           "path/to/.em (or one of its run or artifact directories)")
    return arts, runs, problems


def import_path(path: str | os.PathLike[str], store: Store | None = None) -> ImportReport:
    """Import what PATH holds into the store; see the module docstring."""
    if store is None:
        from runstore.api import default_store

        store = default_store()
    arts, runs, problems = discover(Path(path))
    report = ImportReport(problems=problems)
    for d in arts:
        _import_artifact(store, d, report)
    for d in runs:
        _import_run(store, d, report)
    return report


# -- artifacts -------------------------------------------------------------------------------
def _import_artifact(store: Store, directory: Path, report: ImportReport) -> None:
    alt = directory.name
    meta = t9kfiles.artifact_metadata(_yaml(directory / "metadata.yaml"))
    if meta is None:
        report.problems.append(f"artifact {directory}: metadata.yaml is invalid: not imported")
        return
    try:
        check_name(meta["name"], "Artifact")
    except ValueError as exc:
        report.problems.append(f"artifact {directory}: {exc}: not imported")
        return
    uuid = artifact_uuid(alt)
    found = _existing(store, "artifacts", uuid, alt, directory, report)
    if found:
        if found == "same":
            report.already_artifacts.append(alt)
        return
    from runstore.server.paths import BadPath, check_object_path

    files: list[tuple[str, str, int]] = []
    refs: dict[str, str] = {}
    for src in sorted(p for p in directory.rglob("*") if p.is_file()):
        key = src.relative_to(directory).as_posix()
        if key == "metadata.yaml":
            continue
        if key == "references.yaml":
            parsed = t9kfiles.references(_yaml(src))
            if parsed is None:
                report.problems.append(f"artifact {alt}: references.yaml is invalid: "
                                       "imported without its references")
            refs = parsed or {}
            continue
        try:
            check_object_path(key)
        except BadPath as exc:
            report.problems.append(f"artifact {alt}: {exc}: file not imported")
            continue
        sha, size = store.put_blob_file(src)
        files.append((key, sha, size))
    local = store.artifact_dir(alt)
    with store.write() as conn:
        art_id = conn.execute(
            "INSERT INTO artifacts (uuid, name, alternative_name, labels, description, "
            "created_timestamp, local_dir) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (uuid, meta["name"], alt, json.dumps(meta["labels"]), meta["description"],
             meta["created"], str(local))).lastrowid
        for key, sha, size in files:
            conn.execute("INSERT OR IGNORE INTO blobs (sha256, size_bytes) VALUES (?, ?)",
                         (sha, size))
            conn.execute("INSERT INTO artifact_objects (artifact_id, path, kind, sha256, "
                         "size_bytes) VALUES (?, ?, 'file', ?, ?)", (art_id, key, sha, size))
        for key, uri in refs.items():
            if key not in {f[0] for f in files}:
                conn.execute("INSERT INTO artifact_objects (artifact_id, path, kind, uri) "
                             "VALUES (?, ?, 'reference', ?)", (art_id, key, uri))
        _history(conn, "artifact", uuid, meta["remote"], alt, report)
    local.mkdir(parents=True, exist_ok=True)
    report.imported_artifacts.append(alt)


# -- runs ------------------------------------------------------------------------------------
def _import_run(store: Store, directory: Path, report: ImportReport) -> None:
    alt = directory.name
    meta = t9kfiles.run_metadata(_yaml(directory / "metadata.yaml"))
    if meta is None:
        report.problems.append(f"run {directory}: metadata.yaml is missing or invalid: "
                               "not imported")
        return
    try:
        check_name(meta["name"], "Run")
    except ValueError as exc:
        report.problems.append(f"run {directory}: {exc}: not imported")
        return
    uuid = run_uuid(alt)
    found = _existing(store, "runs", uuid, alt, directory, report)
    if found:
        if found == "same":
            report.already_runs.append(alt)
        return
    docs = {}
    for key in ("hyperparameters", "platform", "git"):
        doc = _yaml(directory / f"{key}.yaml")
        if not isinstance(doc, dict):
            report.problems.append(f"run {alt}: {key}.yaml is missing or invalid: "
                                   "imported empty")
            doc = {}
        docs[key] = t9kfiles.json_safe(doc)
    rows = _metric_rows(directory, alt, report)
    status, end = meta["status"], meta["end"]
    if status == "Running":
        end = max((r[5] for r in rows), key=_when, default=meta["start"])
        status = "Error"
        report.problems.append(f"run {alt}: still Running in its directory (its process "
                               "ended without finish()): imported as Error")
    log_tmp = _stage_log(store, directory, alt)
    local = store.run_dir(alt)
    try:
        with store.write() as conn:
            run_id: int = conn.execute(
                "INSERT INTO runs (uuid, name, alternative_name, labels, description, status, "
                "start_timestamp, end_timestamp, hparams, platform, git, local_dir, hostname, "
                "metric_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (uuid, meta["name"], alt, json.dumps(meta["labels"]), meta["description"],
                 status, meta["start"], end, json.dumps(docs["hyperparameters"]),
                 json.dumps(docs["platform"]), json.dumps(docs["git"]), str(local),
                 str(docs["platform"].get("hostname") or "unknown"), len(rows))
            ).lastrowid  # type: ignore[assignment]
            conn.executemany(
                "INSERT INTO metrics (run_id, seq, type, key, step, epoch, value, timestamp) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, seq, *row) for seq, row in enumerate(rows)])
            _associations(conn, run_id, alt, meta["associations"], directory, report)
            _history(conn, "run", uuid, meta["remote"], alt, report)
            # Inserting the associations of an ended run counted as edits (a schema trigger):
            # this is its first state. Pending: syncd uploads it like a finished run.
            conn.execute("UPDATE runs SET generation = 0 WHERE id = ?", (run_id,))
            conn.execute("INSERT INTO sync_state (run_id, state) VALUES (?, 'pending') "
                         "ON CONFLICT (run_id) DO UPDATE SET state = 'pending'", (run_id,))
    except BaseException:
        if log_tmp is not None:
            log_tmp.unlink(missing_ok=True)
        raise
    local.mkdir(parents=True, exist_ok=True)
    if log_tmp is not None:
        os.replace(log_tmp, local / "stdout.log")
    report.imported_runs.append(alt)


def _when(ts: str) -> float:
    try:
        return unix_from_iso(ts)
    except ValueError:
        return 0.0


def _metric_rows(directory: Path, alt: str, report: ImportReport) -> list[tuple]:
    """All records of metrics/*.yaml as rows, in the order they were logged (by timestamp;
    t9k keeps one file per type, so the order across types is otherwise lost)."""
    metrics_dir = directory / "metrics"
    if not metrics_dir.is_dir():
        report.problems.append(f"run {alt}: no metrics directory: imported without metrics")
        return []
    keyed: list[tuple[float, int, int, list[tuple]]] = []
    for t, path in enumerate(sorted(metrics_dir.glob("*.yaml"))):
        doc, whole = t9kfiles.load_metrics(path.read_bytes())
        records = t9kfiles.metric_records(doc, path.stem)
        if not whole or not isinstance(doc, list) or len(records) < len(doc):
            report.problems.append(
                f"run {alt}: metrics/{path.name} is cut short or invalid after record "
                f"{len(records)}: imported {len(records)} records")
        for i, record in enumerate(records):
            keyed.append((_when(record[0][5]) if record else 0.0, t, i, record))
    keyed.sort(key=lambda k: k[:3])
    return [row for *_, record in keyed for row in record]


def _associations(conn, run_id: int, alt: str, associations: dict[str, list[dict]],
                  directory: Path, report: ImportReport) -> None:
    for direction, entries in associations.items():
        for position, entry in enumerate(entries):
            artifact_id = None
            if entry.get("kind") == "Artifact":
                name = entry.get("name")
                row = conn.execute("SELECT id, local_dir FROM artifacts WHERE "
                                   "alternative_name = ?", (name,)).fetchone()
                if row is None:
                    report.problems.append(
                        f"run {alt}: {direction} artifact {name} was not imported (import "
                        "its directory too): the link is kept without it")
                else:
                    artifact_id = row[0]
                    entry = {"kind": "Artifact", "name": name, "localDir": row[1]}
            conn.execute(
                "INSERT INTO associations (run_id, direction, position, kind, artifact_id, "
                "entry) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, direction, position, entry["kind"], artifact_id, json.dumps(entry)))


def _history(conn, entity: str, uuid: str, remote: list, alt: str,
             report: ImportReport) -> None:
    for item in remote:
        if not isinstance(item, dict) or item.get("action") not in ("upload", "download") \
                or not all(isinstance(item.get(k), str) for k in ("timestamp", "host", "path")):
            report.problems.append(f"{entity} {alt}: a remote record is invalid: skipped")
            continue
        conn.execute(
            "INSERT INTO remote_history (entity, entity_uuid, action, timestamp, host, path, "
            "remote_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (entity, uuid, item["action"], item["timestamp"], item["host"], item["path"],
             str(item["id"]) if item.get("id") is not None else None))


def _stage_log(store: Store, directory: Path, alt: str) -> Path | None:
    """stdout.log copied next to its final place (renamed there once the rows are in)."""
    src = directory / "stdout.log"
    if not src.is_file():
        return None
    runs_dir = store.home / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=runs_dir, prefix=f".import-{alt}-")
    with os.fdopen(fd, "wb") as out, src.open("rb") as fh:
        shutil.copyfileobj(fh, out)
    return Path(tmp)


def _existing(store: Store, table: str, uuid: str, alt: str, directory: Path,
              report: ImportReport) -> str | None:
    """"same" if imported before; "other" (a problem, left alone) if the store holds a
    different run/artifact with this alternative name; else None."""
    rows = store.read(f"SELECT uuid FROM {table} WHERE uuid = ? OR alternative_name = ?",
                      (uuid, alt))
    if any(r["uuid"] == uuid for r in rows):
        return "same"
    if rows:
        kind = "run" if table == "runs" else "artifact"
        report.problems.append(f"{kind} {directory}: the store already holds another {kind} "
                               f"named {alt}: not imported")
        return "other"
    return None


def _yaml(path: Path) -> Any:
    try:
        return t9kfiles.load_yaml(path.read_bytes())
    except OSError:
        return None
