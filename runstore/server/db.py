"""The server's database in SQLAlchemy Core: schema and engine.

Only this module knows the dialect. The embedded default is SQLite in ``<data>/server.db``; a
``postgresql+psycopg://`` URL works the same way because the handlers only use Core
expressions, and every race that matters is decided by a unique constraint or a conditional
UPDATE (``... WHERE metric_count = :expected``), and where a write first reads what it
decides on, by a row lock (``SELECT ... FOR UPDATE``, see ``Database``) rather than by SQLite's
single writer. On SQLite a process-wide lock additionally serialises write transactions.

JSON documents (labels, hparams, platform, git, remote history, lineage entries) are stored
as TEXT so that both dialects hold the same bytes. A NULL metric value is NaN.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    exc,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import make_url
from sqlalchemy.sql import column as sql_column
from sqlalchemy.sql import table as sql_table
from sqlalchemy.sql.dml import Insert

log = logging.getLogger(__name__)

metadata = MetaData()


def _name(length: int) -> String:
    """A name or path column: compared and ordered byte-wise on both dialects (SQLite's BINARY
    collation; "C" on PostgreSQL, whatever the database's default locale)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


# Counts, offsets, steps and sizes are 64-bit on the wire (protocol.INT64_MAX): BIGINT, which
# PostgreSQL needs (its INTEGER is 32-bit) and SQLite treats like any INTEGER.
Int64 = BigInteger

users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", _name(64), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

tokens = Table(
    "tokens", metadata,
    Column("id", String(32), primary_key=True),          # the public token id (prefix)
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False),    # sha256 hex of the whole token
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
)

folders = Table(
    "folders", metadata,
    Column("id", Integer, primary_key=True),
    Column("owner_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("path", _name(4096), nullable=False, unique=True),
    Column("parent_id", Integer, ForeignKey("folders.id", ondelete="CASCADE")),
    Column("created_at", Float, nullable=False),
)

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True),
    Column("owner_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("uuid", String(64), nullable=False),
    Column("folder_id", Integer, ForeignKey("folders.id", ondelete="CASCADE"), nullable=False),
    Column("name", _name(128), nullable=False),              # the node name in its folder
    Column("run_name", String(128), nullable=False),         # the run's own (t9k) name
    Column("alternative_name", String(128), nullable=False),
    Column("labels", Text, nullable=False, default="[]"),
    Column("description", Text, nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("start_timestamp", Text, nullable=False),
    Column("end_timestamp", Text),
    Column("hparams", Text, nullable=False, default="{}"),
    Column("platform", Text, nullable=False, default="{}"),
    Column("git", Text, nullable=False, default="{}"),
    Column("remote", Text, nullable=False, default="[]"),
    Column("metric_count", Int64, nullable=False, default=0),
    Column("complete", Boolean, nullable=False, default=False),
    Column("generation", Int64, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("owner_id", "uuid", name="runs_owner_uuid"),
    UniqueConstraint("folder_id", "name", name="runs_folder_name"),
)

metrics = Table(
    "metrics", metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Int64, primary_key=True, autoincrement=False),
    Column("type", _name(256), nullable=False),
    Column("key", _name(256), nullable=False),
    Column("step", Int64, nullable=False),
    Column("epoch", Int64),
    Column("value", Float),
    Column("timestamp", Text, nullable=False),
    sqlite_with_rowid=False,
)

artifacts = Table(
    "artifacts", metadata,
    Column("id", Integer, primary_key=True),
    Column("owner_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("uuid", String(64), nullable=False),
    Column("folder_id", Integer, ForeignKey("folders.id", ondelete="CASCADE"), nullable=False),
    Column("name", _name(128), nullable=False),
    Column("artifact_name", String(128), nullable=False),
    Column("alternative_name", String(128), nullable=False),
    Column("labels", Text, nullable=False, default="[]"),
    Column("description", Text, nullable=False, default=""),
    Column("created_timestamp", Text, nullable=False),
    Column("remote", Text, nullable=False, default="[]"),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("owner_id", "uuid", name="artifacts_owner_uuid"),
    UniqueConstraint("folder_id", "name", name="artifacts_folder_name"),
)

artifact_objects = Table(
    "artifact_objects", metadata,
    Column("artifact_id", Integer, ForeignKey("artifacts.id", ondelete="CASCADE"),
           primary_key=True),
    Column("path", _name(1024), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("sha256", String(64), ForeignKey("blobs.sha256")),
    Column("size_bytes", Int64),
    Column("uri", Text),
)

blobs = Table(
    "blobs", metadata,
    Column("sha256", String(64), primary_key=True),
    Column("size_bytes", Int64, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Who may reference (and read) a blob: only users who uploaded its bytes themselves, so the
# "which blobs are missing" answer never tells one user what another one stored.
blob_owners = Table(
    "blob_owners", metadata,
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("sha256", String(64), ForeignKey("blobs.sha256"), primary_key=True),
)

lineage = Table(
    "lineage", metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("direction", String(8), primary_key=True),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(64), nullable=False),
    Column("artifact_id", Integer, ForeignKey("artifacts.id", ondelete="SET NULL")),
    Column("entry", Text, nullable=False),
)

# t9k compatibility (runstore/server/t9k): the files of runs uploaded by t9k clients that are
# kept as bytes (stdout.log and any file the server does not parse), and for each
# metrics/<type>.yaml how many of its records are already rows in ``metrics``, and the length
# and sha256 of the part of the file they came from (the next upload parses only the rest).
t9k_run_files = Table(
    "t9k_run_files", metadata,
    Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("path", _name(1024), primary_key=True),
    Column("sha256", String(64), ForeignKey("blobs.sha256")),
    Column("size_bytes", Int64),
    Column("records", Int64, nullable=False, default=0),
    Column("parsed_bytes", Int64, nullable=False, default=0),
    Column("prefix_sha256", String(64)),
)

# The web UI's reads of long series (runstore/server/rollups.py keeps both tables up to date in
# insert_metric_rows): one summary row per (run, type, key) -- count, NaNs, step range, min, max,
# last -- and per-level step buckets (bucket = step >> 3*level, levels 2 to 12) holding the same
# aggregates, so a chart of a million points reads about a thousand rows. Deleting a run deletes
# them (cascade). WITHOUT ROWID on SQLite: the primary key is the only index they need.
def _series_columns() -> list[Column]:
    return [Column("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"),
                   primary_key=True),
            Column("type", _name(256), primary_key=True),
            Column("key", _name(256), primary_key=True)]


def _aggregate_columns() -> list[Column]:
    return [Column("n", Int64, nullable=False), Column("nan_count", Int64, nullable=False),
            Column("min_value", Float), Column("max_value", Float), Column("last_value", Float),
            Column("last_step", Int64, nullable=False), Column("last_seq", Int64, nullable=False)]


metric_series = Table(
    "metric_series", metadata, *_series_columns(),
    Column("min_step", Int64, nullable=False), Column("max_step", Int64, nullable=False),
    *_aggregate_columns(),
    sqlite_with_rowid=False,
)
metric_rollups = Table(
    "metric_rollups", metadata, *_series_columns(),
    Column("level", Integer, primary_key=True, autoincrement=False),
    Column("bucket", Int64, primary_key=True, autoincrement=False),
    *_aggregate_columns(),
    sqlite_with_rowid=False,
)

# Web UI sessions (runstore/ui/sessions.py): the sha256 of the cookie's secret, bound to the
# API token the user logged in with, so revoking that token ends the session too.
ui_sessions = Table(
    "ui_sessions", metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("token_id", String(32), ForeignKey("tokens.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)

Index("lineage_artifact", lineage.c.artifact_id)
# Raw points of one series in a step range (a zoomed chart).
Index("metrics_series_step", metrics.c.run_id, metrics.c.type, metrics.c.key, metrics.c.step)
Index("runs_folder", runs.c.folder_id)
# The web UI's runs table: a folder's runs in start or name order without sorting them all.
Index("runs_folder_start", runs.c.folder_id, runs.c.start_timestamp)
Index("runs_folder_run_name", runs.c.folder_id, runs.c.run_name)
Index("artifacts_folder", artifacts.c.folder_id)


def normalize_url(url: str) -> str:
    """A database URL as SQLAlchemy should see it: plain ``postgresql://`` (or ``postgres://``)
    means the psycopg 3 driver that the ``runstore[postgres]`` extra installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def display_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    return make_url(url).render_as_string(hide_password=True)


class Database:
    """An engine plus the write discipline every handler uses.

    SQLite: one writer at a time (a process-wide lock, and SQLite's own), reads in one BEGIN
    snapshot. PostgreSQL: writes run at READ COMMITTED and every decision that reads before
    it writes first takes a row lock (``lock_user`` / ``lock_run``), so they are serialised
    exactly where SQLite's single writer serialised them; reads run at REPEATABLE READ so a
    response comes from one snapshot, as on SQLite.
    """

    def __init__(self, url: str) -> None:
        url = normalize_url(url)
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 30})
            event.listen(self.engine, "connect", _sqlite_pragmas)
            # pysqlite's own transaction handling is off (isolation_level=None in
            # _sqlite_pragmas); begin explicitly so reads see one snapshot.
            event.listen(self.engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10,
                                        max_overflow=30, isolation_level="READ COMMITTED")
        self._write_lock = threading.Lock() if self.is_sqlite else None
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "postgresql":
                # The server and `runstore user ...` may create the schema at the same time.
                conn.execute(text("SELECT pg_advisory_xact_lock(7461281)"))
            metadata.create_all(conn)
            # create_all makes missing tables with their indexes, but not an index added later
            # to a table that already exists (a database made by an older version)
            for table in metadata.sorted_tables:
                for index in table.indexes:
                    index.create(conn, checkfirst=True)
            if self.engine.dialect.name == "postgresql":
                add_jsonb_column(conn, "hparams")
                add_jsonb_column(conn, "labels")
                add_hparam_values(conn)
                add_series_folder(conn)
                # the runs page's label filter (`labels_jsonb @> '["x"]'`) reads this index
                # instead of every run's labels in the folder
                conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS runs_labels_gin ON runs "
                                     "USING gin (labels_jsonb jsonb_path_ops)")
                add_name_trigrams(conn)

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> Database:
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{data_dir / 'server.db'}")

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (serialised on SQLite; row locks decide on PostgreSQL)."""
        lock = self._write_lock or contextlib.nullcontext()
        with lock, self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction on one snapshot (rolled back at the end)."""
        with self.engine.connect() as conn:
            if not self.is_sqlite:
                # Set on the driver's connection (no round trip): psycopg then opens the
                # transaction with one `BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY`;
                # both are reset when the connection goes back to the pool.
                conn.execution_options(isolation_level="REPEATABLE READ",
                                       postgresql_readonly=True)
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def add_jsonb_column(conn: Connection, name: str) -> None:
    """PostgreSQL: ``runs.<name>_jsonb``, the JSON text column ``name`` (hparams, labels)
    parsed once when the run is written (a stored generated column), so the runs page sorts
    10,000 runs by an hparam, or filters them by a label, without parsing 10,000 JSON texts
    per request. Not in ``metadata``: nothing writes it, and SQLite (which reads the text with
    its JSON functions) has no such column. A text that is not JSON (never written by this
    server) becomes NULL instead of failing the row."""
    exists = conn.exec_driver_sql(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        f"AND table_name = 'runs' AND column_name = '{name}_jsonb'").first()
    if exists:
        return
    conn.exec_driver_sql(
        "CREATE OR REPLACE FUNCTION runstore_jsonb_or_null(doc text) RETURNS jsonb "
        "LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$ "
        "BEGIN RETURN doc::jsonb; EXCEPTION WHEN others THEN RETURN NULL; END $$")
    conn.exec_driver_sql(
        f"ALTER TABLE runs ADD COLUMN {name}_jsonb jsonb "
        f"GENERATED ALWAYS AS (runstore_jsonb_or_null({name})) STORED")


def add_name_trigrams(conn: Connection) -> bool:
    """PostgreSQL: trigram indexes on runs.name and runs.run_name (pg_trgm), so the runs
    page's name filter (`LIKE '%text%'`) reads the matching runs from an index instead of
    testing every run of the folder. Optional: where the extension is not installed or this
    role may not create it, the filter scans, as before; whether they exist is returned."""
    exists = conn.exec_driver_sql(
        "SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() "
        "AND indexname = 'runs_run_name_trgm'").first()
    if exists:
        return True
    try:
        with conn.begin_nested():
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except exc.DBAPIError as error:
        log.warning("the runs page's name filter will scan: CREATE EXTENSION pg_trgm "
                    "failed (%s). Try: install PostgreSQL's contrib package, or run "
                    "CREATE EXTENSION pg_trgm as the database's owner",
                    str(error.orig).splitlines()[0])
        return False
    for column in ("name", "run_name"):
        conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS runs_{column}_trgm ON runs "
                             f"USING gin ({column} gin_trgm_ops)")
    return True


# PostgreSQL: one row per (run, flattened hparam key), kept by a trigger on runs, so sorting a
# folder by an hparam reads the page from an index in order instead of extracting the key from
# 10,000 JSON documents (10 ms a page at 10,000 runs). Derived data, not in ``metadata``.
# Values sort as SQLite's json_extract does: numbers and booleans (0/1) by value, then
# strings (binary order, "C" collation), arrays and objects (their JSON text); JSON null is no
# row, like a missing key. A number outside float8's range (1e400) sorts with the texts.
hparam_values = sql_table("run_hparam_values", *map(sql_column, ("run_id", "folder_id", "key",
                                                                 "num", "txt")))

_HPARAM_VALUES_DDL = [
    "CREATE TABLE run_hparam_values ("
    " run_id integer NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
    " folder_id integer NOT NULL, key text NOT NULL, num double precision,"
    " txt text COLLATE \"C\", PRIMARY KEY (run_id, key))",
    "CREATE INDEX run_hparam_values_order ON run_hparam_values (folder_id, key, num, txt, run_id)",
    # the leaves of an hparams document: dotted keys, as runstore.ui.data.flatten
    "CREATE OR REPLACE FUNCTION runstore_hparam_leaves(doc jsonb) "
    "RETURNS TABLE (key text, value jsonb) LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ "
    "WITH RECURSIVE t (key, value) AS ("
    " SELECT e.key, e.value FROM jsonb_each(CASE WHEN jsonb_typeof(doc) = 'object'"
    "  THEN doc ELSE '{}'::jsonb END) e"
    " UNION ALL"
    " SELECT t.key || '.' || e.key, e.value FROM t, jsonb_each(CASE WHEN"
    "  jsonb_typeof(t.value) = 'object' THEN t.value ELSE '{}'::jsonb END) e)"
    " SELECT key, value FROM t WHERE jsonb_typeof(value) <> 'object' OR value = '{}'::jsonb $$",
    "CREATE OR REPLACE FUNCTION runstore_hparam_rows(run integer, folder integer, doc jsonb) "
    "RETURNS TABLE (run_id integer, folder_id integer, key text, num double precision, "
    "txt text) LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ "
    "SELECT run, folder, y.key,"
    " CASE WHEN y.t = 'boolean' THEN CASE WHEN y.value = 'true'::jsonb THEN 1.0 ELSE 0.0 END"
    "  WHEN y.fits THEN y.n::float8 END,"
    " CASE WHEN y.t = 'string' THEN y.value #>> '{}'"
    "  WHEN y.t IN ('array', 'object') OR NOT y.fits THEN y.value::text END"
    " FROM (SELECT x.*, x.n = 0 OR abs(x.n) BETWEEN 4.95e-324 AND 1.7976931348623157e308"
    "  AS fits FROM (SELECT l.key, l.value, jsonb_typeof(l.value) AS t, CASE WHEN"
    "  jsonb_typeof(l.value) = 'number' THEN l.value::numeric END AS n"
    "  FROM runstore_hparam_leaves(doc) l) x) y WHERE y.t <> 'null' $$",
    "CREATE OR REPLACE FUNCTION runstore_index_hparams() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN"
    " IF TG_OP = 'UPDATE' THEN DELETE FROM run_hparam_values WHERE run_id = NEW.id; END IF;"
    " INSERT INTO run_hparam_values"
    "  SELECT * FROM runstore_hparam_rows(NEW.id, NEW.folder_id, NEW.hparams_jsonb);"
    " RETURN NULL; END $$",
    "CREATE TRIGGER runs_hparam_values AFTER INSERT OR UPDATE OF hparams, folder_id ON runs "
    "FOR EACH ROW EXECUTE FUNCTION runstore_index_hparams()",
    # a database made before this table: index the runs it already holds
    "INSERT INTO run_hparam_values SELECT h.* FROM runs r,"
    " LATERAL runstore_hparam_rows(r.id, r.folder_id, r.hparams_jsonb) h",
]


def add_hparam_values(conn: Connection) -> None:
    """PostgreSQL: create ``run_hparam_values`` and its trigger (once; the caller holds the
    schema lock), indexing the runs already stored."""
    exists = conn.exec_driver_sql(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() "
        "AND table_name = 'run_hparam_values'").first()
    if exists:
        return
    for statement in _HPARAM_VALUES_DDL:
        conn.exec_driver_sql(statement)


# PostgreSQL: metric_series.folder_id, the run's folder, kept by triggers (on insert into
# metric_series, and when a run changes folder), with an index per sortable summary, so a
# folder's runs page sorted by a metric's last or best value reads its page from an index in
# order instead of joining and sorting every run's series (15 ms a page at 10,000 runs).
# Derived data, not in ``metadata``: SQLite sorts the join itself, fast enough there.
series_by_folder = sql_table("metric_series", *map(sql_column, (
    "run_id", "folder_id", "type", "key", "min_value", "max_value", "last_value")))
SERIES_ORDER_COLUMNS = ("min_value", "max_value", "last_value")

_SERIES_FOLDER_DDL = [
    "ALTER TABLE metric_series ADD COLUMN folder_id integer",
    "CREATE OR REPLACE FUNCTION runstore_series_folder() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN NEW.folder_id := (SELECT folder_id FROM runs WHERE id = NEW.run_id); RETURN NEW; "
    "END $$",
    "CREATE TRIGGER metric_series_folder BEFORE INSERT ON metric_series "
    "FOR EACH ROW EXECUTE FUNCTION runstore_series_folder()",
    "CREATE OR REPLACE FUNCTION runstore_runs_series_folder() RETURNS trigger LANGUAGE plpgsql "
    "AS $$ BEGIN UPDATE metric_series SET folder_id = NEW.folder_id WHERE run_id = NEW.id; "
    "RETURN NULL; END $$",
    "CREATE TRIGGER runs_series_folder AFTER UPDATE OF folder_id ON runs FOR EACH ROW "
    "WHEN (OLD.folder_id IS DISTINCT FROM NEW.folder_id) "
    "EXECUTE FUNCTION runstore_runs_series_folder()",
    # a database made before the column: the series it already holds
    "UPDATE metric_series s SET folder_id = r.folder_id FROM runs r WHERE r.id = s.run_id",
    *(f"CREATE INDEX metric_series_by_{name} ON metric_series "
      f"(folder_id, type, key, {name}, run_id)" for name in SERIES_ORDER_COLUMNS),
    # statistics for the new column now: until autovacuum gathers them, the planner takes
    # a folder's series for a handful and sorts them all instead of reading the index
    "ANALYZE metric_series",
]


def add_series_folder(conn: Connection) -> None:
    """PostgreSQL: add ``metric_series.folder_id``, its triggers and sort indexes (once; the
    caller holds the schema lock), filling it for the series already stored."""
    exists = conn.exec_driver_sql(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = 'metric_series' AND column_name = 'folder_id'").first()
    if exists:
        return
    for statement in _SERIES_FOLDER_DDL:
        conn.exec_driver_sql(statement)


def lock_user(conn: Connection, user_id: int) -> None:
    """Serialise the caller's write with every other one that calls this for the user (claims,
    folder creation): the names in a user's folders and the uuids of a user's runs and
    artifacts are then decided one at a time. FOR NO KEY UPDATE, so inserts that merely
    reference the user (foreign keys) are not blocked. A no-op on SQLite (one writer)."""
    conn.execute(select(users.c.id).where(users.c.id == user_id)
                 .with_for_update(key_share=True))


def insert_ignore(conn: Connection, table: Table, **values) -> None:
    """INSERT the row unless one with the same key exists (ON CONFLICT DO NOTHING)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(table).values(**values).on_conflict_do_nothing())


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute("PRAGMA busy_timeout = 30000")
    cur.close()


def insert_returning_id(conn: Connection, statement: Insert) -> int:
    """Execute a single-row INSERT; return the new row's primary key."""
    key = conn.execute(statement).inserted_primary_key
    if key is None:  # only for executemany, which a single-row insert never is
        raise RuntimeError("the database returned no primary key for a single-row insert")
    return int(key[0])
