"""Canonicalisation of client-supplied names and paths, before any file or row is touched.

A segment (user, folder, run or artifact name) must be NFKC-stable and match SEGMENT_RE; this
refuses '.', '..', separators, NUL, percent signs (so double encoding never decodes into
something else), backslashes and look-alikes such as full-width dots. Artifact object paths
never become file names on the server (blobs are named by their verified sha256), but they
are checked too so that a download cannot write outside its directory.
"""

from __future__ import annotations

import re
import unicodedata

SEGMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
USER_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
UUID_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,63}")
MAX_DEPTH = 16
MAX_OBJECT_PATH = 1024


class BadPath(ValueError):
    """A name or path that is refused; the message names it and the rule."""


def _short(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:60] + "...")


def check_segment(value: object, what: str = "name") -> str:
    if not isinstance(value, str):
        raise BadPath(f"{what} must be a string")
    if unicodedata.normalize("NFKC", value) != value or not SEGMENT_RE.fullmatch(value):
        raise BadPath(
            f"invalid {what} {_short(value)}: use 1-128 ASCII letters, digits, '.', '_' or '-',"
            " starting with a letter or digit")
    return value


def check_user(value: object) -> str:
    if not isinstance(value, str) or not USER_RE.fullmatch(value):
        raise BadPath(f"invalid user name {_short(str(value))}: use 1-32 of [a-z0-9_-], "
                      "starting with a letter")
    return value


def check_sha256(value: object) -> str:
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise BadPath(f"not a lowercase sha256 hex digest: {_short(str(value))}")
    return value


def check_uuid(value: object) -> str:
    if not isinstance(value, str) or not UUID_RE.fullmatch(value):
        raise BadPath(f"invalid uuid {_short(str(value))}")
    return value


def split_path(path: object) -> list[str]:
    """'/alice/proj/sub' -> ['alice', 'proj', 'sub'], each segment checked."""
    if not isinstance(path, str):
        raise BadPath("path must be a string")
    if len(path) > 4096 or not path.startswith("/") or path.endswith("/") and path != "/":
        raise BadPath(f"invalid path {_short(path)}: use an absolute path like /user/folder")
    parts = path[1:].split("/")
    if not parts or len(parts) > MAX_DEPTH + 1:
        raise BadPath(f"invalid path {_short(path)}: at most {MAX_DEPTH} folder levels")
    check_user(parts[0])
    for part in parts[1:]:
        check_segment(part, "path segment")
    return parts


def check_object_path(path: object) -> str:
    """An artifact object path: relative, '/'-separated, no '.', '..' or empty segments."""
    if not isinstance(path, str) or not path:
        raise BadPath("object path must be a non-empty string")
    if len(path) > MAX_OBJECT_PATH:
        raise BadPath(f"object path {_short(path)} is longer than {MAX_OBJECT_PATH} characters")
    if unicodedata.normalize("NFKC", path) != path:
        raise BadPath(f"object path {_short(path)} is not NFKC-normalised")
    if "\\" in path or "%" in path or any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise BadPath(f"object path {_short(path)} contains a backslash, '%' or a control "
                      "character")
    if path.startswith("/"):
        raise BadPath(f"object path {_short(path)} is absolute")
    for part in path.split("/"):
        if part in ("", ".", "..") or len(part) > 255:
            raise BadPath(f"object path {_short(path)} has an empty, '.' or '..' segment")
    return path
