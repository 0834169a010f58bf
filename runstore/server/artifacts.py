"""Artifacts on the server: which blobs a claim still needs, the claim itself, reading one back.

Blob bytes are blobs.py's business; this module only records who owns which sha256 and which
objects an artifact lists.
"""

from __future__ import annotations

import json
import time

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from runstore import protocol as p
from runstore.server import db
from runstore.server.auth import User
from runstore.server.errors import Conflict, Invalid, NotFound
from runstore.server.paths import BadPath, check_object_path, check_sha256
from runstore.server.service import (
    artifact_row,
    check_names,
    decide_name,
    dumps,
    folder_row,
    invalid,
    own_parts,
)


def missing_blobs(conn: Connection, user: User, shas: list[str]) -> list[str]:
    try:
        wanted = sorted({check_sha256(s) for s in shas})
    except BadPath as exc:
        raise invalid(exc) from None
    have: set[str] = set()
    for i in range(0, len(wanted), 500):
        batch = wanted[i:i + 500]
        have.update(r[0] for r in conn.execute(select(db.blob_owners.c.sha256).where(
            db.blob_owners.c.user_id == user.id, db.blob_owners.c.sha256.in_(batch))))
    return [s for s in wanted if s not in have]


def claim_artifact(conn: Connection, user: User, claim: p.ArtifactClaim) -> p.ClaimResponse:
    check_names(claim.uuid, claim.name, claim.alternative_name)
    own_parts(user, claim.folder, writing=True)
    objects: list[p.ArtifactObject] = []
    file_shas: list[str] = []
    seen: set[str] = set()
    for obj in claim.objects:
        try:
            check_object_path(obj.path)
            if obj.kind == "file":
                file_shas.append(check_sha256(obj.sha256))
        except BadPath as exc:
            raise invalid(exc) from None
        if obj.path in seen:
            raise Invalid(f"object path {obj.path!r} appears twice")
        if (obj.kind == "file") != (obj.uri is None):
            raise Invalid(f"object {obj.path!r}: a file has a sha256, a reference a uri")
        seen.add(obj.path)
        objects.append(obj)
    db.lock_user(conn, user.id)  # names and uuids of this user: decided one claim at a time
    missing = missing_blobs(conn, user, file_shas)
    if missing:
        raise Conflict(f"upload these blobs first: {', '.join(missing[:5])}"
                       + (" ..." if len(missing) > 5 else ""))
    folder = folder_row(conn, user, claim.folder)
    meta = claim.metadata
    try:
        existing = artifact_row(conn, user, claim.uuid)
    except NotFound:
        existing = None
    outcome: p.ClaimOutcome
    if existing is not None:
        outcome, art_id = "resumed", existing.id
        remote_path = f"{existing.folder_path}/{existing.name}"
        conn.execute(delete(db.artifact_objects)
                     .where(db.artifact_objects.c.artifact_id == art_id))
    else:
        outcome, node_name = decide_name(conn, folder, claim.name, claim.alternative_name,
                                     claim.conflict_strategy)
        remote_path = f"{folder.path}/{node_name or claim.name}"
        if node_name is None:
            return p.ClaimResponse(outcome=outcome, uuid=claim.uuid, remote_path=remote_path)
        art_id = db.insert_returning_id(conn, db.artifacts.insert().values(
            owner_id=user.id, uuid=claim.uuid, folder_id=folder.id, name=node_name,
            artifact_name=claim.name, alternative_name=claim.alternative_name,
            labels=dumps(meta.labels), description=meta.description,
            created_timestamp=meta.created_timestamp, remote=dumps(meta.remote),
            created_at=time.time()))
    if objects:
        conn.execute(db.artifact_objects.insert(), [
            {"artifact_id": art_id, "path": o.path, "kind": o.kind, "sha256": o.sha256,
             "size_bytes": o.size_bytes, "uri": o.uri} for o in objects])
    return p.ClaimResponse(outcome=outcome, uuid=claim.uuid, remote_path=remote_path,
                           complete=True)


def artifact_detail(conn: Connection, user: User, uuid: str) -> p.ArtifactDetail:
    row = artifact_row(conn, user, uuid)
    objs = conn.execute(select(db.artifact_objects).where(
        db.artifact_objects.c.artifact_id == row.id).order_by(db.artifact_objects.c.path))
    return p.ArtifactDetail(
        uuid=row.uuid, name=row.artifact_name, alternative_name=row.alternative_name,
        path=f"{row.folder_path}/{row.name}", folder=row.folder_path,
        metadata=p.ArtifactMetadata(labels=json.loads(row.labels), description=row.description,
                                    created_timestamp=row.created_timestamp,
                                    remote=json.loads(row.remote)),
        objects=[p.ArtifactObject(path=o.path, kind=o.kind, sha256=o.sha256,
                                  size_bytes=o.size_bytes, uri=o.uri) for o in objs])


def may_read_blob(conn: Connection, user: User, sha: str) -> bool:
    return conn.execute(select(db.blob_owners.c.sha256).where(
        db.blob_owners.c.user_id == user.id, db.blob_owners.c.sha256 == sha)).first() is not None
