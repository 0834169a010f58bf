"""Series summaries and step-bucket rollups, kept up to date as metric rows arrive.

Why at ingest: a chart of a million-point series must come back in tens of milliseconds, and
no SQL aggregate over a million rows does (SQLite or PostgreSQL). So every chunk of rows
stored by ``metricrows.insert_metric_rows`` (the one way rows get in) also folds into
``metric_series`` (one row per run, type and key) and ``metric_rollups`` (level L groups the
steps ``step >> 3L``: 8, 64, 512, ... steps per bucket, 12 levels). Each row holds count, NaN
count, min, max and the last point (by upload order). Reading a chart is then: pick the finest
level with at most a few thousand buckets in the step range, and merge them
(``runstore.ui.series``). Storage: about one rollup row per 7 metric rows.

A NaN is stored as NULL: it counts in ``n`` and ``nan_count``, never in min or max.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from runstore.server import db

LEVEL_BITS = 3
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
    level = _first_level(rows, offset)
    series = fold(((t, k), agg) for (t, k, _b), agg in level.items())
    _upsert_series(conn, run_id, series)
    for lv in range(1, LEVELS + 1):
        _upsert_rollups(conn, run_id, lv, level)
        if lv < LEVELS:
            level = fold(((t, k, b >> LEVEL_BITS), agg) for (t, k, b), agg in level.items())


def _first_level(rows: Sequence[tuple], offset: int) -> dict[tuple, Agg]:
    """Level-1 aggregates straight from the rows: fold() unrolled for single points, since
    this loop runs once per metric row stored (rows come in seq order, so each is the last)."""
    acc: dict[tuple, list] = {}
    seq = offset
    for t, k, step, _epoch, v, _ts in rows:
        key = (t, k, step >> LEVEL_BITS)
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


def _insert(conn: Connection):
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert


def _merged_columns(table, excluded) -> dict:
    """ON CONFLICT updates: the stored aggregate merged with the incoming one (which holds
    later points, so its last point wins)."""
    c = table.c
    return {
        "n": c.n + excluded.n,
        "nan_count": c.nan_count + excluded.nan_count,
        "min_value": case((c.min_value.is_(None), excluded.min_value),
                          (excluded.min_value < c.min_value, excluded.min_value),
                          else_=c.min_value),
        "max_value": case((c.max_value.is_(None), excluded.max_value),
                          (excluded.max_value > c.max_value, excluded.max_value),
                          else_=c.max_value),
        "last_value": excluded.last_value,
        "last_step": excluded.last_step,
        "last_seq": excluded.last_seq,
    }


def _values(agg: Agg) -> dict:
    return {"n": agg[0], "nan_count": agg[1], "min_value": agg[2], "max_value": agg[3],
            "last_value": agg[4], "last_step": agg[5], "last_seq": agg[6]}


def _upsert_series(conn: Connection, run_id: int, series: dict[tuple, Agg]) -> None:
    table = db.metric_series
    stmt = _insert(conn)(table)
    set_ = _merged_columns(table, stmt.excluded)
    set_["min_step"] = case((stmt.excluded.min_step < table.c.min_step, stmt.excluded.min_step),
                            else_=table.c.min_step)
    set_["max_step"] = case((stmt.excluded.max_step > table.c.max_step, stmt.excluded.max_step),
                            else_=table.c.max_step)
    stmt = stmt.on_conflict_do_update(index_elements=["run_id", "type", "key"], set_=set_)
    conn.execute(stmt, [{"run_id": run_id, "type": t, "key": k, "min_step": agg[7],
                         "max_step": agg[8], **_values(agg)} for (t, k), agg in series.items()])


def _upsert_rollups(conn: Connection, run_id: int, level: int,
                    buckets: dict[tuple, Agg]) -> None:
    table = db.metric_rollups
    stmt = _insert(conn)(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "type", "key", "level", "bucket"],
        set_=_merged_columns(table, stmt.excluded))
    conn.execute(stmt, [{"run_id": run_id, "type": t, "key": k, "level": level, "bucket": b,
                         **_values(agg)} for (t, k, b), agg in buckets.items()])


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
