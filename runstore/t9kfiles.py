"""What a valid t9k 0.6 run or artifact file holds: one definition, shared by the server (files
uploaded by t9k clients, runstore/server/t9k/ingest.py) and `runstore import` (``.em``
directories, runstore/emimport.py).

t9k writes YAML with PyYAML (YAML 1.1: ``.nan``, ``.inf``, ``-.inf``) and rewrites a file by
truncating it first, so a file read at the wrong moment is empty or cut short. Nothing here
guesses: a document either is what it must be, or is refused; a metrics file (a list t9k only
ever appends to) yields its longest valid prefix of records.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from runstore import protocol as p

STATUSES = ("Running", "Complete", "Error")
# A complete t9k timestamp (one cut short lacks its offset).
TIMESTAMP_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)")

try:
    _Loader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Loader = yaml.SafeLoader


def load_yaml(data: bytes) -> Any:
    """The YAML document, or None if it does not parse (cut short, not YAML)."""
    try:
        return yaml.load(data.decode("utf-8"), Loader=_Loader)
    except (yaml.YAMLError, UnicodeDecodeError, ValueError):
        return None


def json_safe(value: Any) -> Any:
    """JSON-storable: non-finite floats (which t9k's YAML may hold) become their names."""
    if isinstance(value, float) and not math.isfinite(value):
        return p.encode_value(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # dates and other YAML scalars


def is_timestamp(value: Any) -> bool:
    return isinstance(value, str) and TIMESTAMP_RE.fullmatch(value) is not None


def str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def run_metadata(doc: Any) -> dict[str, Any] | None:
    """A valid run metadata.yaml as {name, labels, description, status, start, end, remote,
    associations: {input: [...], output: [...]}}, else None."""
    if not isinstance(doc, dict) or doc.get("kind", "Run") != "Run":
        return None
    name, status, start, end = (doc.get("name"), doc.get("status"), doc.get("startTimestamp"),
                                doc.get("endTimestamp"))
    labels, description = doc.get("labels", []), doc.get("description", "")
    if not isinstance(name, str) or status not in STATUSES or not is_timestamp(start) \
            or not str_list(labels) or not isinstance(description, str) \
            or not isinstance(doc.get("remote"), list):
        return None
    if status != "Running" and not is_timestamp(end):
        return None
    assoc = doc.get("associations") or {}
    if not isinstance(assoc, dict):
        return None
    return {"name": name, "labels": labels, "description": description, "status": status,
            "start": start, "end": end if status != "Running" else None,
            "remote": json_safe(doc["remote"]),
            "associations": {d: [json_safe(e) for e in (assoc.get(d) or [])
                                 if isinstance(e, dict) and isinstance(e.get("kind"), str)]
                             for d in ("input", "output")}}


def artifact_metadata(doc: Any) -> dict[str, Any] | None:
    """A valid artifact metadata.yaml as {name, labels, description, created, remote}."""
    if not isinstance(doc, dict) or doc.get("kind", "Artifact") != "Artifact":
        return None
    name, created = doc.get("name"), doc.get("createdTimestamp")
    labels, description = doc.get("labels", []), doc.get("description", "")
    if not isinstance(name, str) or not is_timestamp(created) or not str_list(labels) \
            or not isinstance(description, str) or not isinstance(doc.get("remote"), list):
        return None
    return {"name": name, "labels": labels, "description": description, "created": created,
            "remote": json_safe(doc["remote"])}


def references(doc: Any) -> dict[str, str] | None:
    """A valid references.yaml (object path -> URI), else None."""
    if not isinstance(doc, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                            for k, v in doc.items()):
        return None
    return dict(doc)


_RECORD_START = re.compile(r"^- ", re.MULTILINE)


def load_metrics(data: bytes) -> tuple[Any, bool]:
    """(document, whole) of a metrics file. A file cut short mid-record does not parse as
    YAML; then the document is its longest prefix of whole top-level list items (t9k dumps
    each record as a ``- `` item at column 0) and whole is False."""
    doc = load_yaml(data)
    if doc is not None or not data.strip():
        return doc, True
    text = data.decode("utf-8", "replace")
    starts = [m.start() for m in _RECORD_START.finditer(text)]
    for cut in reversed(starts[1:]):
        doc = load_yaml(text[:cut].encode())
        if isinstance(doc, list):
            return doc, False
    return None, False


def metric_records(doc: Any, type_: str) -> list[list[tuple]]:
    """The longest valid prefix of a metrics file's records, each as metric rows
    (type, key, step, epoch, value|None for NaN, timestamp)."""
    if not isinstance(doc, list):
        return []
    out: list[list[tuple]] = []
    for record in doc:
        rows = record_rows(record, type_)
        if rows is None:
            break
        out.append(rows)
    return out


def record_rows(record: Any, type_: str) -> list[tuple] | None:
    """One ``run.log()`` record as metric rows, or None if it is not a whole record."""
    if not isinstance(record, dict):
        return None
    values, seq = record.get("value"), record.get("sequence")
    if not isinstance(values, dict) or not isinstance(seq, dict) \
            or not is_timestamp(seq.get("timestamp")):
        return None
    wire = [[type_, str(k), seq.get("step"), seq.get("epoch"),
             p.encode_value(v) if isinstance(v, float) else v, seq["timestamp"]]
            for k, v in values.items()]
    try:
        return p.decode_metric_rows(wire)
    except ValueError:
        return None
