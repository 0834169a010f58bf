"""runstore.query: user SQL is read-only, single-statement and bounded (promise 6)."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pytest

import runstore as em
from runstore.errors import SQLError
from runstore.query import json_value, list_relations, run_query
from runstore.schema import MIGRATIONS
from runstore.store import Store

INFINITE_CTE = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT x FROM c"
NO_ROWS_FOREVER = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
                   "SELECT count(*) FROM c WHERE x < 0")


@pytest.fixture
def runs(store: Store) -> list[em.Run]:
    """Two finished runs of a small sweep, one with a NaN and an inf among its metrics."""
    made = []
    for lr, acc in ((1e-2, 0.80), (1e-4, 0.91)):
        run = em.create_run(name="mnist", hparams={"lr": lr, "opt": {"name": "adam"}},
                            labels=["sweep"])
        run.log("train", {"loss": 0.5, "grad": float("nan")}, step=1, epoch=1)
        run.log("train", {"loss": 0.25, "grad": float("inf")}, step=2, epoch=1)
        run.log("validation", {"accuracy": acc}, step=2, epoch=1)
        run.finish()
        made.append(run)
    return made


def snapshot(store: Store) -> tuple[list[str], int, list[str]]:
    """Everything a query could change: the rows and schema, user_version, the files."""
    conn = store.connection()
    dump = list(conn.iterdump())
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    files = sorted(p.name for p in store.home.iterdir())
    return dump, version, files


def test_select_reads_rows_nan_as_null_and_inf_as_inf(store, runs):
    result = run_query(store, "SELECT run_id, key, step, value, is_nan FROM metric_values "
                       "WHERE type = 'train' AND key = 'grad' ORDER BY run_id, step")
    assert result.columns == ["run_id", "key", "step", "value", "is_nan"]
    assert result.rows == [(runs[0].id, "grad", 1, None, 1), (runs[0].id, "grad", 2, math.inf, 0),
                           (runs[1].id, "grad", 1, None, 1), (runs[1].id, "grad", 2, math.inf, 0)]
    assert result.truncated is False and result.notice is None


def test_the_common_question_in_one_query(store, runs):
    result = run_query(
        store,
        "SELECT l.alternative_name, l.value FROM metric_last l "
        "JOIN run_hparams h ON h.run_id = l.run_id AND h.key = 'lr' "
        "WHERE l.type_normalized = 'val' AND l.key = 'accuracy' AND h.value < ? "
        "ORDER BY l.value DESC LIMIT 1", (1e-3,))
    assert result.rows == [(runs[1].alternative_name, 0.91)]


def test_every_table_and_view_is_readable(store, runs):
    relations = list_relations(store)
    kinds = {r.name: r.kind for r in relations}
    assert kinds == {
        "runs": "table", "metrics": "table", "artifacts": "table", "blobs": "table",
        "artifact_objects": "table", "associations": "table", "remote_history": "table",
        "sync_state": "table", "run_hparams": "view", "metric_values": "view",
        "metric_last": "view", "metric_summary": "view",
        # bundles (docs/AIRGAP.md)
        "store_meta": "table", "bundle_exports": "table", "bundle_watermarks": "table",
        "bundle_blobs_exported": "table", "bundle_imports": "table",
        "bundle_run_origin": "table"}
    values = next(r for r in relations if r.name == "metric_values")
    assert ("is_nan", "") in values.columns and ("type_normalized", "") in values.columns
    for rel in relations:
        result = run_query(store, f"SELECT * FROM {rel.name}")
        assert result.columns == [c for c, _ in rel.columns]
    hparams = run_query(store, "SELECT key, value FROM run_hparams WHERE run_id = ? "
                        "ORDER BY key", (runs[0].id,))
    assert hparams.rows == [("lr", 0.01), ("opt.name", "adam")]


def test_reading_pragmas_and_json_functions_are_allowed(store, runs):
    info = run_query(store, "PRAGMA table_info(runs)")
    assert info.rows[0][1:3] == ("id", "INTEGER")
    assert run_query(store, "SELECT name FROM pragma_table_info('sync_state') LIMIT 1").rows \
        == [("run_id",)]
    assert run_query(store, "PRAGMA user_version").rows == [(len(MIGRATIONS),)]
    assert run_query(store, "SELECT value FROM json_each('[3, 4]')").rows == [(3,), (4,)]
    assert run_query(store, "SELECT printf('%.2f|%5s', 3.14159, 'ab')").rows == \
        [("3.14|   ab",)]
    assert run_query(store, "SELECT :a + :b", {"a": 40, "b": 2}).rows == [(42,)]
    assert run_query(store, "EXPLAIN QUERY PLAN SELECT * FROM runs").columns[-1] == "detail"


REFUSED = [
    ("ATTACH 'file:x?mode=rwc' AS x", "ATTACH 'file:x?mode=rwc' is not allowed"),
    ("ATTACH DATABASE ':memory:' AS m", "ATTACH ':memory:' is not allowed"),
    ("DETACH main", "DETACH 'main' is not allowed"),
    ("PRAGMA query_only=0", "PRAGMA query_only = 0 is not allowed"),
    ("PRAGMA writable_schema=1", "PRAGMA writable_schema = 1 is not allowed"),
    ("PRAGMA user_version = 7", "PRAGMA user_version = 7 is not allowed"),
    ("PRAGMA journal_mode = DELETE", "PRAGMA journal_mode = DELETE is not allowed"),
    ("SELECT * FROM pragma_query_only", "PRAGMA query_only is not allowed"),
    ("SELECT load_extension('/tmp/evil.so')", "function load_extension() is not allowed"),
    ("SELECT fts3_tokenizer('simple')", "function fts3_tokenizer() is not allowed"),
    ("INSERT INTO runs (uuid) VALUES ('x')", "INSERT on runs is not allowed"),
    ("UPDATE runs SET status = 'Error'", "UPDATE on runs is not allowed"),
    ("DELETE FROM metrics", "DELETE on metrics is not allowed"),
    ("WITH c AS (SELECT 1 AS x) DELETE FROM runs WHERE id IN (SELECT x FROM c)",
     "DELETE on runs is not allowed"),
    ("REPLACE INTO blobs (sha256, size_bytes) VALUES ('a', 1)", "INSERT on blobs is not allowed"),
    ("DROP TABLE runs", "changing the schema (CREATE, DROP, ALTER, ANALYZE) is not allowed"),
    ("DROP VIEW metric_last", "changing the schema"),
    ("CREATE TABLE t (x)", "changing the schema"),
    ("CREATE TEMP TABLE t (x)", "changing the schema"),
    ("CREATE INDEX i ON metrics(value)", "changing the schema"),
    ("ALTER TABLE runs ADD COLUMN x", "ALTER TABLE on runs is not allowed"),
    ("ANALYZE", "changing the schema"),
    ("VACUUM", "ATTACH '' is not allowed"),
    ("REINDEX", "REINDEX is not allowed"),
    ("BEGIN IMMEDIATE", "TRANSACTION on BEGIN is not allowed"),
    ("SAVEPOINT s", "SAVEPOINT on BEGIN is not allowed"),
    ("SELECT 1; DROP TABLE runs", "runs one statement per call"),
    ("SELECT 1; SELECT 2", "runs one statement per call"),
]


@pytest.mark.parametrize(("sql", "message"), REFUSED, ids=[s for s, _ in REFUSED])
def test_refused_with_a_clear_message_and_nothing_changes(store, runs, tmp_path, monkeypatch,
                                                          sql, message):
    monkeypatch.chdir(tmp_path)  # a relative ATTACH would create its file here
    before = snapshot(store)
    cwd_before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SQLError) as info:
        run_query(store, sql)
    text = str(info.value)
    assert message in text
    assert "\n" not in text and "Try:" in text
    assert snapshot(store) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == cwd_before
    # The store's own connection is untouched too: still writable, query_only off.
    assert store.connection().execute("PRAGMA query_only").fetchone() == (0,)


def test_infinite_recursion_is_cut_by_the_row_cap(store):
    start = time.monotonic()
    result = run_query(store, INFINITE_CTE, max_rows=25)
    assert time.monotonic() - start < 5
    assert result.rows == [(x,) for x in range(1, 26)]
    assert result.truncated is True
    assert result.notice == ("result cut at 25 rows (the row cap); Try: add WHERE/LIMIT, "
                             "or raise the cap (--max-rows)")


def test_default_row_cap_is_ten_thousand(store):
    result = run_query(store, INFINITE_CTE)
    assert len(result.rows) == 10_000 and result.truncated
    exact = run_query(store, INFINITE_CTE + " LIMIT 10000")
    assert len(exact.rows) == 10_000 and not exact.truncated


def test_infinite_recursion_is_stopped_by_the_time_limit(store):
    start = time.monotonic()
    with pytest.raises(SQLError, match=r"ran past the time limit of 0\.3 s and was stopped; "
                                       r"Try: .*--timeout"):
        run_query(store, INFINITE_CTE, max_rows=10**12, time_limit_s=0.3)
    assert time.monotonic() - start < 5


def test_a_query_that_never_yields_a_row_is_stopped_by_the_time_limit(store, runs):
    before = snapshot(store)
    start = time.monotonic()
    with pytest.raises(SQLError, match="time limit of 0.25 s"):
        run_query(store, NO_ROWS_FOREVER, time_limit_s=0.25)
    elapsed = time.monotonic() - start
    assert 0.2 < elapsed < 5
    assert snapshot(store) == before


@pytest.mark.parametrize("sql", ["SELECT randomblob(2e9)", "SELECT zeroblob(2e9)",
                                 "SELECT length(randomblob(2e9))",
                                 "SELECT hex(randomblob(6000000))"])
def test_oversized_values_are_refused(store, sql):
    start = time.monotonic()
    with pytest.raises(SQLError, match=r"passed the cap of 10,000,000 bytes for one string or "
                                       r"blob .*--max-value-bytes"):
        run_query(store, sql)
    assert time.monotonic() - start < 5


def test_value_cap_is_configurable(store):
    assert run_query(store, "SELECT length(randomblob(5000))", max_value_bytes=5000).rows == \
        [(5000,)]
    with pytest.raises(SQLError, match="cap of 4,999 bytes"):
        run_query(store, "SELECT randomblob(5000)", max_value_bytes=4999)


@pytest.mark.parametrize("sql", [
    "SELECT printf('%.*c', 2000000000, 'x')",
    "SELECT format('%.*c', '2000000000', 'x')",
    "SELECT printf('%.2000000000c', 'x')",
    "SELECT printf('%.*c%.*c%.*c', 2000000000, 'x', 2000000000, 'y', 2000000000, 'z')",
])
def test_printf_repetition_beyond_the_value_cap_is_refused_at_once(store, sql):
    # SQLite repeats %c once per unit of precision inside one call, out of the time limit's
    # reach: seconds per spec, so it is refused before it starts.
    start = time.monotonic()
    with pytest.raises(SQLError, match="width or precision above the cap"):
        run_query(store, sql)
    assert time.monotonic() - start < 1


def test_huge_result_is_cut_at_the_row_cap_with_a_notice(store, runs):
    sql = ("SELECT a.seq, b.seq, c.seq FROM metrics a, metrics b, metrics c, metrics d, "
           "metrics e")  # 10^5 rows
    result = run_query(store, sql, max_rows=1000)
    assert len(result.rows) == 1000 and result.truncated
    assert "result cut at 1,000 rows" in result.notice


def test_result_bytes_cap_cuts_many_large_values(store):
    sql = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
           "SELECT randomblob(100000) FROM c")
    result = run_query(store, sql, max_result_bytes=1_000_000)
    assert len(result.rows) == 10 and result.truncated
    assert result.notice.startswith("result cut at 10 rows: it passed the cap of 1,000,000 bytes")


def test_a_live_run_can_be_queried_while_it_logs(store):
    run = em.create_run(name="live")
    run.log("train", {"loss": 1.0}, step=1)
    run.flush()
    result = run_query(store, "SELECT status, metric_count FROM runs WHERE id = ?", (run.id,))
    assert result.rows == [("Running", 1)]
    run.log("train", {"loss": 0.5}, step=2)
    run.finish()
    assert run_query(store, "SELECT count(*) FROM metrics").rows == [(2,)]


def test_trailing_semicolon_and_comments_are_one_statement(store):
    assert run_query(store, "SELECT 1; -- done\n").rows == [(1,)]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sql": "   "}, "no SQL statement given"),
    ({"sql": "SELECT 1", "max_rows": 0}, "max_rows must be a positive integer, not 0"),
    ({"sql": "SELECT 1", "time_limit_s": 0}, "time_limit_s must be a positive number"),
    ({"sql": "SELECT 1", "max_value_bytes": 10}, "max_value_bytes must be an integer"),
    ({"sql": "SELECT nope FROM runs"}, "SQL error: no such column: nope; Try: runstore sql "
                                       "--schema"),
    ({"sql": "SELECT ?"}, "query parameters do not match the SQL"),
])
def test_bad_input_is_one_clear_line(store, kwargs, message):
    with pytest.raises(SQLError) as info:
        run_query(store, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_missing_database_is_reported_not_created(tmp_path: Path):
    missing = tmp_path / "nowhere" / "runstore.db"
    with pytest.raises(SQLError, match="no runstore database at .*RUNSTORE_HOME"):
        run_query(missing, "SELECT 1")
    assert not missing.parent.exists()


def test_the_example_queries_of_docs_sql_md_run_and_find_rows(store, runs, tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("x,y\n")
    art = em.create_artifact("mnist_data")
    art.add_file(str(data))
    reader = em.create_run(name="eval", labels=["sweep"])
    reader.mark_input(art)
    reader.log("eval", {"accuracy": 0.5}, step=1)
    text = (Path(__file__).parents[2] / "docs" / "SQL.md").read_text()
    queries = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    assert len(queries) >= 6
    for sql in queries:
        result = run_query(store, sql)
        assert result.rows, sql
    best = run_query(store, queries[0]).rows
    assert best == [(runs[1].alternative_name, 1e-4, 0.91)]
    reader.finish()


def test_json_value():
    assert json_value(math.inf) is None and json_value(-math.inf) is None
    assert json_value(b"\x01\x02") == {"$base64": True, "encoded": "AQI="}
    assert json_value(0.5) == 0.5 and json_value("x") == "x" and json_value(None) is None
