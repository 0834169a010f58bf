"""Chart downsampling against a brute-force oracle: the server's rollups (kept up to date as
chunks arrive, in any chunking) and the local store's SQL bucketing give, per bucket, the true
min, max, NaN presence and last point, never more buckets than asked for; few points come
back raw. PostgreSQL gets the same check in test_series_postgres."""

from __future__ import annotations

import math
import random
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import select

from runstore.server import db, metricrows
from runstore.server.rollups import FIRST_LEVEL, LEVELS, rebuild
from runstore.ui.series import from_rollups, local_series


def make_rows(n: int, seed: int = 7) -> list[tuple]:
    """(type, key, step, epoch, value, timestamp) rows of two interleaved series; steps
    increase with gaps and repeats, NaNs and spikes sprinkled in."""
    rnd = random.Random(seed)
    rows, step = [], 0
    for i in range(n):
        step += rnd.choice((0, 1, 1, 1, 2, 5))
        value = None if rnd.random() < 0.01 else rnd.gauss(0, 1) * (100 if i % 997 == 0 else 1)
        rows.append(("train", "loss", step, None, value, "t"))
        if i % 3 == 0:
            rows.append(("val", "acc", step, None, rnd.random(), "t"))
    return rows


def oracle(points: list[tuple[int, int, float | None]], lo: int, hi: int, buckets: int):
    """{bucket: (min, max, has_nan, last (seq, step, value))} over (seq, step, value)."""
    width = hi - lo + 1
    out: dict[int, list] = {}
    for seq, step, value in points:
        if not lo <= step <= hi:
            continue
        g = (step - lo) * buckets // width
        cur = out.setdefault(g, [None, None, False, (-1, 0, None)])
        if value is None:
            cur[2] = True
        else:
            cur[0] = value if cur[0] is None else min(cur[0], value)
            cur[1] = value if cur[1] is None else max(cur[1], value)
        if seq > cur[3][0]:
            cur[3] = (seq, step, value)
    return out


def check(result: dict, points: list[tuple], lo: int, hi: int, buckets: int,
          exact: bool = False) -> None:
    assert len(result["x"]) <= buckets
    if result["raw"]:
        inside = sorted((s, q) for q, s, _v in points if lo <= s <= hi)
        assert result["x"] == [s for s, _q in inside]
        return
    want = oracle(points, lo, hi, buckets)
    # every true extreme is in the answer (bucket edges differ: rollups merge whole buckets)
    assert min(v for v in result["min"] if v is not None) == pytest.approx(
        min(w[0] for w in want.values() if w[0] is not None))
    assert max(v for v in result["max"] if v is not None) == pytest.approx(
        max(w[1] for w in want.values() if w[1] is not None))
    assert bool(result["nan"]) == any(w[2] for w in want.values())
    assert result["x"] == sorted(result["x"])
    assert all(lo <= x <= hi for x in result["x"])  # nothing from outside the range
    if exact:  # the same buckets as the oracle's: each one's min, max, NaN and last point
        got = {x: (mn, mx, y) for x, mn, mx, y in zip(result["x"], result["min"], result["max"],
                                                        result["y"], strict=True)}
        assert len(got) == len(want)
        for mn, mx, has_nan, (_seq, step, value) in want.values():
            assert got[step] == (mn, mx, value)
            assert has_nan == (step in result["nan"])


def series_points(rows: list[tuple], type_: str, key: str) -> list[tuple]:
    return [(seq, r[2], r[4]) for seq, r in enumerate(rows) if (r[0], r[1]) == (type_, key)]


def server_db(tmp_path: Path, url: str | None = None) -> tuple[db.Database, int]:
    database = db.Database(url) if url else db.Database.for_data_dir(tmp_path / "srv")
    with database.write() as conn:
        user = db.insert_returning_id(conn, db.users.insert().values(name="u", created_at=0))
        folder = db.insert_returning_id(conn, db.folders.insert().values(
            owner_id=user, path="/u", created_at=0))
        run = db.insert_returning_id(conn, db.runs.insert().values(
            owner_id=user, uuid="a" * 32, folder_id=folder, name="r", run_name="r",
            alternative_name="r_1", status="Complete", start_timestamp="t", created_at=0,
            updated_at=0))
    return database, run


def ingest(database: db.Database, run: int, rows: list[tuple], chunk: int) -> None:
    for start in range(0, len(rows), chunk):
        with database.write() as conn:
            metricrows.insert_metric_rows(conn, run, start, rows[start:start + chunk])


@pytest.mark.parametrize("chunk", [997, 8_000])
def test_server_rollups_match_the_oracle(tmp_path: Path, chunk: int) -> None:
    rows = make_rows(8_000)
    database, run = server_db(tmp_path)
    ingest(database, run, rows, chunk)
    points = series_points(rows, "train", "loss")
    steps = [p[1] for p in points]
    with database.read() as conn:
        summary = conn.execute(select(db.metric_series).where(
            db.metric_series.c.key == "loss")).one()
        assert summary.n == len(points)
        assert summary.nan_count == sum(1 for p in points if p[2] is None)
        assert summary.max_value == max(p[2] for p in points if p[2] is not None)
        for lo, hi, buckets in ((None, None, 500), (None, None, 4000), (1000, 9000, 300),
                                (5000, 5400, 1000), (7, 7, 10)):
            got = from_rollups(conn, run, "train", "loss", lo, hi, buckets)
            assert got is not None
            check(got, points, min(steps) if lo is None else lo,
                  max(steps) if hi is None else hi, buckets)
        # a small range of raw points: exactly the rows there
        assert from_rollups(conn, run, "train", "loss", 5000, 5400, 1000)["raw"]
        # a range finer than the first stored level: its rows merged, exactly the oracle's
        fine = from_rollups(conn, run, "train", "loss", 2000, 2900, 300)
        assert not fine["raw"]
        check(fine, points, 2000, 2900, 300, exact=True)
        levels = conn.execute(select(db.metric_rollups.c.level).distinct()).scalars().all()
        assert min(levels) == FIRST_LEVEL and max(levels) == LEVELS
        assert from_rollups(conn, run, "val", "nope", None, None, 100) is None
    # rebuilt from the metric rows, the rollups are the same as kept up at ingest
    with database.read() as conn:
        before = conn.execute(select(db.metric_rollups).order_by(
            *db.metric_rollups.primary_key.columns)).all()
    with database.write() as conn:
        rebuild(conn, run)
    with database.read() as conn:
        after = conn.execute(select(db.metric_rollups).order_by(
            *db.metric_rollups.primary_key.columns)).all()
    assert before == after
    database.dispose()


def local_store(tmp_path: Path, rows: list[tuple]) -> None:
    """A local store in tmp_path/home holding one run (id 1) with ``rows`` as its metrics."""
    from runstore.store import Store

    store = Store(tmp_path / "home")
    with store.write() as conn:
        conn.execute("INSERT INTO runs (uuid, name, alternative_name, start_timestamp, "
                     "local_dir, hostname) VALUES ('u', 'r', 'r_1', 't', '/x', 'h')")
        conn.executemany("INSERT INTO metrics VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                         [(i, *r) for i, r in enumerate(rows)])
    store.close()


def test_local_sql_bucketing_matches_the_oracle(tmp_path: Path) -> None:
    rows = make_rows(8_000, seed=11)
    local_store(tmp_path, rows)
    points = series_points(rows, "train", "loss")
    steps = [p[1] for p in points]
    conn = sqlite3.connect(f"file:{tmp_path / 'home' / 'runstore.db'}?mode=ro", uri=True)
    for lo, hi, buckets in ((None, None, 500), (1000, 9000, 300), (5000, 5400, 1000)):
        got = local_series(conn, 1, "train", "loss", lo, hi, buckets)
        assert got is not None
        check(got, points, min(steps) if lo is None else lo, max(steps) if hi is None else hi,
              buckets, exact=True)
    conn.close()


def test_series_postgres(pg_url: str, tmp_path: Path) -> None:
    rows = make_rows(6_000, seed=3)
    database, run = server_db(tmp_path, pg_url)
    ingest(database, run, rows, 1_500)
    points = series_points(rows, "train", "loss")
    steps = [p[1] for p in points]
    with database.read() as conn:
        for lo, hi, buckets in ((None, None, 300), (100, 2000, 200)):
            got = from_rollups(conn, run, "train", "loss", lo, hi, buckets)
            assert got is not None
            check(got, points, min(steps) if lo is None else lo,
                  max(steps) if hi is None else hi, buckets)
        fine = from_rollups(conn, run, "train", "loss", 100, 800, 200)  # below level 2
        assert not fine["raw"]
        check(fine, points, 100, 800, 200, exact=True)
    database.dispose()


def test_nan_last_point_is_a_gap(tmp_path: Path) -> None:
    database, run = server_db(tmp_path)
    rows = [("train", "loss", s, None, math.nan if s == 4 else float(s), "t") for s in range(8)]
    rows = [(t, k, s, e, None if v != v else v, ts) for t, k, s, e, v, ts in rows]
    ingest(database, run, rows, 3)
    with database.read() as conn:
        got = from_rollups(conn, run, "train", "loss", None, None, 100)
    assert got["raw"] and got["y"][4] is None and got["nan"] == [4]
    database.dispose()



def test_a_database_from_before_the_rollups_gets_them_at_startup(tmp_path: Path) -> None:
    """A server database written by an older version (rows, no summaries or rollups, no
    series index): opening it creates the index, and create_app folds every run's rows in,
    once."""
    from runstore.server import rollups
    from runstore.server.app import create_app

    rows = make_rows(5_000, seed=5)
    database, run = server_db(tmp_path)
    ingest(database, run, rows, 1_000)
    with database.read() as conn:
        kept = conn.execute(select(db.metric_rollups).order_by(
            *db.metric_rollups.primary_key.columns)).all()
    with database.write() as conn:  # what an older version left behind
        conn.execute(db.runs.update().values(metric_count=len(rows)))
        conn.execute(db.metric_series.delete())
        conn.execute(db.metric_rollups.delete())
        conn.exec_driver_sql("DROP INDEX metrics_series_step")
    database.dispose()

    database = db.Database.for_data_dir(tmp_path / "srv")
    with database.read() as conn:
        assert conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index' "
                                    "AND name = 'metrics_series_step'").first() is not None
        assert from_rollups(conn, run, "train", "loss", None, None, 500) is None
    create_app(tmp_path / "srv", database=database)
    with database.read() as conn:
        assert conn.execute(select(db.metric_rollups).order_by(
            *db.metric_rollups.primary_key.columns)).all() == kept
        got = from_rollups(conn, run, "train", "loss", None, None, 500)
        assert got is not None
        points = series_points(rows, "train", "loss")
        steps = [p[1] for p in points]
        check(got, points, min(steps), max(steps), 500)
    assert rollups.backfill(database) == 0  # nothing behind any more: nothing rebuilt
    database.dispose()


def infinite_rows() -> list[tuple]:
    """A loss that overflows to +inf at step 3000, with a -inf at step 10 and a NaN at 20."""
    return [("train", "loss", s, None,
             math.inf if s == 3000 else -math.inf if s == 10
             else None if s == 20 else 1.0 / (s + 1), "t") for s in range(4000)]


def check_infinities(got: dict, raw: bool) -> None:
    """JSON can carry the answer (no inf in it); the infinities are gaps with their steps
    listed, whether the points come raw or as buckets."""
    import json

    json.dumps(got, allow_nan=False)
    assert got["raw"] is raw
    assert len(got["posinf"]) == 1 and len(got["neginf"]) == 1 and len(got["nan"]) == 1
    if raw:
        assert got["posinf"] == [3000] and got["neginf"] == [10] and got["nan"] == [20]
        assert got["y"][3000] is None and got["y"][10] is None and got["y"][11] == 1 / 12
    else:  # the buckets holding them: their band edge is the gap
        inf_at = got["x"].index(got["posinf"][0])
        assert got["max"][inf_at] is None and got["min"][inf_at] is not None
        assert got["x"][inf_at - 1] < 3000 <= got["x"][inf_at]  # the bucket holding it
        assert got["x"][0] >= 10 and got["min"][0] is None  # -inf: the first bucket's floor


def test_infinities_are_marked_not_a_500(tmp_path: Path) -> None:
    """A diverging run logs +inf: its chart data is still JSON (Starlette refuses inf), on the
    server's rollups and the local store alike."""
    rows = infinite_rows()
    database, run = server_db(tmp_path)
    ingest(database, run, rows, 1_000)
    with database.read() as conn:
        check_infinities(from_rollups(conn, run, "train", "loss", None, None, 4000), raw=True)
        check_infinities(from_rollups(conn, run, "train", "loss", None, None, 100), raw=False)
        clean = from_rollups(conn, run, "train", "loss", 100, 2000, 4000)
        assert clean["posinf"] == [] and clean["neginf"] == [] and None not in clean["y"]
    database.dispose()
    local_store(tmp_path, rows)
    conn = sqlite3.connect(f"file:{tmp_path / 'home' / 'runstore.db'}?mode=ro", uri=True)
    check_infinities(local_series(conn, 1, "train", "loss", None, None, 4000), raw=True)
    check_infinities(local_series(conn, 1, "train", "loss", None, None, 100), raw=False)
    conn.close()
