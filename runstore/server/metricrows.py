"""The one way metric rows get into the server's database: the engine's bulk path, then the
web UI's series summaries and rollups in the same transaction.

Used by the sync protocol's chunk handler (service.py), the t9k compatibility API
(t9k/ingest.py) and `runstore server migrate`. Kept apart from db.py (the schema and engine)
because the rollups module builds on db.py's tables, and this module on both.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from runstore.server import rollups

METRIC_COLUMNS = ("run_id", "seq", "type", "key", "step", "epoch", "value", "timestamp")
_SQLITE_METRIC_INSERT = (f"INSERT INTO metrics ({', '.join(METRIC_COLUMNS)}) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
_PG_METRIC_COPY = f"COPY metrics ({', '.join(METRIC_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_PG_METRIC_TYPES = ("int4", "int8", "text", "text", "int8", "int8", "float8", "text")


class UnstorableValue(ValueError):
    """A metric value the database refuses (a NUL character on PostgreSQL)."""


def insert_metric_rows(conn: Connection, run_id: int, offset: int, rows: list[tuple]) -> None:
    """Insert decoded rows as seq offset.. : the one way the server stores metric rows.

    The engine's bulk path, inside the caller's transaction: SQLite ``executemany`` of one
    prepared statement; PostgreSQL binary ``COPY`` through psycopg. Both skip SQLAlchemy's
    per-row parameter processing, which cost more than the insert itself (the ingest fast
    path, benchmarks/ingest.py). A duplicate key still fails (the primary key holds on both).
    The web UI's series summary and rollups (runstore/server/rollups.py) follow in the same
    transaction.
    """
    if conn.dialect.name == "postgresql":
        _copy_metric_rows(conn, run_id, offset, rows)
    else:
        conn.exec_driver_sql(_SQLITE_METRIC_INSERT,
                             [(run_id, offset + i, *r) for i, r in enumerate(rows)])
    rollups.add_rows(conn, run_id, offset, rows)


def _copy_metric_rows(conn: Connection, run_id: int, offset: int, rows: list[tuple]) -> None:
    import psycopg

    raw = conn.connection.driver_connection
    assert raw is not None
    try:
        with raw.cursor() as cur, cur.copy(_PG_METRIC_COPY) as copy:
            copy.set_types(_PG_METRIC_TYPES)
            write_row = copy.write_row
            seq = offset
            for r in rows:
                write_row((run_id, seq, *r))
                seq += 1
    except psycopg.DataError as exc:
        raise UnstorableValue(
            f"a value cannot be stored: {str(exc).splitlines()[0]}") from None
