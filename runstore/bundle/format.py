"""The bundle format: a directory that carries runs across an air gap (docs/AIRGAP.md).

    <bundle>/records.sqlite     the selected runs' rows (local-store schema, no triggers)
    <bundle>/blobs/ab/abcd...   the blobs those rows need, named by sha256
    <bundle>/manifest.json      ids, sequence, per-run ranges, sha256 + size of every file
    <bundle>/COMMIT             written last: {"manifest_sha256": ...}; no COMMIT, no bundle

A directory and not a tar, so an interrupted copy resumes with cp/rsync. Nothing is trusted
before :func:`verify` has checked every file's size and hash against the manifest, and the
manifest against COMMIT.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runstore.errors import RunstoreError
from runstore.schema import MIGRATIONS

FORMAT_NAME = "runstore-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
COMMIT = "COMMIT"
RECORDS = "records.sqlite"
_BLOB_PATH = re.compile(r"^blobs/([0-9a-f]{2})/([0-9a-f]{64})$")
_READ = 1 << 20


class BundleError(RunstoreError):
    """A bundle cannot be written or read."""


class BundleIncompleteError(BundleError):
    """No COMMIT marker, or a file is missing or shorter than the manifest says."""


class BundleCorruptError(BundleError):
    """A file's bytes differ from its hash in the manifest (or the manifest from COMMIT)."""


class BundleVersionError(BundleError):
    """The bundle was written by a newer runstore (format or schema version)."""


@dataclass(frozen=True)
class RunEntry:
    """One run's part in a bundle: metric rows [rows_from, rows_to) and its state."""
    uuid: str
    alternative_name: str
    generation: int
    status: str
    rows_from: int
    rows_to: int
    # The run's stdout.log as exported, carried as a blob of the bundle (bundle/stdout.py);
    # absent from bundles of older versions and for runs that printed nothing.
    stdout_sha256: str | None = None
    stdout_size: int = 0


@dataclass(frozen=True)
class Manifest:
    bundle_id: str
    source_store: str
    source_host: str
    sequence: int
    created_at: str
    schema_version: int
    mode: str
    runs: tuple[RunEntry, ...]
    files: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "bundle_id": self.bundle_id, "source_store": self.source_store,
            "source_host": self.source_host, "sequence": self.sequence,
            "created_at": self.created_at, "schema_version": self.schema_version,
            "mode": self.mode,
            "runs": [vars(r) for r in self.runs],
            "files": self.files,
        }

    @property
    def name(self) -> str:
        return bundle_dir_name(self.source_store, self.sequence, self.bundle_id)


def bundle_dir_name(source_store: str, sequence: int, bundle_id: str) -> str:
    """The directory name of a bundle: sorts by store, then sequence."""
    return f"rsb-{source_store[:12]}-{sequence:06d}-{bundle_id[:8]}"


def is_bundle(path: Path) -> bool:
    """A directory that looks like a bundle (committed or not)."""
    return path.is_dir() and ((path / MANIFEST).exists() or (path / COMMIT).exists())


def sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(_READ):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a rename is durable only once its directory is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _field(data: dict[str, Any], key: str, kind: type, where: Path) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise BundleCorruptError(f"{where}: field {key!r} is missing or not a {kind.__name__}. "
                                 "Try: export the bundle again.")
    return value


def parse_manifest(data: Any, where: Path) -> Manifest:
    """A Manifest from manifest.json's content; version checks come first."""
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise BundleCorruptError(f"{where} is not a runstore bundle manifest (format "
                                 f"{data.get('format') if isinstance(data, dict) else None!r}). "
                                 "Try: give the directory `runstore export` wrote.")
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BundleVersionError(
            f"{where.parent}: bundle format version {version!r} is newer than this runstore "
            f"reads (up to {FORMAT_VERSION}). Try: upgrade runstore on this machine.")
    schema = _field(data, "schema_version", int, where)
    if schema > len(MIGRATIONS):
        raise BundleVersionError(
            f"{where.parent}: bundle schema version {schema} is newer than this runstore's "
            f"({len(MIGRATIONS)}). Try: upgrade runstore on this machine.")
    runs = []
    for item in _field(data, "runs", list, where):
        try:
            stdout = item.get("stdout_sha256")
            runs.append(RunEntry(str(item["uuid"]), str(item["alternative_name"]),
                                 int(item["generation"]), str(item["status"]),
                                 int(item["rows_from"]), int(item["rows_to"]),
                                 None if stdout is None else str(stdout),
                                 int(item.get("stdout_size", 0))))
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleCorruptError(f"{where}: a run entry is malformed ({exc!r}). "
                                     "Try: export the bundle again.") from exc
    files = _field(data, "files", dict, where)
    for run in runs:  # a carried stdout.log is a listed (so verified) blob of the bundle
        sha = run.stdout_sha256
        if sha is not None and files.get(f"blobs/{sha[:2]}/{sha}", {}).get("size") \
                != run.stdout_size:
            raise BundleCorruptError(f"{where}: run {run.uuid}'s stdout.log {sha[:16]}... is "
                                     "not among the bundle's files. Try: export the bundle "
                                     "again.")
    for name, info in files.items():
        if name != RECORDS and not _BLOB_PATH.match(name):
            raise BundleCorruptError(f"{where}: file name {name!r} is not allowed in a bundle. "
                                     "Try: export the bundle again.")
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str) \
                or not isinstance(info.get("size"), int):
            raise BundleCorruptError(f"{where}: the entry of {name!r} lacks sha256/size. "
                                     "Try: export the bundle again.")
    if RECORDS not in files:
        raise BundleCorruptError(f"{where}: lists no {RECORDS}. Try: export the bundle again.")
    return Manifest(
        bundle_id=_field(data, "bundle_id", str, where),
        source_store=_field(data, "source_store", str, where),
        source_host=str(data.get("source_host", "")),
        sequence=_field(data, "sequence", int, where),
        created_at=str(data.get("created_at", "")),
        schema_version=schema, mode=str(data.get("mode", "")), runs=tuple(runs), files=files)


def read_manifest(bundle: Path) -> Manifest:
    """The manifest, checked against COMMIT (which must exist); file contents not checked."""
    commit = bundle / COMMIT
    if not bundle.is_dir():
        raise BundleError(f"{str(bundle)!r} is not a directory. Try: give a bundle directory.")
    if not commit.exists():
        raise BundleIncompleteError(
            f"{bundle}: no {COMMIT} marker, so the bundle is incomplete (an export or a copy "
            "that did not finish). Try: copy the whole bundle again, COMMIT included.")
    try:
        marker = json.loads(commit.read_text())
        expected = marker["manifest_sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleCorruptError(f"{commit} is damaged ({exc!r}). Try: copy the bundle "
                                 "again.") from exc
    manifest_path = bundle / MANIFEST
    if not manifest_path.exists():
        raise BundleIncompleteError(f"{manifest_path} is missing. Try: copy the whole bundle "
                                    "again.")
    raw = manifest_path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != expected:
        raise BundleCorruptError(f"{manifest_path}: its sha256 differs from the one in "
                                 f"{COMMIT} (truncated or altered). Try: copy the bundle again.")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BundleCorruptError(f"{manifest_path} is not JSON ({exc}). Try: copy the "
                                 "bundle again.") from exc
    return parse_manifest(data, manifest_path)


def verify(bundle: Path) -> Manifest:
    """Check COMMIT, the manifest and every file's size and sha256; the Manifest if all hold.

    Raises BundleIncompleteError (missing COMMIT or file, a file shorter than listed),
    BundleCorruptError (a hash or size mismatch) or BundleVersionError, naming the file.
    """
    manifest = read_manifest(bundle)
    for name, info in sorted(manifest.files.items()):
        path = bundle / name
        if not path.is_file():
            raise BundleIncompleteError(f"{path} is missing from the bundle. Try: copy the "
                                        "whole bundle again.")
        size = path.stat().st_size
        if size < info["size"]:
            raise BundleIncompleteError(
                f"{path} is truncated ({size} of {info['size']} bytes). Try: copy the whole "
                "bundle again (cp/rsync resume).")
        if size > info["size"]:
            raise BundleCorruptError(f"{path} is {size} bytes, the manifest says "
                                     f"{info['size']}. Try: copy the bundle again.")
        sha, _ = sha256_file(path)
        if sha != info["sha256"]:
            raise BundleCorruptError(
                f"{path}: sha256 {sha[:16]}... differs from the manifest's "
                f"{info['sha256'][:16]}... (the file is damaged). Try: copy the bundle again.")
    return manifest
