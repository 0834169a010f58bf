"""Names, alternative names and artifact object paths, with t9k's rules."""

from __future__ import annotations

import datetime as _dt
import posixpath
import re
import secrets
import string

NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,38}[a-zA-Z0-9]$|^[a-zA-Z0-9]$"
_NAME_RE = re.compile(NAME_PATTERN)
_ALPHABET = string.ascii_lowercase + string.digits


def check_name(name: object, kind: str = "Run") -> str:
    """Return name if it matches t9k's rule (1-40 chars), else raise ValueError quoting it."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: it must match {NAME_PATTERN} (1 to 40 letters, "
            "digits, '_' or '-', starting and ending with a letter or digit)"
        )
    return name


def alternative_name(name: str, now: _dt.datetime | None = None) -> str:
    """<name>_<yymmdd>_<HHMMSS>_<6 chars of [a-z0-9]> in local time."""
    now = now or _dt.datetime.now()
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    return f"{name}_{now:%y%m%d_%H%M%S}_{suffix}"


def object_path(obj_path: str | None, source_basename: str) -> str:
    """Apply t9k's object path rules and refuse paths that escape the artifact.

    None means the basename; one leading '/' is stripped; a trailing '/' appends the basename.
    """
    if obj_path is None:
        path = source_basename
    else:
        if not isinstance(obj_path, str):
            raise TypeError(f"obj_path must be a str, not {type(obj_path).__name__}")
        path = obj_path[1:] if obj_path.startswith("/") else obj_path
        if path.endswith("/") or path == "":
            path = path + source_basename
    bad = _object_path_problem(path)
    if bad:
        raise ValueError(f"invalid object path {obj_path if obj_path is not None else path!r}: "
                         f"{bad}. Use a relative path such as 'data/train.csv'")
    return path


def _object_path_problem(path: str) -> str | None:
    if not path:
        return "it is empty"
    if "\x00" in path:
        return "it contains a NUL character"
    if "\\" in path:
        return "it contains a backslash"
    if path.startswith("/"):
        return "it is absolute"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "it has an empty, '.' or '..' segment"
    if posixpath.normpath(path) != path:
        return "it is not in normal form"
    if len(path) > 1024:
        return "it is longer than 1024 characters"
    return None
