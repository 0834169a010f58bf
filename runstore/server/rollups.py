"""Series summaries and step-bucket rollups, kept up to date as metric rows arrive.

Why at ingest: a chart of a million-point series must come back in tens of milliseconds, and
no SQL aggregate over a million rows does (SQLite or PostgreSQL). So every chunk of rows
stored by ``metricrows.insert_metric_rows`` (the one way rows get in) also folds into
``metric_series`` (one row per run, type and key) and ``metric_rollups`` (level L groups the
steps ``step >> 3L``: 64, 512, 4096, ... steps per bucket, levels 2 to 12). Each row holds
count, NaN count, min, max and the last point (by upload order). Reading a chart is then: pick
the finest level with at most a few thousand buckets in the step range, and merge them
(``runstore.ui.series``).

Why no level 1 (8 steps): its buckets cost a write per 8 steps of a dense series, and one per
point of a series logged every 8 steps or more (a validation metric), which was most of the
ingest time (benchmarks/ingest.py). A range that level 1 would serve holds at most
4x the points a chart asks for, so the reader takes those rows themselves and merges them.
Storage: about one rollup row per 60 metric rows of a dense series.

A NaN is stored as NULL: it counts in ``n`` and ``nan_count``, never in min or max.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from runstore.server import db

LEVEL_BITS = 3
FIRST_LEVEL = 2
LEVELS = 12

# (n, nan_count, min, max, last_value, last_step, last_seq, min_step, max_step)
Agg = tuple[int, int, "float | None", "float | None", "float | None", int, int, int, int]


def merge(a: Agg, b: Agg) -> Agg:
    """Two aggregates as one; the last point is the one uploaded later (higher seq)."""
    lo = a[2] if b[2] is None or (a[2] is not None and a[2] <= b[2]) else b[2]
    hi = a[3] if b[3] is None or (a[3] is not None and a[3] >= b[3]) else b[3]
    last = b if b[6] >= a[6] else a
    return (a[0] + b[0], a[1] + b[1], lo, hi, last[4], last[5], last[6],
            min(a[7], b[7]), max(a[8], b[8]))


def fold(points: Iterable[tuple[tuple, Agg]]) -> dict[tuple, Agg]:
    """Aggregates grouped by key, in input order."""
    out: dict[tuple, Agg] = {}
    for key, agg in points:
        old = out.get(key)
        out[key] = agg if old is None else merge(old, agg)
    return out


def add_rows(conn: Connection, run_id: int, offset: int, rows: Sequence[tuple]) -> None:
    """Fold rows (type, key, step, epoch, value, timestamp) stored at seq offset.. into the
    run's series summaries and rollups."""
    if not rows:
        return
    level = _first_level(rows, offset, LEVEL_BITS * FIRST_LEVEL)
    series = fold(((t, k), agg) for (t, k, _b), agg in level.items())
    buckets: list[tuple] = []
    for lv in range(FIRST_LEVEL, LEVELS + 1):
        buckets += [(run_id, t, k, lv, b, *agg[:7]) for (t, k, b), agg in level.items()]
        if lv < LEVELS:
            level = fold(((t, k, b >> LEVEL_BITS), agg) for (t, k, b), agg in level.items())
    upsert = _upsert_postgresql if conn.dialect.name == "postgresql" else _upsert_sqlite
    upsert(conn, _SERIES_SQL, [(run_id, t, k, *agg) for (t, k), agg in series.items()])
    upsert(conn, _ROLLUP_SQL, buckets)


def _first_level(rows: Sequence[tuple], offset: int, shift: int) -> dict[tuple, Agg]:
    """First-level aggregates straight from the rows: fold() unrolled for single points, since
    this loop runs once per metric row stored (rows come in seq order, so each is the last)."""
    acc: dict[tuple, list] = {}
    seq = offset
    for t, k, step, _epoch, v, _ts in rows:
        key = (t, k, step >> shift)
        a = acc.get(key)
        if a is None:
            acc[key] = [1, int(v is None), v, v, v, step, seq, step, step]
        else:
            a[0] += 1
            if v is None:
                a[1] += 1
            else:
                if a[2] is None or v < a[2]:
                    a[2] = v
                if a[3] is None or v > a[3]:
                    a[3] = v
            a[4], a[5], a[6] = v, step, seq
            if step < a[7]:
                a[7] = step
            elif step > a[8]:
                a[8] = step
        seq += 1
    return {key: tuple(a) for key, a in acc.items()}  # type: ignore[misc]


# The upserts are plain SQL through the driver: SQLAlchemy's per-row parameter processing cost
# more than the database's work (the same reason as metricrows' bulk insert). The stored
# aggregate is merged with the incoming one, which holds later points, so its last point wins.
_MERGE = """n = {t}.n + excluded.n, nan_count = {t}.nan_count + excluded.nan_count,
    min_value = CASE WHEN {t}.min_value IS NULL OR excluded.min_value < {t}.min_value
                     THEN excluded.min_value ELSE {t}.min_value END,
    max_value = CASE WHEN {t}.max_value IS NULL OR excluded.max_value > {t}.max_value
                     THEN excluded.max_value ELSE {t}.max_value END,
    last_value = excluded.last_value, last_step = excluded.last_step,
    last_seq = excluded.last_seq"""
_AGG_COLUMNS = ("n", "nan_count", "min_value", "max_value", "last_value", "last_step",
                "last_seq")
# (table, columns with their PostgreSQL array types, conflict target, extra SET clauses)
_SERIES_SQL = ("metric_series",
               (("run_id", "int4"), ("type", "text"), ("key", "text"), *zip(
                   (*_AGG_COLUMNS, "min_step", "max_step"),
                   ("int8", "int8", "float8", "float8", "float8", "int8", "int8", "int8",
                    "int8"), strict=True)),
               "run_id, type, key",
               ", min_step = CASE WHEN excluded.min_step < metric_series.min_step "
               "THEN excluded.min_step ELSE metric_series.min_step END"
               ", max_step = CASE WHEN excluded.max_step > metric_series.max_step "
               "THEN excluded.max_step ELSE metric_series.max_step END")
_ROLLUP_SQL = ("metric_rollups",
               (("run_id", "int4"), ("type", "text"), ("key", "text"), ("level", "int4"),
                ("bucket", "int8"), *zip(_AGG_COLUMNS, ("int8", "int8", "float8", "float8",
                                                        "float8", "int8", "int8"),
                                         strict=True)),
               "run_id, type, key, level, bucket", "")


def _statement(spec: tuple, values: str) -> str:
    table, columns, target, extra = spec
    names = ", ".join(name for name, _ in columns)
    return (f"INSERT INTO {table} ({names}) {values} ON CONFLICT ({target}) DO UPDATE SET "
            f"{_MERGE.format(t=table)}{extra}")


def _upsert_sqlite(conn: Connection, spec: tuple, rows: list[tuple]) -> None:
    """One prepared statement, executemany."""
    if rows:
        marks = ", ".join("?" * len(spec[1]))
        # "WHERE true" is not needed: VALUES, not SELECT, precedes ON CONFLICT here
        conn.exec_driver_sql(_statement(spec, f"VALUES ({marks})"), rows)


def _upsert_postgresql(conn: Connection, spec: tuple, rows: list[tuple]) -> None:
    """Binary COPY into a session's temporary table, then one INSERT .. SELECT that empties it
    (a round trip per row, or arrays as parameters, cost more than the upserts)."""
    if not rows:
        return
    table, columns, _target, _extra = spec
    staging, names = f"{table}_incoming", ", ".join(name for name, _ in columns)
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        cur.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} (LIKE {table}) "
                    "ON COMMIT DELETE ROWS")
        with cur.copy(f"COPY {staging} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types([kind for _, kind in columns])
            for row in rows:
                copy.write_row(row)
        cur.execute(f"WITH moved AS (DELETE FROM {staging} RETURNING {names}) "
                    + _statement(spec, f"SELECT {names} FROM moved"))


def rebuild(conn: Connection, run_id: int, chunk_rows: int = 50_000) -> None:
    """Recompute a run's summaries and rollups from its metric rows (for a database written
    before the rollups existed)."""
    conn.execute(db.metric_series.delete().where(db.metric_series.c.run_id == run_id))
    conn.execute(db.metric_rollups.delete().where(db.metric_rollups.c.run_id == run_id))
    m = db.metrics.c
    offset = 0
    while True:
        rows = conn.execute(
            db.metrics.select().with_only_columns(m.seq, m.type, m.key, m.step, m.epoch,
                                                   m.value, m.timestamp)
            .where(m.run_id == run_id, m.seq >= offset).order_by(m.seq).limit(chunk_rows)).all()
        if not rows:
            return
        # seqs are dense from 0 (the protocol's offsets), so a chunk is one run of seqs
        add_rows(conn, run_id, rows[0].seq, [tuple(r[1:]) for r in rows])
        offset = rows[-1].seq + 1


def backfill(database: db.Database) -> int:
    """Build the summaries and rollups of runs whose rows are not all folded in (a database
    written before the rollups existed); the number of runs rebuilt.

    A run needs it when its series' counts do not add up to its ``metric_count``: ingest
    updates both in one transaction, so they only differ for rows stored without rollups. Each
    run is rebuilt in its own transaction under its row lock, re-checked there, so replicas
    starting at once, or a chunk arriving meanwhile, never fold a row twice."""
    r, s = db.runs.c, db.metric_series.c
    folded = (select(s.run_id, func.sum(s.n).label("n")).group_by(s.run_id).subquery())
    behind = (select(r.id).outerjoin_from(db.runs, folded, folded.c.run_id == r.id)
              .where(r.metric_count != func.coalesce(folded.c.n, 0)))
    with database.read() as conn:
        run_ids = list(conn.execute(behind).scalars())
    rebuilt = 0
    for run_id in run_ids:
        with database.write() as conn:
            locked = select(r.metric_count).where(r.id == run_id)
            if conn.dialect.name == "postgresql":
                locked = locked.with_for_update()
            count = conn.execute(locked).scalar()
            have = conn.execute(select(func.coalesce(func.sum(s.n), 0))
                                .where(s.run_id == run_id)).scalar()
            if count is None or count == have:
                continue
            rebuild(conn, run_id)
            rebuilt += 1
    return rebuilt
