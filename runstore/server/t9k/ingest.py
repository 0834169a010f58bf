"""Files uploaded by t9k clients, parsed into the server's own tables.

A t9k client uploads a run as its directory's files, in any order, and with ``auto_upload``
again each time one changes; a file can be read while the client rewrites it, so an upload can
be cut short (t9k's write_yaml_file truncates, then writes). The rule: a file that does not
parse into what it must hold changes nothing (the last valid state stays); metrics files only
ever grow (t9k appends records), so only the records beyond those already held become rows,
and a trailing record that is incomplete is not taken until a later upload completes it.

YAML is read as YAML 1.1 by PyYAML's safe loader (``.nan``, ``.inf``, ``-.inf``).
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection

from runstore import protocol as p
from runstore import t9kfiles
from runstore.server import db, metricrows
from runstore.server.service import dumps
from runstore.server.t9k import render
from runstore.t9kfiles import json_safe, load_yaml, metric_records

PARSED_RUN_FILES = frozenset({"metadata.yaml", "hyperparameters.yaml", "platform.yaml",
                              "git.yaml", "index.yaml"})
PARSED_ARTIFACT_FILES = frozenset({"metadata.yaml", "references.yaml"})


def is_parsed_run_file(key: str) -> bool:
    return key in PARSED_RUN_FILES or (key.startswith("metrics/") and key.endswith(".yaml")
                                       and "/" not in key[8:])


def _run_values(doc: Any) -> dict[str, Any] | None:
    meta = t9kfiles.run_metadata(doc)
    if meta is None:
        return None
    return {"run_name": meta["name"][:128], "labels": dumps(meta["labels"]),
            "description": meta["description"], "status": meta["status"],
            "start_timestamp": meta["start"], "end_timestamp": meta["end"],
            "remote": dumps(meta["remote"]), "complete": meta["status"] != "Running",
            "associations": meta["associations"]}


def ingest_run_file(conn: Connection, run: Any, key: str, data: bytes) -> bool:
    """Apply one uploaded run file to the run's rows; False if it was not valid (kept as
    it was). The caller holds the run's row lock."""
    if key.startswith("metrics/"):
        return _ingest_metrics(conn, run, key, data)
    doc = load_yaml(data)
    if key == "index.yaml":
        return isinstance(doc, dict)  # derived from the rest; rendered on download
    if key == "metadata.yaml":
        values = _run_values(doc)
        if values is None:
            return False
        associations = values.pop("associations")
        conn.execute(update(db.runs).where(db.runs.c.id == run.id).values(
            updated_at=time.time(), **values))
        _set_associations(conn, run, associations)
        return True
    if key in ("hyperparameters.yaml", "platform.yaml", "git.yaml"):
        if not isinstance(doc, dict):
            return False
        column = {"hyperparameters.yaml": "hparams", "platform.yaml": "platform",
                  "git.yaml": "git"}[key]
        conn.execute(update(db.runs).where(db.runs.c.id == run.id).values(
            {column: dumps(json_safe(doc)), "updated_at": time.time()}))
        return True
    return False


def _ingest_metrics(conn: Connection, run: Any, key: str, data: bytes) -> bool:
    """New records of a metrics file -> rows. t9k appends to the file and auto_upload sends
    all of it after each log() call, so the parsed prefix is remembered (its length and
    sha256): when an upload starts with it, only the rest is parsed (a file that changed in
    its first part is parsed whole again)."""
    type_ = key[len("metrics/"):-len(".yaml")]
    if not 0 < len(type_) <= p.MAX_METRIC_TEXT:
        return False
    f = db.t9k_run_files.c
    state = conn.execute(select(f.records, f.parsed_bytes, f.prefix_sha256).where(
        f.run_id == run.id, f.path == key)).first()
    fresh: list[list[tuple]] | None = None
    if state is not None and state.prefix_sha256 and len(data) >= state.parsed_bytes \
            and hashlib.sha256(data[:state.parsed_bytes]).hexdigest() == state.prefix_sha256:
        tail = data[state.parsed_bytes:]
        doc, _whole = t9kfiles.load_metrics(tail)
        if isinstance(doc, list) or not tail.strip():
            fresh = metric_records(doc or [], type_)
            held, end = state.records, state.parsed_bytes + _end_of(tail, len(fresh))
    if fresh is None:
        doc, _whole = t9kfiles.load_metrics(data)
        if not isinstance(doc, list):
            return False
        records = metric_records(doc, type_)
        # first upload of this file: records logged before (a run from runstore) count
        held = state.records if state is not None else render.count_records(conn, run.id,
                                                                             type_)
        if len(records) <= held:  # nothing new (or an older, shorter copy of the file)
            return True
        fresh, end = records[held:], _end_of(data, len(records))
    if not fresh:
        return True
    rows = [row for record in fresh for row in record]
    count = conn.execute(select(db.runs.c.metric_count).where(db.runs.c.id == run.id)).scalar_one()
    metricrows.insert_metric_rows(conn, run.id, count, rows)
    conn.execute(update(db.runs).where(db.runs.c.id == run.id).values(
        metric_count=count + len(rows), updated_at=time.time()))
    values = {"records": held + len(fresh), "parsed_bytes": end,
              "prefix_sha256": hashlib.sha256(data[:end]).hexdigest()}
    if state is None:
        conn.execute(db.t9k_run_files.insert().values(run_id=run.id, path=key, **values))
    else:
        conn.execute(update(db.t9k_run_files).where(f.run_id == run.id, f.path == key)
                     .values(**values))
    return True


_ITEM = re.compile(rb"^- ", re.MULTILINE)


def _end_of(data: bytes, n: int) -> int:
    """The byte offset where the n-th top-level list item of a metrics file ends (t9k dumps
    each record as a ``- `` item at column 0)."""
    starts = [m.start() for m in _ITEM.finditer(data)]
    return starts[n] if n < len(starts) else len(data)


def _set_associations(conn: Connection, run: Any, associations: dict[str, list[dict]]) -> None:
    """Lineage rows from metadata.yaml's associations, keeping the artifacts already linked
    (by POST /graphs, or by an earlier upload) and finding the others by alternative name."""
    lin = db.lineage.c
    linked = {(r.direction, r.entry): r.artifact_id for r in conn.execute(
        select(lin.direction, lin.entry, lin.artifact_id).where(lin.run_id == run.id))}
    conn.execute(delete(db.lineage).where(lin.run_id == run.id))
    for direction, entries in associations.items():
        for position, entry in enumerate(entries):
            text = dumps(json_safe(entry))
            artifact_id = linked.get((direction, text))
            if artifact_id is None and entry.get("kind") == "Artifact":
                artifact_id = artifact_by_alternative(conn, run.owner_id, entry.get("name"))
            conn.execute(db.lineage.insert().values(
                run_id=run.id, direction=direction, position=position,
                kind=entry["kind"][:64], artifact_id=artifact_id, entry=text))


def artifact_by_alternative(conn: Connection, owner_id: int, alternative: Any) -> int | None:
    """The user's newest artifact with this alternative name (None if there is none)."""
    if not isinstance(alternative, str):
        return None
    return conn.execute(select(func.max(db.artifacts.c.id)).where(
        db.artifacts.c.owner_id == owner_id,
        db.artifacts.c.alternative_name == alternative)).scalar()


def ingest_artifact_file(conn: Connection, artifact: Any, key: str, data: bytes) -> bool:
    """metadata.yaml -> the artifact's row; references.yaml -> its reference objects."""
    doc = load_yaml(data)
    if key == "metadata.yaml":
        meta = t9kfiles.artifact_metadata(doc)
        if meta is None:
            return False
        conn.execute(update(db.artifacts).where(db.artifacts.c.id == artifact.id).values(
            artifact_name=meta["name"][:128], labels=dumps(meta["labels"]),
            description=meta["description"], created_timestamp=meta["created"],
            remote=dumps(meta["remote"])))
        return True
    refs = t9kfiles.references(doc)
    if refs is None:
        return False
    from runstore.server.paths import BadPath, check_object_path

    o = db.artifact_objects.c
    files = {r.path for r in conn.execute(select(o.path).where(
        o.artifact_id == artifact.id, o.kind == "file"))}
    conn.execute(delete(db.artifact_objects).where(o.artifact_id == artifact.id,
                                                   o.kind == "reference"))
    for path, uri in refs.items():
        try:
            check_object_path(str(path))
        except BadPath:
            continue
        if str(path) not in files:
            conn.execute(db.artifact_objects.insert().values(
                artifact_id=artifact.id, path=str(path), kind="reference", uri=uri))
    return True


def record_artifact_file(conn: Connection, artifact: Any, key: str, sha: str,
                         size: int) -> None:
    o = db.artifact_objects.c
    conn.execute(delete(db.artifact_objects).where(o.artifact_id == artifact.id, o.path == key))
    conn.execute(db.artifact_objects.insert().values(
        artifact_id=artifact.id, path=key, kind="file", sha256=sha, size_bytes=size))


def record_run_file(conn: Connection, run: Any, key: str, sha: str, size: int) -> None:
    f = db.t9k_run_files.c
    conn.execute(delete(db.t9k_run_files).where(f.run_id == run.id, f.path == key))
    conn.execute(db.t9k_run_files.insert().values(run_id=run.id, path=key, sha256=sha,
                                                  size_bytes=size, records=0))

