"""Promise 6, the gaps left by tests/runstore/test_query.py: escapes it does not list, and the
issue's list of escapes through the real `runstore sql` command (a subprocess), where each is
refused with one line and exit 1, or cut off within its limit, and nothing changes on disk."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import runstore as em
from runstore.errors import SQLError
from runstore.query import run_query
from runstore.store import Store
from tests.server_harness import run_cli


@pytest.fixture
def filled(store: Store) -> Store:
    run = em.create_run(name="sweep", hparams={"lr": 0.1})
    for i in range(30):
        run.log("train", {"loss": 1 / (i + 1)}, step=i)
    run.finish()
    return store


def _files(*dirs: Path) -> list[str]:
    return sorted(str(p) for d in dirs for p in d.rglob("*"))


def _dump(store: Store) -> list[str]:
    return list(store.connection().iterdump())


ESCAPES = [
    ("VACUUM INTO '{tmp}/copy.db'", "is not allowed"),              # writes a new file
    ("PRAGMA main.query_only = 0", "PRAGMA query_only = 0 is not allowed"),
    ("PRAGMA trusted_schema = 1", "is not allowed"),
    ("PRAGMA mmap_size = 1000000000", "is not allowed"),
    ("PRAGMA cache_size = -4000000", "is not allowed"),             # 4 GB of page cache
    ("PRAGMA hard_heap_limit = 1", "is not allowed"),
    ("PRAGMA wal_checkpoint(TRUNCATE)", "is not allowed"),
    ("PRAGMA optimize", "is not allowed"),
    ("CREATE VIRTUAL TABLE v USING fts5(a)", "changing the schema"),
    ("ATTACH 'file:{tmp}/evil.db?mode=rwc' AS e", "is not allowed"),
    ("SELECT sqlite_compileoption_get(0)", "is not allowed"),
    ("SELECT LOAD_EXTENSION('{tmp}/evil.so')", "load_extension() is not allowed"),
    ("SELECT replace(hex(zeroblob(5000000)), '0', 'xxxxxxxxxx')", "cap of 10,000,000 bytes"),
    ("SELECT substr(randomblob(2e9), 1, 1)", "cap of 10,000,000 bytes"),
    ("SELECT printf('%0*d', 2000000000, 1)", "width or precision above the cap"),
    ("SELECT " + "(" * 5000 + "1" + ")" * 5000, "parser stack overflow"),
    ("SELECT json('" + "[" * 5000 + "')", "malformed JSON"),
]


@pytest.mark.parametrize(("sql", "message"), ESCAPES, ids=[s[:40] for s, _ in ESCAPES])
def test_more_escapes_are_refused_and_nothing_changes(filled, tmp_path, monkeypatch, sql,
                                                      message):
    monkeypatch.chdir(tmp_path)
    sql = sql.format(tmp=tmp_path)
    before, files = _dump(filled), _files(tmp_path, filled.home)
    start = time.monotonic()
    with pytest.raises(SQLError) as info:
        run_query(filled, sql)
    assert time.monotonic() - start < 5
    assert message in str(info.value) and "\n" not in str(info.value)
    assert _dump(filled) == before
    assert _files(tmp_path, filled.home) == files


def test_an_aggregate_over_an_endless_recursion_is_stopped_in_time(filled):
    start = time.monotonic()
    with pytest.raises(SQLError, match="time limit of 0.5 s"):
        run_query(filled, "SELECT group_concat(x) FROM (WITH RECURSIVE c(x) AS (SELECT 1 "
                  "UNION ALL SELECT x+1 FROM c) SELECT x FROM c)", time_limit_s=0.5)
    assert time.monotonic() - start < 3


# The list, through the command users run.
CLI_REFUSED = [
    ("ATTACH 'file:{tmp}/evil.db?mode=rwc' AS e", "ATTACH"),
    ("PRAGMA query_only=0", "PRAGMA query_only = 0 is not allowed"),
    ("SELECT load_extension('{tmp}/evil.so')", "load_extension() is not allowed"),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c",
     "time limit of 1 s"),
    ("SELECT randomblob(2e9)", "cap of 10,000,000 bytes"),
]


@pytest.mark.parametrize(("sql", "message"), CLI_REFUSED, ids=[s[:30] for s, _ in CLI_REFUSED])
def test_runstore_sql_refuses_each_escape_in_one_line(filled, tmp_path, sql, message):
    sql = sql.format(tmp=tmp_path)
    before, files = _dump(filled), _files(tmp_path, filled.home)
    start = time.monotonic()
    done = run_cli("sql", sql, "--timeout", "1", extra_env={"RUNSTORE_HOME": str(filled.home)})
    assert time.monotonic() - start < 15  # interpreter start + the 1 s limit
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], lines
    assert "Try:" in lines[0]
    assert _dump(filled) == before
    assert _files(tmp_path, filled.home) == files


def test_runstore_sql_cuts_an_endless_or_huge_result(filled):
    env = {"RUNSTORE_HOME": str(filled.home)}
    endless = run_cli("sql", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
                      "SELECT x FROM c", "--csv", "--max-rows", "5", extra_env=env)
    assert endless.returncode == 0, endless.stderr
    assert endless.stdout.split() == ["x", "1", "2", "3", "4", "5"]
    assert "result cut at 5 rows" in endless.stderr
    huge = run_cli("sql", "SELECT a.seq AS a, b.seq AS b, c.seq AS c, d.seq AS d FROM "
                   "metrics a, metrics b, metrics c, metrics d", "--json",
                   extra_env=env)  # 810,000 rows
    assert huge.returncode == 0, huge.stderr
    assert "result cut at 10,000 rows" in huge.stderr
    assert huge.stdout.count('"a":') == 10_000
