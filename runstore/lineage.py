"""Lineage entries: what mark_input/mark_output record, in t9k's exact shapes."""

from __future__ import annotations

from typing import Any

from runstore.artifact import Artifact
from runstore.errors import InvalidTypeError

ASSOCIATION_KINDS = ("Artifact", "Model", "Dataset", "branch", "tag", "commit")


def association_entry(resource: Any) -> tuple[dict[str, Any], int | None]:
    """The t9k association entry of a resource (and its local artifact id), else TypeError."""
    if isinstance(resource, Artifact):
        return ({"kind": "Artifact", "name": resource.alternative_name,
                 "localDir": resource.local}, resource.id)
    cls = type(resource).__name__
    if cls in ("Model", "Dataset") and hasattr(resource, "id") and hasattr(resource, "path"):
        return {"kind": cls, "id": str(resource.id), "path": str(resource.path)}, None
    if cls in ("Branch", "Tag", "Commit") and hasattr(resource, "asset"):
        ref = getattr(resource, "name", None) or getattr(resource, "id", None)
        return ({"kind": cls.lower(), "id": f"{resource.asset.id}:{ref}",
                 "path": f"{resource.asset.path}:{ref}"}, None)
    if isinstance(resource, dict):
        kind = resource.get("kind")
        if kind == "Artifact" and set(resource) == {"kind", "name", "localDir"}:
            return dict(resource), None
        if kind in ASSOCIATION_KINDS[1:] and set(resource) == {"kind", "id", "path"}:
            return dict(resource), None
    raise InvalidTypeError(
        f"cannot mark {resource!r} as input/output: expected an Artifact, Model, Dataset, "
        "Branch, Tag or Commit")
