"""Read-only user SQL over the local store, sandboxed (`runstore sql`, promise 6).

Every query gets its own connection, opened read-only (``mode=ro``) with ``query_only`` on,
extension loading off, no attached databases, and an authorizer that allows reading and a
list of functions and harmless pragmas only: no writes, ATTACH, load_extension() or pragma
that sets a value. A time limit (progress handler), a row cap, a cap on the size of one value
(``SQLITE_LIMIT_LENGTH``) and a cap on the bytes of the whole result keep it bounded. Each
refusal is a ``SQLError`` whose message says what was refused and what to do instead.

NaN: SQLite has no NaN. Metric values that were NaN are stored as NULL (``metrics.value``;
``metric_values.is_nan`` tells them apart from nothing), and any NaN an expression yields
reads back as NULL too. +-inf are stored and read back as REAL +-Inf.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runstore.errors import SQLError
from runstore.store import Store

DEFAULT_MAX_ROWS = 10_000
DEFAULT_TIME_LIMIT_S = 10.0
DEFAULT_MAX_VALUE_BYTES = 10_000_000
DEFAULT_MAX_RESULT_BYTES = 100_000_000
MAX_SQL_BYTES = 1_000_000
# LIKE/GLOB cost grows with pattern length x string length inside one function call, where
# the progress handler cannot stop it.
MAX_LIKE_PATTERN_BYTES = 500
# The progress handler runs every this many virtual-machine instructions (~microseconds).
PROGRESS_INSTRUCTIONS = 1_000

# Core, aggregate, window, date, math and JSON functions of SQLite: nothing touching files,
# extensions or the connection's settings.
ALLOWED_FUNCTIONS = frozenset("""
abs changes char coalesce concat concat_ws format glob hex ifnull iif instr last_insert_rowid
length like likelihood likely lower ltrim max min nullif octet_length printf quote random
randomblob replace round rtrim sign soundex sqlite_source_id sqlite_version substr substring
total_changes trim typeof unhex unicode unlikely upper zeroblob
avg count group_concat string_agg sum total
row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value
nth_value
date time datetime julianday unixepoch strftime timediff
acos acosh asin asinh atan atan2 atanh ceil ceiling cos cosh degrees exp floor ln log log10
log2 mod pi pow power radians sin sinh sqrt tan tanh trunc
json json_array json_array_length json_error_position json_extract json_group_array
json_group_object json_insert json_object json_patch json_pretty json_quote json_remove
json_replace json_set json_type json_valid -> ->>
jsonb jsonb_array jsonb_extract jsonb_group_array jsonb_group_object jsonb_insert
jsonb_object jsonb_patch jsonb_remove jsonb_replace jsonb_set
""".split())

# Pragmas that only read, whatever their argument (a table or index name).
PRAGMAS_WITH_ARGUMENT = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
     "foreign_key_list"})
# Pragmas that only read when given no value (``PRAGMA user_version = 5`` would set it).
PRAGMAS_WITHOUT_VALUE = frozenset(
    {"user_version", "schema_version", "application_id", "page_count", "page_size",
     "freelist_count", "encoding", "data_version", "function_list", "collation_list",
     "pragma_list", "compile_options"})

# SQLite's authorizer action codes (sqlite3.h); the module's constants are unnamed ints.
_ACTIONS = {
    1: "CREATE INDEX", 2: "CREATE TABLE", 3: "CREATE TEMP INDEX", 4: "CREATE TEMP TABLE",
    5: "CREATE TEMP TRIGGER", 6: "CREATE TEMP VIEW", 7: "CREATE TRIGGER", 8: "CREATE VIEW",
    9: "DELETE", 10: "DROP INDEX", 11: "DROP TABLE", 12: "DROP TEMP INDEX",
    13: "DROP TEMP TABLE", 14: "DROP TEMP TRIGGER", 15: "DROP TEMP VIEW", 16: "DROP TRIGGER",
    17: "DROP VIEW", 18: "INSERT", 19: "PRAGMA", 20: "READ", 21: "SELECT", 22: "TRANSACTION",
    23: "UPDATE", 24: "ATTACH", 25: "DETACH", 26: "ALTER TABLE", 27: "REINDEX", 28: "ANALYZE",
    29: "CREATE VIRTUAL TABLE", 30: "DROP VIRTUAL TABLE", 31: "FUNCTION", 32: "SAVEPOINT",
    33: "RECURSIVE",
}
_SELECT, _READ, _PRAGMA, _FUNCTION, _RECURSIVE, _UPDATE = 21, 20, 19, 31, 33, 23
_SCHEMA_TABLES = ("sqlite_master", "sqlite_schema")


@dataclass(frozen=True)
class QueryResult:
    """The rows of one query; ``truncated`` says a cap cut it, ``notice`` says which."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False
    notice: str | None = None


@dataclass(frozen=True)
class Relation:
    """A table or view of the store, with its columns as (name, declared type)."""

    name: str
    kind: str
    columns: list[tuple[str, str]] = field(default_factory=list)


class _Sandbox:
    """The authorizer and progress handler of one query; remembers why it refused."""

    def __init__(self, time_limit_s: float) -> None:
        self.time_limit_s = time_limit_s
        self.deadline = math.inf
        self.timed_out = False
        self.refusal: str | None = None
        self._statement_is_select = False

    def start_clock(self) -> None:
        self.deadline = time.monotonic() + self.time_limit_s

    def progress(self) -> int:
        if time.monotonic() > self.deadline:
            self.timed_out = True
            return 1  # non-zero interrupts the statement
        return 0

    def authorize(self, action: int, arg1: str | None, arg2: str | None,
                  db_name: str | None, source: str | None) -> int:
        if action == _SELECT:
            self._statement_is_select = True
            return sqlite3.SQLITE_OK
        if action in (_READ, _RECURSIVE):
            return sqlite3.SQLITE_OK
        if action == _FUNCTION:
            if (arg2 or "").lower() in ALLOWED_FUNCTIONS:
                return sqlite3.SQLITE_OK
            return self._refuse(
                f"function {arg2}() is not allowed in runstore sql; Try: the core, date, "
                "math and JSON functions of SQLite")
        if action == _PRAGMA:
            name = (arg1 or "").lower()
            if name in PRAGMAS_WITH_ARGUMENT or (name in PRAGMAS_WITHOUT_VALUE
                                                 and arg2 is None):
                return sqlite3.SQLITE_OK
            shown = f"PRAGMA {arg1}" + (f" = {arg2}" if arg2 is not None else "")
            return self._refuse(
                f"{shown} is not allowed in runstore sql (it reads only); Try: "
                f"PRAGMA {', '.join(sorted(PRAGMAS_WITH_ARGUMENT))}(TABLE), or "
                f"{', '.join(sorted(PRAGMAS_WITHOUT_VALUE))} without a value")
        if (action == _UPDATE and self._statement_is_select and arg1 in _SCHEMA_TABLES
                and source is None):
            # SQLite authorizes this internally when a SELECT first uses a table-valued
            # function (json_each, pragma_table_info): the schema table is not written.
            return sqlite3.SQLITE_OK
        what = _ACTIONS.get(action, f"action {action}")
        if action == 26:  # ALTER TABLE: (database, table)
            arg1 = arg2
        if action in (24, 25):  # ATTACH, DETACH (VACUUM attaches too)
            return self._refuse(
                f"{what} {arg1!r} is not allowed in runstore sql: it reads the local store "
                "only; Try: open other databases with sqlite3 or datasette")
        if action in (9, 18, 23) and arg1 and arg1.startswith("sqlite_"):
            # DROP, CREATE, ALTER and ANALYZE are first authorized as writes of these tables.
            what = "changing the schema (CREATE, DROP, ALTER, ANALYZE)"
        elif arg1 and not arg1.startswith("sqlite_"):
            what = f"{what} on {arg1}"
        return self._refuse(
            f"{what} is not allowed: runstore sql is read-only; Try: one SELECT "
            "(or WITH ... SELECT) statement")

    def _refuse(self, message: str) -> int:
        if self.refusal is None:
            self.refusal = message
        return sqlite3.SQLITE_DENY


def _db_path(store: Store | str | os.PathLike[str]) -> Path:
    return store.db_path if isinstance(store, Store) else Path(store)


@contextlib.contextmanager
def sandboxed_connection(store: Store | str | os.PathLike[str], *,
                         time_limit_s: float = DEFAULT_TIME_LIMIT_S,
                         max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
                         ) -> Iterator[tuple[sqlite3.Connection, _Sandbox]]:
    """A read-only connection to the store's database with the sandbox installed."""
    path = _db_path(store)
    if not path.is_file():
        raise SQLError(f"no runstore database at {str(path)!r}; Try: set RUNSTORE_HOME to "
                       "the store directory")
    if not hasattr(sqlite3.Connection, "setlimit"):
        raise SQLError("runstore sql needs Python 3.11 or newer (for sqlite3 setlimit); "
                       "Try: query the file with sqlite3 -readonly instead")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0,
                               isolation_level=None)
    except sqlite3.Error as exc:
        raise SQLError(f"cannot open {str(path)!r} read-only: {exc}; Try: check the file "
                       "and its directory are readable") from exc
    with contextlib.ExitStack() as stack:
        stack.callback(conn.close)
        if hasattr(conn, "enable_load_extension"):
            conn.enable_load_extension(False)
        conn.execute("PRAGMA query_only = 1")
        _set_limits(conn, ATTACHED=0, LENGTH=max_value_bytes,
                    SQL_LENGTH=min(MAX_SQL_BYTES, max_value_bytes),
                    LIKE_PATTERN_LENGTH=MAX_LIKE_PATTERN_BYTES)
        sandbox = _Sandbox(time_limit_s)
        helper = _guard_printf(conn, sandbox, max_value_bytes)
        stack.callback(helper.close)
        conn.set_authorizer(sandbox.authorize)
        conn.set_progress_handler(sandbox.progress, PROGRESS_INSTRUCTIONS)
        yield conn, sandbox


def _set_limits(conn: sqlite3.Connection, **limits: int) -> None:
    """conn.setlimit(SQLITE_LIMIT_<NAME>, value) for each (Python 3.11+)."""
    for name, value in limits.items():
        conn.setlimit(getattr(sqlite3, f"SQLITE_LIMIT_{name}"), value)  # type: ignore[attr-defined]


# A printf() conversion spec up to its conversion letter; SQLite takes flags, width ('*' reads
# an argument) and precision in any order, so all of them are matched together.
_PRINTF_SPEC = re.compile(r"%[-+ #!0,l.*\d]*")


def _as_int_bound(value: Any) -> float:
    """An upper bound of abs(the integer SQLite reads from value for a '*' width)."""
    if isinstance(value, (int, float)):
        return abs(value)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, str):
        text = value.strip()
        bounds = [0.0]
        with contextlib.suppress(ValueError):
            bounds.append(abs(float(text)))
        digits = re.match(r"[+-]?(\d+)", text)
        if digits:
            bounds.append(math.inf if len(digits.group(1)) > 20 else int(digits.group(1)))
        return max(bounds)
    return 0.0


def _guard_printf(conn: sqlite3.Connection, sandbox: _Sandbox,
                  max_value_bytes: int) -> sqlite3.Connection:
    """Replace printf()/format() by a checked call of the built-in one.

    SQLite's printf repeats '%c' once per unit of precision in one function call, where the
    progress handler cannot stop it: printf('%.*c', 2000000000, 'x') takes seconds and a
    format with many such specs takes hours. Widths and precisions above the value cap can
    only produce a value that is too big, so they are refused up front.
    """
    helper = sqlite3.connect(":memory:")
    _set_limits(helper, LENGTH=max_value_bytes)

    def printf(*all_args: Any) -> Any:
        if not all_args:
            return None
        fmt, *args = all_args
        if isinstance(fmt, str):
            specs = _PRINTF_SPEC.findall(fmt)
            numbers = [int(d) if len(d) <= 20 else math.inf
                       for spec in specs for d in re.findall(r"\d+", spec)]
            if any("*" in spec for spec in specs):
                numbers.extend(_as_int_bound(a) for a in args)
            if any(n > max_value_bytes for n in numbers):
                sandbox.refusal = sandbox.refusal or (
                    f"printf()/format() width or precision above the cap of "
                    f"{max_value_bytes:,} bytes for one value is refused; Try: a smaller one")
                raise ValueError("printf width or precision too large")
        marks = ", ".join("?" * (len(args) + 1))
        return helper.execute(f"SELECT printf({marks})", (fmt, *args)).fetchone()[0]

    for name in ("printf", "format"):
        conn.create_function(name, -1, printf, deterministic=True)
    return helper


def _value_size(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes)) else 8


def run_query(store: Store | str | os.PathLike[str], sql: str,
              params: Sequence[Any] | Mapping[str, Any] = (), *,
              max_rows: int = DEFAULT_MAX_ROWS, time_limit_s: float = DEFAULT_TIME_LIMIT_S,
              max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
              max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES) -> QueryResult:
    """Run one read-only statement in the sandbox; at most ``max_rows`` rows come back.

    ``store`` is a Store or the path of a runstore database. Refusals, SQL errors, the time
    limit and an oversized value raise SQLError; the row and result-size caps cut the result
    (``truncated``) instead.
    """
    if not isinstance(max_rows, int) or max_rows < 1:
        raise SQLError(f"max_rows must be a positive integer, not {max_rows!r}")
    if not isinstance(time_limit_s, (int, float)) or not time_limit_s > 0 \
            or math.isinf(time_limit_s):
        raise SQLError(f"time_limit_s must be a positive number of seconds, not "
                       f"{time_limit_s!r}")
    if not isinstance(max_value_bytes, int) or max_value_bytes < 1_000:
        raise SQLError(f"max_value_bytes must be an integer of at least 1000, not "
                       f"{max_value_bytes!r}")
    if not isinstance(sql, str) or not sql.strip():
        raise SQLError("no SQL statement given; Try: runstore sql \"SELECT * FROM runs\"")
    with sandboxed_connection(store, time_limit_s=time_limit_s,
                              max_value_bytes=max_value_bytes) as (conn, sandbox):
        sandbox.start_clock()
        try:
            cursor = conn.execute(sql, params)
            columns = [d[0] for d in cursor.description or ()]
            rows: list[tuple[Any, ...]] = []
            size = 0
            notice = None
            while True:
                row = cursor.fetchone()
                if row is None:
                    break
                if len(rows) == max_rows:
                    notice = (f"result cut at {max_rows:,} rows (the row cap); Try: add "
                              "WHERE/LIMIT, or raise the cap (--max-rows)")
                    break
                size += sum(_value_size(v) for v in row)
                if size > max_result_bytes:
                    notice = (f"result cut at {len(rows):,} rows: it passed the cap of "
                              f"{max_result_bytes:,} bytes; Try: select fewer or shorter "
                              "columns")
                    break
                rows.append(row)
            cursor.close()
        except sqlite3.Error as exc:
            raise _translate(exc, sandbox, max_value_bytes) from exc
        except (OverflowError, ValueError) as exc:  # e.g. an int parameter too large
            raise SQLError(f"bad query parameter: {exc}") from exc
    return QueryResult(columns, rows, truncated=notice is not None, notice=notice)


def _translate(exc: sqlite3.Error, sandbox: _Sandbox, max_value_bytes: int) -> SQLError:
    message = str(exc)
    if sandbox.refusal is not None:
        return SQLError(sandbox.refusal)
    if sandbox.timed_out:
        return SQLError(
            f"the query ran past the time limit of {sandbox.time_limit_s:g} s and was stopped; "
            "Try: narrow it (WHERE, LIMIT) or allow more time (--timeout)")
    if isinstance(exc, sqlite3.ProgrammingError) and "one statement" in message:
        return SQLError("runstore sql runs one statement per call, and this has more after "
                        "the first ';'; Try: run each statement on its own")
    if "too big" in message:
        return SQLError(
            f"a value passed the cap of {max_value_bytes:,} bytes for one string or blob "
            "(string or blob too big); Try: a query that makes smaller values, or a higher "
            "cap (--max-value-bytes)")
    if isinstance(exc, sqlite3.ProgrammingError) and "binding" in message:
        return SQLError(f"query parameters do not match the SQL: {message}")
    if "readonly" in message or "read-only" in message or "query_only" in message:
        return SQLError(f"runstore sql is read-only ({message}); Try: one SELECT statement")
    return SQLError(f"SQL error: {message}; Try: runstore sql --schema lists the tables "
                    "and columns")


def list_relations(store: Store | str | os.PathLike[str]) -> list[Relation]:
    """The store's tables and views with their columns (read through the sandbox)."""
    import sqlite_utils

    with sandboxed_connection(store) as (conn, sandbox):
        sandbox.start_clock()
        try:
            db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
            relations = [
                Relation(name, kind, [(c.name, c.type) for c in db[name].columns])
                for kind, names in (("table", db.table_names()), ("view", db.view_names()))
                for name in names if not name.startswith("sqlite_")
            ]
        except sqlite3.Error as exc:
            raise _translate(exc, sandbox, DEFAULT_MAX_VALUE_BYTES) from exc
    return relations


def json_value(value: Any) -> Any:
    """A result value as JSON: +-inf become null (JSON has no Infinity), blobs base64."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        import base64

        return {"$base64": True, "encoded": base64.b64encode(value).decode("ascii")}
    return value
