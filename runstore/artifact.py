"""Artifact: a named set of files and references, stored content-addressed by sha256."""

from __future__ import annotations

import json
import os
import uuid as _uuid
from pathlib import Path
from typing import Any

from runstore.errors import InvalidValueError
from runstore.lifecycle import default_store
from runstore.names import alternative_name as make_alternative_name
from runstore.rows import remote_history
from runstore.rows import resolve_artifact as find_artifact_row
from runstore.rules import (
    check_alternative_name,
    check_conflict_strategy,
    check_description,
    check_folder,
    check_labels,
    check_name,
    check_uri,
    object_path,
    short,
)
from runstore.store import Store

__all__ = ["Artifact", "find_artifact_row"]
from runstore.timeutil import now_iso


class Artifact:
    """A t9k.em Artifact: files (by sha256, identical content kept once) and references."""

    def __init__(self, metadata: dict[str, Any], objects: dict[str, Any] | None = None, *,
                 store: Store | None = None, _row: Any = None) -> None:
        self._store = store or default_store()
        if _row is None:
            name = check_name(metadata.get("name"), "Artifact")
            labels = check_labels(metadata.get("labels"))
            description = check_description(metadata.get("description"))
            alt = check_alternative_name(
                metadata.get("alternativeName") or make_alternative_name(name))
            local = self._store.artifact_dir(alt)
            with self._store.write() as conn:
                cur = conn.execute(
                    "INSERT INTO artifacts (uuid, name, alternative_name, labels, description,"
                    " created_timestamp, local_dir) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (metadata.get("_uuid") or _uuid.uuid4().hex, name, alt, json.dumps(labels),
                     description, metadata.get("createdTimestamp") or now_iso(), str(local)))
                row_id = cur.lastrowid
            local.mkdir(parents=True, exist_ok=True)
            _row = self._store.read("SELECT * FROM artifacts WHERE id = ?", (row_id,))[0]
        self.id: int = _row["id"]
        self.uuid: str = _row["uuid"]
        self._name = _row["name"]
        self._alternative_name = _row["alternative_name"]
        self._labels = json.loads(_row["labels"])
        self._description = _row["description"]
        self._created = _row["created_timestamp"]
        self._local = _row["local_dir"]
        for path, obj in (objects or {}).items():
            if "uri" in obj:
                self.add_reference(obj["uri"], path)

    def __repr__(self) -> str:
        return f"<Artifact {self._alternative_name}>"

    name = property(lambda self: self._name)
    labels = property(lambda self: list(self._labels))
    description = property(lambda self: self._description)
    created_timestamp = property(lambda self: self._created)
    alternative_name = property(lambda self: self._alternative_name)
    local = property(lambda self: self._local)

    @property
    def objects(self) -> dict[str, dict[str, Any]]:
        """Object path -> {path, size_bytes, checksum} for files, {path, uri} for references."""
        out: dict[str, dict[str, Any]] = {}
        for r in self._store.read(
                "SELECT path, kind, sha256, size_bytes, uri FROM artifact_objects "
                "WHERE artifact_id = ? ORDER BY path", (self.id,)):
            if r["kind"] == "file":
                out[r["path"]] = {"path": str(self._store.blob_path(r["sha256"])),
                                  "size_bytes": r["size_bytes"],
                                  "checksum": f"sha256:{r['sha256']}"}
            else:
                out[r["path"]] = {"path": r["path"], "uri": r["uri"]}
        return out

    @property
    def remote(self) -> list[dict[str, Any]]:
        return remote_history(self._store, "artifact", self.uuid)

    # -- adding objects --------------------------------------------------------------------
    def add_file(self, file_path: str | os.PathLike[str], obj_path: str | None = None) -> None:
        """Add one file; obj_path None means its basename, a trailing '/' appends it."""
        source = Path(file_path)
        if not source.is_file():
            raise FileNotFoundError(f"cannot add {str(file_path)!r} to artifact "
                                    f"{self._name!r}: no such file")
        path = object_path(obj_path, source.name)
        self._add_files([(path, source)])

    def add_dir(self, dir_path: str | os.PathLike[str], obj_path: str | None = None) -> None:
        """Add every file under a directory, under obj_path (default: the directory's name)."""
        source = Path(dir_path)
        if not source.is_dir():
            raise FileNotFoundError(f"cannot add {str(dir_path)!r} to artifact "
                                    f"{self._name!r}: no such directory")
        base = object_path(obj_path, source.resolve().name)
        files = []
        for root, dirs, names in os.walk(source):
            dirs.sort()
            for fname in sorted(names):
                full = Path(root, fname)
                if full.is_file():
                    rel = full.relative_to(source).as_posix()
                    files.append((object_path(f"{base}/{rel}", fname), full))
        self._add_files(files)

    def add_reference(self, uri: str, obj_path: str | None = None) -> None:
        """Add a reference to data kept elsewhere (s3://..., https://...)."""
        check_uri(uri)
        basename = uri.rstrip("/").rsplit("/", 1)[-1] or uri
        path = object_path(obj_path, basename)
        with self._store.write() as conn:
            self._check_kind(conn, path, "reference")
            conn.execute(
                "INSERT INTO artifact_objects (artifact_id, path, kind, uri) "
                "VALUES (?, ?, 'reference', ?) ON CONFLICT (artifact_id, path) "
                "DO UPDATE SET uri = excluded.uri", (self.id, path, uri))

    def _check_kind(self, conn: Any, path: str, kind: str) -> None:
        row = conn.execute("SELECT kind FROM artifact_objects WHERE artifact_id = ? AND path = ?",
                           (self.id, path)).fetchone()
        if row is not None and row[0] != kind:
            raise InvalidValueError(
                f"artifact {self._name!r} already holds a {row[0]} at {short(path)}, and a "
                f"{kind} cannot share its object path. Try: another obj_path")

    def _add_files(self, files: list[tuple[str, Path]]) -> None:
        # Blobs first (content-addressed: a blob no row points to is harmless), then all rows
        # in one transaction, so the artifact never shows half of a directory.
        stored = [(path, *self._store.put_blob_file(src)) for path, src in files]
        with self._store.write() as conn:
            for path, _sha, _size in stored:
                self._check_kind(conn, path, "file")
            for path, sha, size in stored:
                conn.execute("INSERT OR IGNORE INTO blobs (sha256, size_bytes) VALUES (?, ?)",
                             (sha, size))
                conn.execute(
                    "INSERT INTO artifact_objects (artifact_id, path, kind, sha256, size_bytes)"
                    " VALUES (?, ?, 'file', ?, ?) ON CONFLICT (artifact_id, path) DO UPDATE "
                    "SET sha256 = excluded.sha256, size_bytes = excluded.size_bytes",
                    (self.id, path, sha, size))

    # -- dict form, upload -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "Artifact",
            "name": self._name,
            "labels": list(self._labels),
            "description": self._description,
            "createdTimestamp": self._created,
            "alternativeName": self._alternative_name,
            "remote": self.remote,
        }

    def upload(self, folder: str = "default", make_folder: bool = False,
               conflict_strategy: str = "new") -> None:
        """Upload this artifact to the server now."""
        from runstore.remote import Client, upload_artifact

        check_folder(folder)
        check_conflict_strategy(conflict_strategy)
        with Client.from_config() as client:
            upload_artifact(self._store, self.uuid, client, folder=folder,
                            make_folder=make_folder, conflict_strategy=conflict_strategy)
