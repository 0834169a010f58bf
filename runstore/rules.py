"""The one set of input rules, shared by the SDK, the wire protocol and the server.

Why one module: a run the SDK accepts must never be refused when it syncs. The SDK checks every
value here at the call (create_run, log, add_file, ...), protocol.py's validators call the same
functions on the wire, and the server's checks (server/paths.py) are these functions too. So the
two sides cannot drift apart. This module imports nothing from pydantic or the server, so the
SDK stays light and the client package never needs the server's dependencies.

Every check returns the value it accepted (sometimes normalised, e.g. a list of labels) and
raises :class:`~runstore.errors.InvalidValueError` (a ValueError) or
:class:`~runstore.errors.InvalidTypeError` (a TypeError) with one line: ``<what>. Try: <fix>``.

The rules, in one place:

* run and artifact names: t9k's, ``NAME_PATTERN`` (1-40 ASCII letters, digits, '_', '-');
* alternative names, uuids and folder segments: ``SEGMENT_RE`` (1-128 ASCII letters, digits,
  '.', '_', '-', starting with a letter or digit); users: ``USER_RE``;
* folders: ``name`` or ``a/b`` (under the user's root) or ``/user/a/b``, at most MAX_DEPTH
  levels below the user;
* artifact object paths: relative, '/'-separated, NFKC-normalised, no empty, '.' or '..'
  segment, no backslash, '%' or control character, at most 1024 characters;
* metric types and keys: 1-256 characters of storable text;
* labels: a list of at most MAX_LABELS strings of at most 256 characters of storable text;
* descriptions: storable text of at most MAX_DESCRIPTION characters;
* integers (steps, epochs, counts, sizes): 64-bit signed;
* conflict strategies: skip, error, new, replace.

"Storable text" is what every store can hold, SQLite and PostgreSQL alike: no NUL character
(PostgreSQL refuses it) and no lone surrogate (not encodable as UTF-8, SQLite refuses it).
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from runstore.errors import InvalidInputError as InvalidInputError
from runstore.errors import InvalidTypeError as InvalidTypeError
from runstore.errors import InvalidValueError as InvalidValueError

# -- limits ----------------------------------------------------------------------------------
NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_-]{0,38}[a-zA-Z0-9]$|^[a-zA-Z0-9]$"
SEGMENT_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
USER_PATTERN = r"[a-z][a-z0-9_-]{0,31}"
MAX_DEPTH = 16                 # folder levels below the user's root
MAX_PATH = 4096                # an absolute folder path
MAX_OBJECT_PATH = 1024
MAX_OBJECT_SEGMENT = 255
MAX_METRIC_TEXT = 256          # a metric type or key
MAX_LABEL = 256
MAX_LABELS = 1000
MAX_DESCRIPTION = 100_000
MAX_URI = 8192
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
CONFLICT_STRATEGIES = ("skip", "error", "new", "replace")

_NAME_RE = re.compile(NAME_PATTERN)
SEGMENT_RE = re.compile(SEGMENT_PATTERN)
USER_RE = re.compile(USER_PATTERN)
SHA256_RE = re.compile(r"[0-9a-f]{64}")
UUID_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,63}")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def short(value: object, limit: int = 60) -> str:
    """repr() of a value, cut to a readable length (error messages stay one line)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + "..."
    text = repr(value)
    return text if len(text) <= limit + 10 else text[:limit] + "..."


def _bad(what: str, fix: str) -> InvalidValueError:
    return InvalidValueError(f"{what}. Try: {fix}")


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidTypeError(f"{what} must be a str, not {type(value).__name__} "
                               f"{short(value)}. Try: pass a str")
    return value


def storable_problem(text: str) -> str | None:
    """Why text cannot be stored everywhere (a NUL or a lone surrogate), or None."""
    if text.isascii() and "\x00" not in text:  # no surrogate then; both tests run in C
        return None
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    return "it contains a NUL character" if char == "\x00" else \
        f"it contains the lone surrogate {char!r} (not valid Unicode)"


def check_text(value: object, what: str, *, max_len: int, min_len: int = 0) -> str:
    """A str of min_len..max_len characters that every store can hold."""
    text = _str(value, what)
    if len(text) < min_len:
        raise _bad(f"{what} {short(text)} is empty", f"a non-empty {what}")
    if len(text) > max_len:
        raise _bad(f"{what} {short(text)} is longer than {max_len} characters",
                   f"a {what} of at most {max_len} characters")
    problem = storable_problem(text)
    if problem:
        raise _bad(f"invalid {what} {short(text)}: {problem}", "remove that character")
    return text


# -- names -----------------------------------------------------------------------------------
def check_name(name: object, kind: str = "Run") -> str:
    """A run or artifact name, t9k's rule: 1-40 letters, digits, '_' or '-'."""
    # fullmatch: with match(), '$' would also accept a trailing newline ('ab\n')
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise _bad(f"invalid {kind} name {short(name)}: it must match {NAME_PATTERN}",
                   "1 to 40 letters, digits, '_' or '-', starting and ending with a letter "
                   "or digit, such as 'mnist-cnn'")
    return name


def check_segment(value: object, what: str = "name") -> str:
    """One folder segment, alternative name or remote node name."""
    if not isinstance(value, str) or not SEGMENT_RE.fullmatch(value):
        raise _bad(f"invalid {what} {short(value)}",
                   "1-128 ASCII letters, digits, '.', '_' or '-', starting with a letter or "
                   "digit")
    return value


def check_alternative_name(value: object) -> str:
    return check_segment(value, "alternative name")


def check_user(value: object) -> str:
    if not isinstance(value, str) or not USER_RE.fullmatch(value):
        raise _bad(f"invalid user name {short(value)}",
                   "1-32 of [a-z0-9_-], starting with a letter")
    return value


def check_sha256(value: object) -> str:
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise _bad(f"not a lowercase sha256 hex digest: {short(value)}",
                   "64 characters of [0-9a-f]")
    return value


def check_uuid(value: object) -> str:
    if not isinstance(value, str) or not UUID_RE.fullmatch(value):
        raise _bad(f"invalid uuid {short(value)}",
                   "1-64 ASCII letters, digits or '-', starting with a letter or digit")
    return value


# -- folders ---------------------------------------------------------------------------------
def split_path(path: object) -> list[str]:
    """'/alice/proj/sub' -> ['alice', 'proj', 'sub'], each segment checked."""
    text = _str(path, "path")
    if len(text) > MAX_PATH or not text.startswith("/") or text.endswith("/") and text != "/":
        raise _bad(f"invalid path {short(text)}", "an absolute path like /user/folder")
    parts = text[1:].split("/")
    if len(parts) > MAX_DEPTH + 1:
        raise _bad(f"invalid path {short(text)}: more than {MAX_DEPTH} folder levels",
                   f"at most {MAX_DEPTH} levels below /<user>")
    check_user(parts[0])
    for part in parts[1:]:
        check_segment(part, "folder name")
    return parts


def check_folder(folder: object) -> str:
    """A remote folder as the SDK takes it: 'proj' or 'proj/sub' (under /<user>/), or an
    absolute '/user/proj'. Checked at the call, so that syncing cannot refuse it later."""
    text = _str(folder, "folder")
    if text.endswith("/") and text.strip("/"):
        text = text.rstrip("/")  # 'proj/' is 'proj', as t9k takes it
    if text.startswith("/"):
        split_path(text)
        return text
    if not text:
        raise _bad("folder '' is empty", "a folder name such as 'default' or 'proj/sub'")
    parts = text.split("/")
    if len(parts) > MAX_DEPTH:
        raise _bad(f"invalid folder {short(text)}: more than {MAX_DEPTH} levels",
                   f"at most {MAX_DEPTH} levels")
    for part in parts:
        check_segment(part, f"folder {short(text)} segment")
    return text


def folder_path(folder: str, user: str) -> str:
    """t9k's rule: a folder without a leading '/' is under /<user>/; checked either way."""
    folder = check_folder(folder)
    return folder if folder.startswith("/") else f"/{user}/{folder}"


# -- artifact objects ------------------------------------------------------------------------
def object_path_problem(path: str) -> str | None:
    """Why path is not a valid artifact object path, or None."""
    if not path:
        return "it is empty"
    if len(path) > MAX_OBJECT_PATH:
        return f"it is longer than {MAX_OBJECT_PATH} characters"
    unstorable = storable_problem(path)
    if unstorable:
        return unstorable
    if _CONTROL.search(path):
        return "it contains a control character"
    if "\\" in path:
        return "it contains a backslash"
    if "%" in path:
        return "it contains '%' (percent-encoding is not decoded)"
    if unicodedata.normalize("NFKC", path) != path:
        return (f"it is not in Unicode NFKC form (that is "
                f"{unicodedata.normalize('NFKC', path)!r})")
    if path.startswith("/"):
        return "it is absolute"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return "it has an empty, '.' or '..' segment"
        if len(part) > MAX_OBJECT_SEGMENT:
            return f"a segment is longer than {MAX_OBJECT_SEGMENT} characters"
    if posixpath.normpath(path) != path:  # pragma: no cover (the segment rules imply it)
        return "it is not in normal form"
    return None


def check_object_path(path: object) -> str:
    """An artifact object path as stored and sent: relative, '/'-separated, canonical."""
    text = _str(path, "object path")
    problem = object_path_problem(text)
    if problem:
        raise _bad(f"invalid object path {short(text)}: {problem}",
                   "a relative path such as 'data/train.csv'")
    return text


def object_path(obj_path: str | None, source_basename: str) -> str:
    """t9k's object path rules, then check_object_path: None means the basename, one leading
    '/' is stripped, a trailing '/' (or '') appends the basename."""
    if obj_path is None:
        path = source_basename
    else:
        text = _str(obj_path, "obj_path")
        path = text[1:] if text.startswith("/") else text
        if path.endswith("/") or path == "":
            path = path + source_basename
    problem = object_path_problem(path)
    if problem:
        shown = path if obj_path is None else obj_path
        raise _bad(f"invalid object path {short(shown)}: {problem}",
                   "a relative path such as 'data/train.csv'")
    return path


def check_uri(uri: object) -> str:
    return check_text(uri, "reference uri", max_len=MAX_URI, min_len=1)


# -- metrics ---------------------------------------------------------------------------------
def check_metric_type(value: object) -> str:
    return check_text(value, "metric type", max_len=MAX_METRIC_TEXT, min_len=1)


def check_metric_key(value: object) -> str:
    return check_text(value, "metric key", max_len=MAX_METRIC_TEXT, min_len=1)


def metric_text_ok(value: object) -> bool:
    """The fast test of check_metric_type/check_metric_key (the hot path calls this)."""
    return (type(value) is str and 0 < len(value) <= MAX_METRIC_TEXT  # type: ignore[arg-type]
            and _UNSTORABLE.search(value) is None)  # type: ignore[arg-type]


def check_int64(value: object, what: str) -> int:
    """An int (or an object with __index__, e.g. numpy's) that fits in 64 bits."""
    if value.__class__ is not int:
        import operator

        try:
            value = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            raise InvalidTypeError(f"{what} must be an int, not {short(value)}. "
                                   "Try: pass an int") from None
    if not INT64_MIN <= value <= INT64_MAX:  # type: ignore[operator]
        raise _bad(f"{what} {value} must fit in a 64-bit integer",
                   f"a value between {INT64_MIN} and {INT64_MAX}")
    return value  # type: ignore[return-value]


# -- run and artifact metadata ---------------------------------------------------------------
def check_labels(labels: object) -> list[str]:
    """None -> []; else a list (or tuple) of storable strings of at most 256 characters."""
    if labels is None:
        return []
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise InvalidTypeError(f"labels must be a list of str, not {short(labels)}. "
                               "Try: labels=['cnn', 'baseline']")
    out = list(labels)
    if not all(isinstance(x, str) for x in out):
        raise InvalidTypeError(f"labels must be a list of str, not {short(out)}. "
                               "Try: labels=['cnn', 'baseline']")
    if len(out) > MAX_LABELS:
        raise _bad(f"{len(out)} labels are more than {MAX_LABELS}",
                   f"at most {MAX_LABELS} labels")
    for label in out:
        check_text(label, "label", max_len=MAX_LABEL)
    return out


def check_description(value: object) -> str:
    """None -> ''; else storable text of at most MAX_DESCRIPTION characters."""
    if value is None:
        return ""
    return check_text(value, "description", max_len=MAX_DESCRIPTION)


def check_conflict_strategy(value: object) -> str:
    if value not in CONFLICT_STRATEGIES:
        raise _bad(f"conflict_strategy {short(value)} is not one of "
                   f"{', '.join(CONFLICT_STRATEGIES)}", "conflict_strategy='new'")
    return value  # type: ignore[return-value]


def check_json_value(value: Any, what: str) -> None:
    """A value that JSON can carry exactly (no NaN/inf, str keys) and every store can hold."""
    import json

    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidTypeError(
            f"{what} is not JSON-serialisable ({type(value).__name__}: {exc}). Try: use str, "
            "int, float, bool, None, lists or dicts of those") from exc


# -- whole stored rows (syncd, upload and `runstore doctor` use these) -----------------------
def run_row_problems(row: Any) -> list[tuple[str, str]]:
    """(field, message) for each column of a local runs row the server would refuse."""
    import json

    checks = [
        ("name", lambda: check_name(row["name"])),
        ("alternative_name", lambda: check_alternative_name(row["alternative_name"])),
        ("uuid", lambda: check_uuid(row["uuid"])),
        ("labels", lambda: check_labels(json.loads(row["labels"]))),
        ("description", lambda: check_description(row["description"])),
        ("folder", lambda: check_folder(row["folder"])),
        ("conflict_strategy", lambda: check_conflict_strategy(row["conflict_strategy"])),
    ]
    return _problems(checks)


def artifact_row_problems(row: Any) -> list[tuple[str, str]]:
    import json

    checks = [
        ("name", lambda: check_name(row["name"], "Artifact")),
        ("alternative_name", lambda: check_alternative_name(row["alternative_name"])),
        ("uuid", lambda: check_uuid(row["uuid"])),
        ("labels", lambda: check_labels(json.loads(row["labels"]))),
        ("description", lambda: check_description(row["description"])),
    ]
    return _problems(checks)


def _problems(checks: list) -> list[tuple[str, str]]:
    out = []
    for field, check in checks:
        try:
            check()
        except (InvalidInputError, ValueError) as exc:
            out.append((field, str(exc)))
    return out
