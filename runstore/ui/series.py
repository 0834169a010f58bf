"""Chart data: a series downsampled to at most ``points`` buckets per step range.

Each bucket carries min, max and the last point (the last one logged in it), so a spike
survives as the band's edge and the line follows what the run reported. A NaN is a gap in
raw data and, in buckets, a marker at the bucket's step (``nan``: the steps of buckets that
held one). ``raw`` says the points are the run's own, not buckets: few enough in the range.

Two sources: the server's rollup tables (``from_rollups``: reads about a thousand rows for a
series of any length) and plain SQL bucketing over the local store (``local_series``:
one GROUP BY over the run's rows, no extra tables, since the local UI must not write).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Integer, literal, select
from sqlalchemy.engine import Connection

MAX_POINTS = 4000        # whatever the browser asks for
# A rollup level is fine enough when the range holds fewer of its buckets than half the points
# asked for: the browser asks for twice its pixel width, so that is still a bucket (with its
# min/max band) per pixel at best; levels 8x apart mean the chosen one holds between points/16
# and points/2 buckets. A chart reads at most about `points / 2` rows (plus the edges), or the
# points themselves for a range narrower than the first stored level serves (at most 4x
# `points` for a point per step; runstore/server/rollups.py says why there is no level 1).
_BUCKETS_PER_POINT = 0.5


def clamp_points(points: int) -> int:
    return max(10, min(int(points), MAX_POINTS))


def _result(raw: bool, n: int, lo: int, hi: int, x: list, y: list, mn: list | None,
            mx: list | None, nan: list) -> dict[str, Any]:
    return {"raw": raw, "n": n, "lo": lo, "hi": hi, "x": x, "y": y, "min": mn, "max": mx,
            "nan": nan, "posinf": [], "neginf": []}


def _infinities_marked(result: dict[str, Any]) -> dict[str, Any]:
    """JSON has no infinity: a +/-inf value (a point, or a bucket's last, min or max) becomes
    a gap (null), and its step is listed in ``posinf`` / ``neginf`` for a marker."""
    marks: dict[float, set[int]] = {math.inf: set(), -math.inf: set()}
    for name in ("y", "min", "max"):
        values = result[name]
        if values is None:
            continue
        for i, value in enumerate(values):
            if value in marks:
                marks[value].add(result["x"][i])
                values[i] = None
    result["posinf"], result["neginf"] = sorted(marks[math.inf]), sorted(marks[-math.inf])
    return result


def _raw(rows: Iterable[tuple[int, float | None]], n: int, lo: int, hi: int) -> dict[str, Any]:
    x: list[int] = []
    y: list[float | None] = []
    nan: list[int] = []
    for step, value in rows:
        x.append(step)
        y.append(value)
        if value is None:
            nan.append(step)
    return _result(True, n, lo, hi, x, y, None, None, nan)


def merge_buckets(rows: Iterable[Sequence], lo: int, hi: int, points: int,
                  n: int) -> dict[str, Any]:
    """Rows (start_step, n, nan_count, min, max, last_value, last_step, last_seq) of buckets
    inside [lo, hi] merged into at most ``points`` equal step ranges (by their start)."""
    width = hi - lo + 1
    groups: dict[int, Sequence] = {}
    for row in rows:
        start = row[0]
        g = min((start - lo) * points // width, points - 1) if start > lo else 0
        cur = groups.get(g)
        if cur is None:  # (most buckets are alone in theirs: kept as they are)
            groups[g] = row
            continue
        mn, mx = cur[3], cur[4]
        if row[3] is not None and (mn is None or row[3] < mn):
            mn = row[3]
        if row[4] is not None and (mx is None or row[4] > mx):
            mx = row[4]
        last = row if row[7] > cur[7] else cur
        groups[g] = (cur[0], cur[1] + row[1], cur[2] + row[2], mn, mx, last[5], last[6],
                     last[7])
    return _emit(groups.values(), lo, hi, n, first=1)


def cover(lo: int, hi: int, level: int, bits: int,
          first_level: int = 1) -> list[tuple[int, int, int]]:
    """[lo, hi] as aligned blocks, like a segment tree: (level, first, last) runs of whole
    buckets ``step >> bits*level`` at the given level and finer ones toward the edges, down to
    (0, lo, hi) step ranges of raw points; levels below ``first_level`` are not used (the
    edges there are raw ranges). At most two runs per level."""
    if lo > hi:
        return []
    if level < first_level:
        return [(0, lo, hi)]
    shift = bits * level
    first = (lo + (1 << shift) - 1) >> shift
    last = ((hi + 1) >> shift) - 1
    if first > last:
        return cover(lo, hi, level - 1, bits, first_level)
    return [(level, first, last), *cover(lo, (first << shift) - 1, level - 1, bits, first_level),
            *cover((last + 1) << shift, hi, level - 1, bits, first_level)]


def _emit(groups: Iterable[Sequence], lo: int, hi: int, n: int,
          first: int = 0) -> dict[str, Any]:
    """Buckets [n, nan_count, min, max, last, last_step, last_seq] (from index ``first`` of
    each) as chart data, in step order."""
    ordered = sorted(groups, key=itemgetter(first + 5))
    if not ordered:
        return _result(False, n, lo, hi, [], [], [], [], [])
    columns = list(zip(*ordered, strict=True))
    nans, mins, maxs, lasts, steps = columns[first + 1:first + 6]
    return _result(False, n, lo, hi, list(steps), list(lasts), list(mins), list(maxs),
                   [step for step, k in zip(steps, nans, strict=True) if k])


def from_rollups(conn: Connection, run_id: int, type_: str, key: str, lo: int | None,
                 hi: int | None, points: int) -> dict[str, Any] | None:
    """A series of the server's database, from metric_series/metric_rollups (None if the run
    has no such series)."""
    from runstore.server import db

    s = db.metric_series.c
    summary = conn.execute(select(s.n, s.min_step, s.max_step, s.min_value, s.max_value).where(
        s.run_id == run_id, s.type == type_, s.key == key)).first()
    if summary is None:
        return None
    got = _from_rollups(conn, run_id, type_, key, lo, hi, points, summary)
    infinite = summary.max_value == math.inf or summary.min_value == -math.inf
    return _infinities_marked(got) if infinite else got


def _from_rollups(conn: Connection, run_id: int, type_: str, key: str, lo: int | None,
                  hi: int | None, points: int, summary) -> dict[str, Any]:
    from runstore.server import db
    from runstore.server.rollups import FIRST_LEVEL, LEVEL_BITS, LEVELS

    points = clamp_points(points)
    lo = summary.min_step if lo is None else max(lo, summary.min_step)
    hi = summary.max_step if hi is None else min(hi, summary.max_step)
    if hi < lo:
        return _result(True, summary.n, lo, hi, [], [], None, None, [])
    m = db.metrics.c

    def raw() -> dict[str, Any]:
        rows = conn.execute(select(m.step, m.value).where(
            m.run_id == run_id, m.type == type_, m.key == key, m.step >= lo, m.step <= hi)
            .order_by(m.step, m.seq).limit(points + 1)).all()
        if len(rows) <= points:
            return _raw(rows, summary.n, lo, hi)
        return {}

    if summary.n <= points or hi - lo < points:
        got = raw()
        if got:
            return got
    level = 1
    while level < LEVELS and (hi >> (LEVEL_BITS * level)) - (lo >> (LEVEL_BITS * level)) \
            >= _BUCKETS_PER_POINT * points:
        level += 1
    r = db.metric_rollups.c
    rows: list[Sequence] = []
    # Below the first stored level (a range of at most 4x `points` steps) the rows
    # themselves are read and merged.
    for lv, first, last in cover(lo, hi, level, LEVEL_BITS, FIRST_LEVEL):
        if lv == 0:
            rows += [(step, 1, int(value is None), value, value, value, step, seq)
                     for step, value, seq in conn.execute(select(m.step, m.value, m.seq).where(
                         m.run_id == run_id, m.type == type_, m.key == key, m.step >= first,
                         m.step <= last)).all()]
            continue
        shift = LEVEL_BITS * lv
        rows += conn.execute(
            select(r.bucket.op("<<")(literal(shift, Integer)), r.n, r.nan_count,
                   r.min_value, r.max_value, r.last_value, r.last_step, r.last_seq).where(
                r.run_id == run_id, r.type == type_, r.key == key, r.level == lv,
                r.bucket >= first, r.bucket <= last)).all()
    if sum(map(itemgetter(1), rows)) <= points:  # sparse: the points themselves
        got = raw()
        if got:
            return got
    return merge_buckets(rows, lo, hi, points, summary.n)


def local_series(conn: sqlite3.Connection, run_id: int, type_: str, key: str,
                 lo: int | None, hi: int | None, points: int) -> dict[str, Any] | None:
    """A series of the local store by SQL bucketing (None if the run has no such series)."""
    points = clamp_points(points)
    n, min_step, max_step, min_value, max_value = conn.execute(
        "SELECT COUNT(*), MIN(step), MAX(step), MIN(value), MAX(value) FROM metrics "
        "WHERE run_id = ? AND type = ? AND key = ?", (run_id, type_, key)).fetchone()
    if not n:
        return None
    got = _local_series(conn, run_id, type_, key, lo, hi, points, n, min_step, max_step)
    infinite = max_value == math.inf or min_value == -math.inf
    return _infinities_marked(got) if infinite else got


def _local_series(conn: sqlite3.Connection, run_id: int, type_: str, key: str,
                  lo: int | None, hi: int | None, points: int, n: int, min_step: int,
                  max_step: int) -> dict[str, Any]:
    lo = min_step if lo is None else max(lo, min_step)
    hi = max_step if hi is None else min(hi, max_step)
    if hi < lo:
        return _result(True, n, lo, hi, [], [], None, None, [])
    where = "run_id = ? AND type = ? AND key = ? AND step BETWEEN ? AND ?"
    args = (run_id, type_, key, lo, hi)
    rows = conn.execute(f"SELECT step, value FROM metrics WHERE {where} ORDER BY step, seq "
                        f"LIMIT {points + 1}", args).fetchall()
    if len(rows) <= points:
        return _raw(rows, n, lo, hi)
    width = hi - lo + 1
    group = f"(step - {int(lo)}) * {int(points)} / {int(width)}"
    groups = {g: [c, nn, mn, mx, None, 0, -1] for g, c, nn, mn, mx in conn.execute(
        f"SELECT {group} AS g, COUNT(*), SUM(value IS NULL), MIN(value), MAX(value) "
        f"FROM metrics WHERE {where} GROUP BY g", args)}
    # One MAX() alone in the query, so SQLite takes the bare columns (value, step) from the
    # row with the highest seq in each bucket: the last point logged there.
    for g, value, step, seq in conn.execute(
            f"SELECT {group} AS g, value, step, MAX(seq) FROM metrics WHERE {where} GROUP BY g",
            args):
        groups[g][4:] = [value, step, seq]
    return _emit(groups.values(), lo, hi, n)
