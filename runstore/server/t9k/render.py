"""The t9k files of a run or artifact, rendered from the server's tables.

Whoever uploaded it (a t9k client or runstore's syncd), a run is rows; a t9k client that
downloads it (``em.load_run``) gets the files t9k 0.6 writes itself: metadata.yaml,
index.yaml, hyperparameters.yaml, metrics/<type>.yaml, platform.yaml, git.yaml and stdout.log
(t9k refuses a run directory without one; an empty one when the server has none), dumped the
way t9k dumps them (``yaml.dump(..., sort_keys=False)``, NaN as ``.nan``). A metrics record is
one ``run.log()`` call: consecutive rows of a type with the same step, epoch and timestamp.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.engine import Connection

from runstore.server import db

try:
    _Dumper: Any = yaml.CSafeDumper
except AttributeError:  # pragma: no cover
    _Dumper = yaml.SafeDumper

# A rendered object: bytes, or ("blob", sha256, size) for stored bytes.
Rendered = dict[str, Any]


def dump(data: Any) -> bytes:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True).encode()


def _value(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _records(rows: Iterator[Any]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    last: dict[str, tuple] = {}
    for r in rows:
        records = out.setdefault(r.type, [])
        ident = (r.step, r.epoch, r.timestamp)
        if records and last[r.type] == ident and r.key not in records[-1]["value"]:
            records[-1]["value"][r.key] = _value(r.value)
            continue
        records.append({"value": {r.key: _value(r.value)},
                        "sequence": {"epoch": r.epoch, "step": r.step, "timestamp": r.timestamp}})
        last[r.type] = ident
    return out


def _metric_rows(conn: Connection, run_id: int, type_: str | None = None):
    m = db.metrics.c
    stmt = select(m.type, m.key, m.step, m.epoch, m.value, m.timestamp).where(m.run_id == run_id)
    if type_ is not None:
        stmt = stmt.where(m.type == type_)
    return conn.execute(stmt.order_by(m.seq))


def count_records(conn: Connection, run_id: int, type_: str) -> int:
    """How many t9k records the rows of one metric type make."""
    return len(_records(_metric_rows(conn, run_id, type_)).get(type_, []))


def _associations(conn: Connection, run_id: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {"input": [], "output": []}
    lin = db.lineage.c
    rows = conn.execute(select(lin.direction, lin.entry, db.artifacts.c.alternative_name)
                        .outerjoin(db.artifacts, db.artifacts.c.id == lin.artifact_id)
                        .where(lin.run_id == run_id).order_by(lin.direction, lin.position))
    for r in rows:
        entry = json.loads(r.entry)
        if entry.get("kind") == "Artifact":
            # t9k loads a run's artifacts from t9k's own default place for them.
            alt = r.alternative_name or entry.get("name")
            entry = {"kind": "Artifact", "name": alt, "localDir": f".em/artifacts/{alt}"}
        out[r.direction].append(entry)
    return out


def run_files(conn: Connection, run: Any) -> Rendered:
    """Object path -> bytes or ("blob", sha, size), for every file of the run."""
    metrics = _records(_metric_rows(conn, run.id))
    files: Rendered = {
        "metadata.yaml": dump({
            "kind": "Run", "name": run.run_name, "labels": json.loads(run.labels),
            "description": run.description, "startTimestamp": run.start_timestamp,
            "endTimestamp": run.end_timestamp, "status": run.status,
            "alternativeName": run.alternative_name,
            "associations": _associations(conn, run.id), "remote": json.loads(run.remote)}),
        "index.yaml": dump({
            "hyperparameters": "hyperparameters.yaml",
            "metrics": {t: f"metrics/{t}.yaml" for t in metrics},
            "platform": "platform.yaml", "git": "git.yaml", "log": "stdout.log"}),
        "hyperparameters.yaml": dump(json.loads(run.hparams)),
        "platform.yaml": dump(json.loads(run.platform)),
        "git.yaml": dump(json.loads(run.git)),
        "stdout.log": b"",
    }
    for type_, records in metrics.items():
        files[f"metrics/{type_}.yaml"] = dump(records)
    f = db.t9k_run_files.c
    for r in conn.execute(select(f.path, f.sha256, f.size_bytes).where(
            f.run_id == run.id, f.sha256.is_not(None))):
        files[r.path] = ("blob", r.sha256, r.size_bytes)
    return files


def artifact_files(conn: Connection, artifact: Any) -> Rendered:
    """Object path -> bytes or ("blob", sha, size), for every file of the artifact."""
    files: Rendered = {"metadata.yaml": dump({
        "kind": "Artifact", "name": artifact.artifact_name,
        "labels": json.loads(artifact.labels), "description": artifact.description,
        "createdTimestamp": artifact.created_timestamp,
        "alternativeName": artifact.alternative_name, "remote": json.loads(artifact.remote)})}
    o = db.artifact_objects.c
    refs: dict[str, str] = {}
    for r in conn.execute(select(o.path, o.kind, o.sha256, o.size_bytes, o.uri).where(
            o.artifact_id == artifact.id).order_by(o.path)):
        if r.kind == "file":
            files[r.path] = ("blob", r.sha256, r.size_bytes)
        else:
            refs[r.path] = r.uri
    if refs:
        files["references.yaml"] = dump(refs)
    return files


def size_of(obj: Any) -> int:
    return obj[2] if isinstance(obj, tuple) else len(obj)
