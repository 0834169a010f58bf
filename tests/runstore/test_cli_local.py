"""`runstore ls`, `describe` and `sql`: exact output and exit codes."""

from __future__ import annotations

import json
import re
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

import runstore as em
from runstore.cli import main
from runstore.store import Store

T0 = "2024-01-02T03:04:05.000000+00:00"


NOW = "2024-01-06T01:02:03.000000+00:00"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def pinned_now(monkeypatch: pytest.MonkeyPatch) -> float:
    """The clock the CLI reads for a live run's duration (runstore.inspect's `time.time()`),
    pinned at NOW so the output is exact and cannot move across a second or day boundary."""
    from runstore import inspect
    from runstore.timeutil import unix_from_iso

    now = unix_from_iso(NOW)
    monkeypatch.setattr(inspect, "time", types.SimpleNamespace(time=lambda: now))
    return now


def make_run(name: str, *, start: str | None = None, end: str | None = None,
             finish: bool = True, **kwargs) -> em.Run:
    """A run through the SDK; start/end pin its timestamps so durations are exact."""
    run = em.create_run(name=name, **kwargs)
    for step in (1, 2, 3):
        run.log("train", {"loss": 1.0 / step, "acc": float("nan") if step == 2 else step / 4},
                step=step, epoch=1)
    run.log("val", {"acc": 0.7}, step=3, epoch=1)
    if finish:
        run.finish()
    stamps = {k: v for k, v in (("startTimestamp", start), ("endTimestamp", end)) if v}
    if stamps:
        run.parse_from_dict(stamps)
    return run


@pytest.fixture
def sweep(store: Store) -> list[em.Run]:
    return [
        make_run("mnist", start=T0, end="2024-01-02T04:06:10.500000+00:00",
                 hparams={"lr": 0.01, "opt": {"name": "adam"}}, labels=["cnn", "sweep"]),
        make_run("mnist", start="2024-01-03T10:00:00.000000+00:00",
                 end="2024-01-03T10:00:42.000000+00:00", hparams={"lr": 0.0001},
                 labels=["sweep"]),
        make_run("bert", start="2024-01-04T00:00:00.000000+00:00", finish=False,
                 labels=["nlp"]),
    ]


# -- ls ----------------------------------------------------------------------------------------
def test_ls_empty_store():
    result = invoke("ls")
    assert result.exit_code == 0
    assert result.stdout == "" and result.stderr == "No runs.\n"


def test_ls_columns(sweep):
    sweep[2].finish()
    sweep[2].parse_from_dict({"endTimestamp": "2024-01-05T02:03:00.000000+00:00"})
    result = invoke("ls")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "NAME   STATUS    STARTED              DURATION",
        "mnist  Complete  2024-01-02 03:04:05  1h02m05s",
        "mnist  Complete  2024-01-03 10:00:00  42s",
        "bert   Complete  2024-01-04 00:00:00  1d02h03m",
    ]


def test_ls_detail_shows_alternative_name_labels_and_sync(sweep, pinned_now):
    result = invoke("ls", "-d")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    alt = [r.alternative_name for r in sweep]
    cells = [re.split(r" {2,}", line) for line in lines]
    assert cells[0] == ["NAME", "STATUS", "STARTED", "DURATION", "ALTERNATIVE NAME", "LABELS",
                        "SYNC"]
    assert cells[1] == ["mnist", "Complete", "2024-01-02 03:04:05", "1h02m05s", alt[0],
                        "cnn,sweep", "pending"]
    assert cells[2] == ["mnist", "Complete", "2024-01-03 10:00:00", "42s", alt[1], "sweep",
                        "pending"]
    # A live run has no sync state yet; its duration runs until now (pinned at NOW).
    assert cells[3] == ["bert", "Running", "2024-01-04 00:00:00", "2d01h02m", alt[2], "nlp",
                        "-"]
    # Columns are aligned: each starts at the same offset on every line.
    for column in ("ALTERNATIVE NAME", "LABELS", "SYNC"):
        offset = lines[0].index(column)
        value = cells[1][cells[0].index(column)]
        assert lines[1].index(value) == offset


def test_ls_filters(sweep):
    def names(*args: str) -> list[str]:
        result = invoke("ls", "--json", *args)
        assert result.exit_code == 0, result.output
        return [r["alternative_name"] for r in json.loads(result.stdout)]

    alt = [r.alternative_name for r in sweep]
    assert names() == alt
    assert names("--status", "running") == [alt[2]]
    assert names("--status", "Complete", "--label", "sweep") == alt[:2]
    assert names("--label", "sweep", "--label", "cnn") == [alt[0]]
    assert names("--name", "mni*") == alt[:2]
    assert names("--name", alt[1]) == [alt[1]]
    assert names("--label", "nope") == []
    result = invoke("ls", "--label", "nope")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == "No runs match.\n"


def test_ls_json_shape(sweep):
    first = json.loads(invoke("ls", "--json").stdout)[0]
    assert first == {
        "name": "mnist", "alternative_name": sweep[0].alternative_name, "uuid": sweep[0].uuid,
        "status": "Complete", "start_timestamp": T0,
        "end_timestamp": "2024-01-02T04:06:10.500000+00:00", "labels": ["cnn", "sweep"],
        "description": "", "duration_s": 3725.5, "sync_state": "pending", "remote_path": None}


def test_ls_bad_status_is_a_usage_error():
    result = invoke("ls", "--status", "Done")
    assert result.exit_code == 2
    assert "Invalid value for '--status': 'Done' is not one of" in result.stderr


def test_ls_remote_lists_a_server_folder(monkeypatch):
    calls = []

    def list_remote(folder, client=None):
        calls.append((folder, client))
        return [
            {"name": "mnist", "alternative_name": "mnist_240102_030405_abcdef", "uuid": "u1",
             "status": "Complete", "start_timestamp": T0,
             "end_timestamp": "2024-01-02T03:05:05.000000+00:00", "labels": ["cnn"],
             "path": "/alice/exp/mnist", "complete": True},
            {"name": "bert", "alternative_name": "bert_240102_030405_zzzzzz", "uuid": "u2",
             "status": "Running", "start_timestamp": T0, "end_timestamp": None,
             "labels": [], "path": "/alice/exp/bert", "complete": False},
        ]

    fake = types.ModuleType("runstore.remote")
    fake.list_remote = list_remote  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "runstore.remote", fake)
    result = invoke("ls", "--remote", "exp", "-d", "--label", "cnn")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "NAME   STATUS    STARTED              DURATION  ALTERNATIVE NAME            LABELS  PATH",
        "mnist  Complete  2024-01-02 03:04:05  1m00s     mnist_240102_030405_abcdef  cnn     "
        "/alice/exp/mnist",
    ]
    assert calls == [("exp", None)]
    result = invoke("ls", "--remote", "--json")  # no folder: all the user's runs
    assert result.exit_code == 0, result.output
    assert [r["uuid"] for r in json.loads(result.stdout)] == ["u1", "u2"]
    assert calls[-1] == (None, None)


# -- describe ----------------------------------------------------------------------------------
def test_describe_by_name_alternative_name_uuid_and_prefix(sweep):
    latest_mnist = sweep[1]
    for ref in (latest_mnist.alternative_name, latest_mnist.uuid, latest_mnist.uuid[:8]):
        result = invoke("describe", ref)
        assert result.exit_code == 0, result.output
        assert f"Alternative name:  {latest_mnist.alternative_name}" in result.stdout.splitlines()
    # Two runs are named mnist: the name is ambiguous (runstore.rows' one rule).
    result = invoke("describe", "mnist")
    assert result.exit_code == 1 and "2 runs are named 'mnist'" in result.stderr


def test_describe_summary(sweep):
    run = sweep[0]
    result = invoke("describe", run.alternative_name)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Name:              mnist",
        f"Alternative name:  {run.alternative_name}",
        f"UUID:              {run.uuid}",
        "Status:            Complete",
        f"Started:           {T0}",
        "Ended:             2024-01-02T04:06:10.500000+00:00",
        "Duration:          1h02m05s",
        "Labels:            cnn, sweep",
        "Description:       -",
        f"Local:             {run.local}",
        f"Host:              {run.platform['hostname']}",
        "Upload target:     folder default, conflict strategy new",
        "Sync:              pending (0 attempts)",
        "Metrics:",
        "  TYPE   KEY   POINTS  LAST      MIN       MAX   NAN  LAST STEP",
        "  train  loss  3       0.333333  0.333333  1     0    3",
        "  train  acc   3       0.75      0.25      0.75  1    3",
        "  val    acc   1       0.7       0.7       0.7   0    3",
    ]


def test_describe_detail(sweep, tmp_path: Path):
    data = tmp_path / "data.csv"
    data.write_text("a,b\n")
    art = em.create_artifact("data")
    art.add_file(str(data))
    art.add_reference("s3://bucket/raw", "raw/")
    run = em.load_run(sweep[0].alternative_name)
    run.mark_input(art)
    run.finish()
    result = invoke("describe", run.uuid, "-d", "--max-metric-rows", "2")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "\nHyperparameters:\n  lr        0.01\n  opt.name  adam\n" in text
    assert ("\nMetrics (train, 3 records):\n"
            "  STEP  EPOCH  loss      acc\n"
            "  1     1      1         0.25\n"
            "  ... 1 more (--max-metric-rows 0 shows all)\n"
            "  3     1      0.333333  0.75\n"
            "Metrics (val, 1 record):\n"
            "  STEP  EPOCH  acc\n"
            "  3     1      0.7\n") in text
    assert f"\nAssociations:\n  input  Artifact  {art.alternative_name}  {art.local}\n" in text
    assert (f"\nArtifacts:\n  {art.alternative_name} (input, 2 objects)\n"
            "    PATH      KIND       SIZE  SHA256 / URI\n"
            f"    data.csv  file          4  {art.objects['data.csv']['checksum']}"
            .replace("sha256:", "") + "\n"
            "    raw/raw   reference        s3://bucket/raw\n") in text
    assert "\nRemote history:\n  (none)\n" in text
    assert "\nPlatform:\n  hostname" in text and "\nGit:\n  repo_path" in text
    full = invoke("describe", run.uuid, "-d", "--max-metric-rows", "0").stdout
    assert "  2     1      0.5       nan\n" in full


def test_describe_json(sweep):
    result = invoke("describe", sweep[0].uuid, "-d", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["hparams"] == {"lr": 0.01, "opt": {"name": "adam"}}
    assert [r["value"]["acc"] for r in info["metrics"]["train"]] == [0.25, None, 0.75]
    assert info["sync"]["state"] == "pending"


def test_describe_unknown_run_is_one_error_line(sweep):
    result = invoke("describe", "nope")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: no run 'nope' in the store {str(Store().home)!r} (not a UUID, alternative "
        "name, directory or name there). Try: runstore ls"]


def test_describe_ambiguous_prefix(store):
    runs = [make_run("a"), make_run("b")]
    with store.write() as conn:  # two UUIDs sharing a prefix
        for i, run in enumerate(runs):
            conn.execute("UPDATE runs SET uuid = ? WHERE id = ?", (f"abcd{i}" + "0" * 27, run.id))
    result = invoke("describe", "abcd")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: run reference 'abcd' matches 2 runs by UUID prefix ({runs[0].alternative_name}"
        f", {runs[1].alternative_name}). Try: a longer prefix or the alternative name\n")


def test_describe_without_run_is_a_usage_error():
    result = invoke("describe")
    assert result.exit_code == 2 and "Missing argument 'RUN'" in result.stderr


# -- sql ---------------------------------------------------------------------------------------
LAST_SQL = ("SELECT run_name, type, key, value, is_nan FROM metric_last "
            "WHERE run_id = 1 ORDER BY seq")


def test_sql_table(sweep):
    result = invoke("sql", LAST_SQL)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "run_name  type   key                value  is_nan",
        "--------  -----  ----  ------------------  ------",
        "mnist     train  loss  0.3333333333333333       0",
        "mnist     train  acc                 0.75       0",
        "mnist     val    acc                  0.7       0",
    ]
    assert result.stderr == ""


def test_sql_nan_is_null_in_every_format(sweep):
    sql = "SELECT step, value, is_nan FROM metric_values WHERE run_id = 1 AND key = 'acc' " \
          "AND type = 'train' ORDER BY step"
    assert invoke("sql", sql).stdout.splitlines() == [
        "step  value  is_nan",
        "----  -----  ------",
        "   1   0.25       0",
        "   2   NULL       1",
        "   3   0.75       0",
    ]
    assert invoke("sql", sql, "--csv").stdout == "step,value,is_nan\n1,0.25,0\n2,,1\n3,0.75,0\n"
    assert invoke("sql", sql, "--json").stdout == (
        '[{"step": 1, "value": 0.25, "is_nan": 0},\n'
        ' {"step": 2, "value": null, "is_nan": 1},\n'
        ' {"step": 3, "value": 0.75, "is_nan": 0}]\n')


def test_sql_csv_and_json_special_values(store):
    sql = "SELECT 1e999 AS inf, 'a,b' AS text, x'0102' AS blob, NULL AS empty"
    assert invoke("sql", sql, "--csv").stdout == 'inf,text,blob,empty\ninf,"a,b",AQI=,\n'
    assert json.loads(invoke("sql", sql, "--json").stdout) == [
        {"inf": None, "text": "a,b", "blob": {"$base64": True, "encoded": "AQI="},
         "empty": None}]
    assert invoke("sql", sql).stdout.splitlines()[2] == "inf  a,b   <blob 2 bytes>   NULL"


def test_sql_named_parameters(sweep):
    result = invoke("sql", "SELECT name FROM runs WHERE name = :n LIMIT 1", "-p", "n", "bert")
    assert result.stdout == "name\n----\nbert\n"


def test_sql_truncation_is_announced_on_stderr(store):
    result = invoke("sql", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
                           "SELECT x FROM c", "--max-rows", "3", "--csv")
    assert result.exit_code == 0
    assert result.stdout == "x\n1\n2\n3\n"
    assert result.stderr == ("Warning: result cut at 3 rows (the row cap); Try: add WHERE/LIMIT, "
                             "or raise the cap (--max-rows)\n")


def test_sql_timeout(store):
    result = invoke("sql", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) "
                           "SELECT count(*) FROM c WHERE x < 0", "--timeout", "0.2")
    assert result.exit_code == 1
    assert result.stderr == ("Error: the query ran past the time limit of 0.2 s and was "
                             "stopped; Try: narrow it (WHERE, LIMIT) or allow more time "
                             "(--timeout)\n")


@pytest.mark.parametrize("sql", ["DROP TABLE runs", "SELECT 1; DROP TABLE runs",
                                 "ATTACH 'file:x?mode=rwc' AS x", "PRAGMA query_only=0",
                                 "SELECT load_extension('x')", "SELECT randomblob(2e9)",
                                 "SELECT * FROM nowhere"])
def test_sql_refusals_are_one_error_line(store, sql):
    result = invoke("sql", sql)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Try:" in lines[0]
    assert store.read("SELECT count(*) FROM sqlite_master WHERE name = 'runs'")[0][0] == 1


def test_sql_json_refuses_duplicate_column_names(store):
    result = invoke("sql", "SELECT 1 AS a, 2 AS a", "--json")
    assert result.exit_code == 1
    assert result.stderr == ("Error: column name 'a' appears more than once, so JSON objects "
                             "would lose values; Try: name the columns apart (AS ...) or use "
                             "--csv\n")


@pytest.mark.parametrize("args", [[], ["--max-rows", "0", "SELECT 1"],
                                  ["--timeout", "0", "SELECT 1"], ["--timeout", "x", "SELECT 1"],
                                  ["--schema", "SELECT 1"], ["--csv", "--bogus", "SELECT 1"]])
def test_sql_bad_arguments_exit_2(store, args):
    result = invoke("sql", *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""


def test_sql_schema_lists_tables_and_views(store):
    result = invoke("sql", "--schema")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "runs (table)"
    assert lines[1].split() == ["id", "INTEGER"]
    assert "metric_values (view)" in lines and "metric_last (view)" in lines
    start = lines.index("metric_values (view)")
    assert [line.split()[0] for line in lines[start + 1:start + 13]] == [
        "run_id", "run_name", "alternative_name", "seq", "type", "type_normalized", "key",
        "step", "epoch", "value", "is_nan", "timestamp"]
