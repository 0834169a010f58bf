"""`runstore server migrate`: a server's database and blobs copied to a new database (e.g.
PostgreSQL) and a new blob store (e.g. an S3 bucket), for the move from one machine to
replicas (docs/SCALING.md).

Order, so that an interrupted migration can simply be run again:

1. every blob the old database lists is streamed from the old directory into the new store
   through the same verified, create-only path uploads take (its sha256 is checked again on
   the way; a blob already there is skipped). Blobs without database rows are harmless;
2. every table of the schema (``db.metadata``, so tables other modules add come along), in
   foreign-key order, rows with their ids, in ONE transaction on the new database: it holds
   all of them or none. Metric rows go through the ingest fast path (COPY on PostgreSQL).
   PostgreSQL's id sequences are then moved past the copied ids.

The new database must be empty (its tables may exist, with no rows); the old server should be
stopped, or its last writes may be missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from sqlalchemy import Integer, func, select, text

from runstore.server import db, metricrows
from runstore.server.blobs import Backend, LocalBackend, open_backend

BATCH = 5_000
METRIC_BATCH = 20_000


class MigrationError(Exception):
    """The migration cannot start or go on; nothing was changed in the new database."""


def migrate_server(from_data: Path, from_database: str | None, to_database: str,
                   to_blobs: str, progress: Callable[[str], None] = lambda _m: None
                   ) -> dict[str, int]:
    """Copy everything; returns figures (rows per table, blobs copied and skipped)."""
    if from_database is None and not (from_data / "server.db").exists():
        raise MigrationError(f"no server database in {from_data} (no server.db). Try: "
                             "--from-data DIR with the old server's --data directory, or "
                             "--from-database URL")
    source = db.Database(from_database) if from_database else db.Database.for_data_dir(
        from_data)
    target = db.Database(to_database)
    try:
        _check_empty(target)
        backend = open_backend(from_data, to_blobs)
        figures = asyncio.run(_copy_blobs(source, LocalBackend(from_data), backend, progress))
        figures.update(_copy_tables(source, target, progress))
        return figures
    finally:
        source.dispose()
        target.dispose()


def _check_empty(target: db.Database) -> None:
    with target.read() as conn:
        for table in db.metadata.sorted_tables:
            n = conn.execute(select(func.count()).select_from(table)).scalar_one()
            if n:
                raise MigrationError(
                    f"the new database already holds {n} rows in {table.name}; nothing was "
                    "copied. Try: an empty database (createdb NAME) as --to-database")


async def _copy_blobs(source: db.Database, old: Backend, new: Backend,
                      progress: Callable[[str], None]) -> dict[str, int]:
    with source.read() as conn:
        wanted = conn.execute(select(db.blobs.c.sha256, db.blobs.c.size_bytes)
                              .order_by(db.blobs.c.sha256)).all()
    copied = skipped = nbytes = 0
    for sha, size in wanted:
        if await new.exists(sha):
            skipped += 1
            continue
        if not await old.exists(sha):
            raise MigrationError(f"blob {sha} is listed in the old database but missing from "
                                 "its directory; nothing was copied to the new database. Try: "
                                 "restore the old server's blobs/ directory")
        written = await new.append(f"migrate-{sha}-{size}", sha, 0, size, _chunks(old, sha))
        if written != size:
            raise MigrationError(f"blob {sha}: {written} of {size} bytes read from the old "
                                 "directory; it is shorter than recorded")
        copied += 1
        nbytes += size
        if copied % 100 == 0:
            progress(f"blobs: {copied} copied, {skipped} already there")
    await new.close()
    progress(f"blobs: {copied} copied ({nbytes} bytes), {skipped} already there")
    return {"blobs_copied": copied, "blobs_skipped": skipped, "blob_bytes": nbytes}


async def _chunks(backend: Backend, sha: str) -> AsyncIterator[bytes]:
    async for chunk in backend.read(sha):
        yield chunk


def _copy_tables(source: db.Database, target: db.Database,
                 progress: Callable[[str], None]) -> dict[str, int]:
    figures: dict[str, int] = {}
    with source.read() as src, target.write() as dst:
        for table in db.metadata.sorted_tables:
            if table is db.metrics:
                n = _copy_metrics(src, dst)
            elif table in (db.metric_series, db.metric_rollups, db.ui_sessions):
                # the series summaries and rollups are rebuilt by insert_metric_rows as the
                # metric rows go in; UI sessions are not carried over (users sign in again)
                continue
            else:
                n = 0
                order = list(table.primary_key.columns) or list(table.columns)
                result = src.execution_options(stream_results=True).execute(
                    select(table).order_by(*order))
                for batch in result.mappings().partitions(BATCH):
                    dst.execute(table.insert(), [dict(r) for r in batch])
                    n += len(batch)
            figures[table.name] = n
            progress(f"{table.name}: {n} rows")
        if target.engine.dialect.name == "postgresql":
            for table in db.metadata.sorted_tables:
                ids = [c for c in table.primary_key.columns
                       if c.name == "id" and isinstance(c.type, Integer)]
                if ids:
                    dst.execute(text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"COALESCE((SELECT MAX(id) FROM {table.name}), 0) + 1, false)"))
    return figures


def _copy_metrics(src, dst) -> int:
    n = 0
    result = src.execution_options(stream_results=True).execute(
        select(db.metrics).order_by(db.metrics.c.run_id, db.metrics.c.seq))
    run_id: int | None = None
    first = 0
    rows: list[tuple] = []

    def flush() -> None:
        if rows and run_id is not None:
            metricrows.insert_metric_rows(dst, run_id, first, rows)

    for r in result:
        if r.run_id != run_id or len(rows) >= METRIC_BATCH or r.seq != first + len(rows):
            flush()
            run_id, first, rows = r.run_id, r.seq, []
        rows.append((r.type, r.key, r.step, r.epoch, r.value, r.timestamp))
        n += 1
    flush()
    return n
