"""The runs table's semantics, the same on the server's database (SQLite, PostgreSQL) and on the
local store: paging, sort by name / hparam (numeric) / metric (missing last), filters by status,
exact label (LIKE wildcards in it are plain characters) and name substring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from runstore.server import db, metricrows
from runstore.server.auth import User
from runstore.ui.data import MetricRef, RunsQuery
from runstore.ui.local import LocalData
from runstore.ui.serverdata import ServerData

N = 120
LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]


def spec(i: int) -> dict:
    """Run i: name, status, labels, hparams, and a val/acc value for most runs."""
    labels = ["all", "a_b" if i % 10 == 0 else "axb", "100%" if i == 7 else "plain"]
    return {"name": f"r{i:03d}" + ("-%odd" if i == 33 else ""),
            "status": "Error" if i % 4 == 0 else "Complete", "labels": labels,
            "hparams": {"lr": LRS[i % 5], "opt": {"name": "adam" if i % 2 else "sgd"}},
            "acc": None if i % 6 == 0 else (i % 17) / 17}


def server_data(tmp_path: Path, url: str | None = None, n: int = N,
                spec=spec) -> tuple[ServerData, db.Database]:
    database = db.Database(url) if url else db.Database.for_data_dir(tmp_path / "srv")
    with database.write() as conn:
        user = db.insert_returning_id(conn, db.users.insert().values(name="u", created_at=0))
        folder = db.insert_returning_id(conn, db.folders.insert().values(
            owner_id=user, path="/u/f", created_at=0))
        for i in range(n):
            s = spec(i)
            run = db.insert_returning_id(conn, db.runs.insert().values(
                owner_id=user, uuid=f"{i:032x}", folder_id=folder, name=s["name"],
                run_name=s["name"], alternative_name=s["name"] + "_1", status=s["status"],
                labels=json.dumps(s["labels"]), hparams=json.dumps(s["hparams"]),
                start_timestamp=f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00",
                created_at=0, updated_at=0))
            if s["acc"] is not None:
                metricrows.insert_metric_rows(
                    conn, run, 0, [("val", "acc", 1, None, s["acc"], "t")])
    return ServerData(database, User(user, "u")), database


def local_data(tmp_path: Path, n: int = N, spec=spec) -> LocalData:
    from runstore.store import Store

    store = Store(tmp_path / "home")
    with store.write() as conn:
        for i in range(n):
            s = spec(i)
            run = conn.execute(
                "INSERT INTO runs (uuid, name, alternative_name, labels, status, "
                "start_timestamp, hparams, local_dir, folder, hostname) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, '/x', '/u/f', 'h')",
                (f"{i:032x}", s["name"], s["name"] + "_1", json.dumps(s["labels"]), s["status"],
                 f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}+00:00",
                 json.dumps(s["hparams"]))).lastrowid
            if s["acc"] is not None:
                conn.execute("INSERT INTO metrics VALUES (?, 0, 'val', 'acc', 1, NULL, ?, 't')",
                             (run, s["acc"]))
    store.close()
    return LocalData(tmp_path / "home")


def names(page) -> list[str]:
    return [r.name for r in page.rows]


def check_table(data) -> None:
    q = RunsQuery(folder="/u/f", page_size=50)
    first = data.runs(q)
    assert first.total == N and len(first.rows) == 50
    assert names(first)[0] == "r119"  # newest first by default
    q.page = 3
    assert len(data.runs(q).rows) == N - 100

    by_name = data.runs(RunsQuery(folder="/u/f", sort="name", desc=False, page_size=25))
    assert names(by_name) == sorted(spec(i)["name"] for i in range(N))[:25]

    by_lr = data.runs(RunsQuery(folder="/u/f", sort="h:lr", desc=True, page_size=200))
    lrs = [r.hparams["lr"] for r in by_lr.rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] == 1e-2  # numeric, not text order
    by_opt = data.runs(RunsQuery(folder="/u/f", sort="h:opt.name", desc=False, page_size=200))
    assert [r.hparams["opt.name"] for r in by_opt.rows][:60] == ["adam"] * 60

    acc = MetricRef("val", "acc")
    for desc in (True, False):
        best = data.runs(RunsQuery(folder="/u/f", sort="best:val/acc", desc=desc,
                                   page_size=200, metrics=[acc]))
        values = [r.metrics[acc].max_value if acc in r.metrics else None for r in best.rows]
        present = [v for v in values if v is not None]
        assert present == sorted(present, reverse=desc)
        assert values[len(present):] == [None] * (N - len(present))  # missing ones last

    errors = data.runs(RunsQuery(folder="/u/f", status="Error", page_size=200))
    assert errors.total == N // 4 and {r.status for r in errors.rows} == {"Error"}
    past = data.runs(RunsQuery(folder="/u/f", status="Error", page=9, page_size=20))
    assert past.total == N // 4 and past.rows == []  # counted without a row to count on
    assert data.runs(RunsQuery(folder="/u/f", name="nosuch")).total == 0
    exact = data.runs(RunsQuery(folder="/u/f", label="a_b", page_size=200))
    assert exact.total == N // 10  # "axb" is not "a_b"
    assert data.runs(RunsQuery(folder="/u/f", label="100%", page_size=200)).total == 1
    assert data.runs(RunsQuery(folder="/u/f", label="10", page_size=200)).total == 0
    odd = data.runs(RunsQuery(folder="/u/f", name="-%odd"))
    assert names(odd) == ["r033-%odd"]
    assert data.runs(RunsQuery(folder="/u/f", name="r01")).total == 10
    chosen = data.runs(RunsQuery(folder="/u/f", default_columns=True))
    assert set(chosen.hparam_keys) == {"lr", "opt.name"} and chosen.metric_refs == [acc]
    assert "a_b" in chosen.labels and "100%" in chosen.labels


def test_server_sqlite(tmp_path: Path) -> None:
    data, database = server_data(tmp_path)
    check_table(data)
    database.dispose()


def test_server_postgres(tmp_path: Path, pg_url: str) -> None:
    data, database = server_data(tmp_path, pg_url)
    check_table(data)
    database.dispose()


def test_local_store(tmp_path: Path) -> None:
    check_table(local_data(tmp_path))


def test_unknown_folder_is_not_found(tmp_path: Path) -> None:
    from runstore.ui.data import NotFound

    data, database = server_data(tmp_path, n=1)
    for bad in ("/u/", "/u/nosuch", "/v/f"):
        with pytest.raises(NotFound):
            data.runs(RunsQuery(folder=bad))
    database.dispose()


# -- sorting by an hparam whose values are of every JSON type --------------------------------
# (PostgreSQL reads this order from run_hparam_values' index, SQLite and the local store from
# json_extract: the three must agree, page by page, with this oracle.)
MIXED = [3, -1.5, True, False, "b", "B", "a", "\u05d0rtl", [1, 2], {}, None, "missing", 2.0,
         1e-320, 10**30, 3]
M = 64


def mixed_spec(i: int) -> dict:
    value = MIXED[i % len(MIXED)]
    hparams = {"lr": 0.1, "opt": {"beta": value}} if value != "missing" else {"lr": 0.1}
    return {"name": f"m{i:03d}", "status": "Error" if i % 3 == 0 else "Complete",
            "labels": [], "hparams": hparams, "acc": None}


def expected_order(ids: list[int], desc: bool) -> list[str]:
    """SQLite's json_extract order: numbers and booleans by value, then texts (binary), arrays
    and objects as JSON text; null and missing last; ties by id (both reversed when desc,
    except that missing stays last)."""
    def key(i: int):
        value = mixed_spec(i)["hparams"].get("opt", {}).get("beta")
        if isinstance(value, bool | int | float):
            return (0, float(value), "")
        return (1, 0.0, value if isinstance(value, str) else json.dumps(value))
    present = [i for i in ids if mixed_spec(i)["hparams"].get("opt", {}).get("beta") is not None]
    missing = [i for i in ids if i not in present]
    present.sort(key=lambda i: (key(i), i), reverse=desc)
    missing.sort(reverse=desc)
    return [mixed_spec(i)["name"] for i in present + missing]


def check_mixed_sort(data) -> None:
    for desc in (False, True):
        for status in (None, "Error"):
            ids = [i for i in range(M) if status is None or mixed_spec(i)["status"] == status]
            want = expected_order(ids, desc)
            got: list[str] = []
            for page in range(1, 20):
                got += names(data.runs(RunsQuery(folder="/u/f", sort="h:opt.beta", desc=desc,
                                                 status=status, page=page, page_size=5)))
            assert got == want, (desc, status)
            # one page on its own, past every run that has the key (PostgreSQL counts them)
            last = -(-len(want) // 5)
            alone = data.runs(RunsQuery(folder="/u/f", sort="h:opt.beta", desc=desc,
                                        status=status, page=last, page_size=5))
            assert names(alone) == want[(last - 1) * 5:], (desc, status)


def test_mixed_hparam_sort_sqlite(tmp_path: Path) -> None:
    data, database = server_data(tmp_path, n=M, spec=mixed_spec)
    check_mixed_sort(data)
    database.dispose()


def test_mixed_hparam_sort_local(tmp_path: Path) -> None:
    check_mixed_sort(local_data(tmp_path, n=M, spec=mixed_spec))


def test_mixed_hparam_sort_postgres(tmp_path: Path, pg_url: str) -> None:
    """Also: the index follows an hparams change (trigger on UPDATE), and a database made
    before run_hparam_values existed is indexed when the server opens it."""
    data, database = server_data(tmp_path, pg_url, n=M, spec=mixed_spec)
    check_mixed_sort(data)
    with database.write() as conn:
        conn.execute(db.runs.update().where(db.runs.c.name == "m000")
                     .values(hparams=json.dumps({"opt": {"beta": -100}})))
    top = data.runs(RunsQuery(folder="/u/f", sort="h:opt.beta", desc=False, page_size=5))
    assert names(top)[0] == "m000"
    with database.write() as conn:
        conn.execute(db.runs.update().where(db.runs.c.name == "m000")
                     .values(hparams=json.dumps(mixed_spec(0)["hparams"])))
        conn.exec_driver_sql("DROP TRIGGER runs_hparam_values ON runs")
        conn.exec_driver_sql("DROP TABLE run_hparam_values")
    database.dispose()
    reopened = db.Database(pg_url)
    with reopened.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM run_hparam_values").scalar() > M
    check_mixed_sort(ServerData(reopened, data.user))
    reopened.dispose()


# -- sorting by a metric's last / best value, with ties, infinities, NaN and missing series ----
# (PostgreSQL reads the page from metric_series' folder indexes, SQLite and the local store
# sort a join; the three must agree, page by page, with this oracle.)
INF = float("inf")
NAN = None  # how a NaN point is stored (a NULL value, counted in nan_count)
SERIES = [[0.5], [0.25, 0.75], [0.75, 0.25], [INF], [-INF, 0.5], [0.5, NAN], [NAN],
          [NAN, NAN], None, [0.0], [-3.0, 2.0], [0.5], [1e-300], [2.0, -1e300]]


def series_spec(i: int) -> dict:
    return {"name": f"s{i:03d}", "status": "Error" if i % 3 == 0 else "Complete",
            "labels": [], "hparams": {}, "acc": None, "points": SERIES[i % len(SERIES)]}


def expected_metric_order(ids: list[int], which: str, desc: bool) -> list[str]:
    """Runs by their series' last point or best (max) point, NaN points skipped for the best;
    runs whose value is NaN or that have no series last; ties by id."""
    def value(i: int) -> float | None:
        points = series_spec(i)["points"]
        if points is None:
            return None
        if which == "last":
            return points[-1]
        finite = [p for p in points if p is not None]
        return max(finite) if finite else None
    present = [i for i in ids if value(i) is not None]
    missing = [i for i in ids if value(i) is None]
    present.sort(key=lambda i: (value(i), i), reverse=desc)
    missing.sort(reverse=desc)
    return [series_spec(i)["name"] for i in present + missing]


def check_metric_sort(data) -> None:
    for which in ("last", "best"):
        for desc in (False, True):
            for status in (None, "Error"):
                ids = [i for i in range(M) if status is None
                       or series_spec(i)["status"] == status]
                want = expected_metric_order(ids, which, desc)
                q = dict(folder="/u/f", sort=f"{which}:val/acc", desc=desc, status=status)
                got: list[str] = []
                for page in range(1, 20):
                    got += names(data.runs(RunsQuery(**q, page=page, page_size=5)))
                assert got == want, (which, desc, status)
                last = -(-len(want) // 5)
                alone = data.runs(RunsQuery(**q, page=last, page_size=5))
                assert names(alone) == want[(last - 1) * 5:], (which, desc, status)


def series_server_data(tmp_path: Path, url: str | None = None):
    """series_spec's runs in /u/f, and decoys with the same metric in /u/g."""
    data, database = server_data(tmp_path, url, n=M, spec=series_spec)
    with database.write() as conn:
        user = data.user.id
        other = db.insert_returning_id(conn, db.folders.insert().values(
            owner_id=user, path="/u/g", created_at=0))
        for i in range(M):
            points = series_spec(i)["points"]
            if points is not None:
                run = conn.execute(select(db.runs.c.id).where(
                    db.runs.c.uuid == f"{i:032x}")).scalar_one()
                metricrows.insert_metric_rows(conn, run, 0, [
                    ("val", "acc", step, None, v, "t") for step, v in enumerate(points)])
            decoy = db.insert_returning_id(conn, db.runs.insert().values(
                owner_id=user, uuid=f"d{i:031x}", folder_id=other, name=f"d{i:03d}",
                run_name=f"d{i:03d}", alternative_name=f"d{i:03d}_1", status="Error",
                labels="[]", hparams="{}", start_timestamp="2024", created_at=0,
                updated_at=0))
            metricrows.insert_metric_rows(conn, decoy, 0, [("val", "acc", 0, None, 1e9, "t")])
    return data, database


def test_metric_sort_sqlite(tmp_path: Path) -> None:
    data, database = series_server_data(tmp_path)
    check_metric_sort(data)
    database.dispose()


def test_metric_sort_local(tmp_path: Path) -> None:
    from runstore.store import Store

    data = local_data(tmp_path, n=M, spec=series_spec)
    store = Store(tmp_path / "home")
    with store.write() as conn:
        for i in range(M):
            points = series_spec(i)["points"] or []
            run = conn.execute("SELECT id FROM runs WHERE uuid = ?", (f"{i:032x}",)).fetchone()[0]
            conn.executemany("INSERT INTO metrics VALUES (?, ?, 'val', 'acc', ?, NULL, ?, 't')",
                             [(run, seq, seq, v) for seq, v in enumerate(points)])
    store.close()
    check_metric_sort(data)


def test_metric_sort_postgres(tmp_path: Path, pg_url: str) -> None:
    """Also: the series follow a run moved to another folder (trigger on runs), and a database
    made before metric_series.folder_id existed gets it filled when the server opens it."""
    data, database = series_server_data(tmp_path, pg_url)
    check_metric_sort(data)
    with database.write() as conn:
        home = conn.execute(select(db.runs.c.folder_id).where(
            db.runs.c.name == "s003")).scalar_one()
        conn.execute(db.runs.update().where(db.runs.c.name == "s003")
                     .values(folder_id=home + 1))
    moved = data.runs(RunsQuery(folder="/u/g", sort="best:val/acc", page_size=5))
    assert names(moved)[0] == "s003"  # inf beats the decoys' 1e9
    with database.write() as conn:
        conn.execute(db.runs.update().where(db.runs.c.name == "s003").values(folder_id=home))
        conn.exec_driver_sql("DROP TRIGGER metric_series_folder ON metric_series")
        conn.exec_driver_sql("DROP TRIGGER runs_series_folder ON runs")
        conn.exec_driver_sql("ALTER TABLE metric_series DROP COLUMN folder_id")
    database.dispose()
    reopened = db.Database(pg_url)
    check_metric_sort(ServerData(reopened, data.user))
    reopened.dispose()
