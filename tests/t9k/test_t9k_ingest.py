"""Run files from t9k clients arrive in any order, again and again, and sometimes cut short
(t9k's auto_upload reads a file while t9k rewrites it): the server keeps the last valid state
and takes every metrics record exactly once. YAML 1.1 non-finite values survive."""

from __future__ import annotations

import itertools
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runstore.remote import Client
from tests.t9k.compat_http import Compat

CI = os.environ.get("CI") == "true"
RECORDS = [
    ("loss: 1.5\n    acc: .nan", 1, "0"),
    ("loss: .inf\n    acc: -.inf", 2, "null"),
    ("loss: 0.25\n    acc: 0.75", 3, "1"),
    ("loss: -0.0\n    acc: 1.0e-10", 4, "1"),
]
EXPECTED = [("loss", 1, 1.5), ("acc", 1, "NaN"), ("loss", 2, "Infinity"),
            ("acc", 2, "-Infinity"), ("loss", 3, 0.25), ("acc", 3, 0.75), ("loss", 4, -0.0),
            ("acc", 4, 1e-10)]


def metrics_yaml(n: int) -> bytes:
    """The first n records as t9k writes metrics/train.yaml."""
    return "".join(
        f"- value:\n    {v}\n  sequence:\n    epoch: {e}\n    step: {s}\n"
        f"    timestamp: '2024-05-06T07:08:09.{s:06d}+08:00'\n"
        for v, s, e in RECORDS[:n]).encode()


def metadata_yaml(status: str, alt: str) -> bytes:
    end = "'2024-05-06T08:00:00.000000+08:00'" if status != "Running" else "null"
    return (f"kind: Run\nname: r\nlabels:\n- a\ndescription: d\n"
            f"startTimestamp: '2024-05-06T07:00:00.000000+08:00'\nendTimestamp: {end}\n"
            f"status: {status}\nalternativeName: {alt}\n"
            "associations:\n  input: []\n  output: []\nremote: []\n").encode()


def rows_of(server, uuid: str) -> list[tuple]:
    with Client(server.url, server.tokens["alice"]) as c:
        return [(r[1], r[2], r[4]) for r in c.request("GET", f"/runs/{uuid}/metrics")["rows"]]


def detail(server, uuid: str) -> dict:
    with Client(server.url, server.tokens["alice"]) as c:
        return c.request("GET", f"/runs/{uuid}")


_names = itertools.count()


def new_run(compat: Compat) -> tuple[str, str]:
    name = f"r{next(_names)}"
    compat.node("/alice", "ingest", "Folder")
    made = compat.node("/alice/ingest", name, "Run", f"{name}_240506_070000_abc123")
    assert made.status_code == 200, made.text
    return f"/alice/ingest/{name}", made.json()["id"]


def test_last_valid_state_wins(t9k_server):
    with Compat(t9k_server.url, t9k_server.keys["alice"]) as compat:
        path, uuid = new_run(compat)
        alt = path.rsplit("/", 1)[1] + "_240506_070000_abc123"
        # metrics before metadata: any order
        assert compat.put(f"{path}/metrics/train.yaml", metrics_yaml(2)).status_code == 200
        assert compat.put(f"{path}/metadata.yaml", metadata_yaml("Running", alt)).is_success
        assert compat.put(f"{path}/hyperparameters.yaml", b"lr: .nan\nn: 3\n").is_success
        assert rows_of(t9k_server, uuid) == EXPECTED[:4]
        finished = metadata_yaml("Complete", alt)
        assert compat.put(f"{path}/metadata.yaml", finished).is_success
        for cut in (b"", finished[:len(finished) // 2], finished[:-40], b"kind: [Run"):
            assert compat.put(f"{path}/metadata.yaml", cut).is_success  # not the client's fault
            assert compat.put(f"{path}/hyperparameters.yaml", cut).is_success
        got = detail(t9k_server, uuid)
        assert (got["metadata"]["status"], got["complete"]) == ("Complete", True)
        assert got["metadata"]["end_timestamp"] == "2024-05-06T08:00:00.000000+08:00"
        assert got["metadata"]["labels"] == ["a"]
        assert got["metadata"]["hparams"] == {"lr": "NaN", "n": 3}
        # the rendered metadata.yaml is the last valid one
        back = compat.get("/apis/v1/objects", path=f"{path}/metadata.yaml")
        assert "status: Complete" in back.text


@settings(max_examples=int(os.environ.get("RUNSTORE_T9K_CUT_EXAMPLES", "8" if CI else "30")),
          deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(0, len(metrics_yaml(4))), max_size=8))
def test_metrics_cut_short_anywhere_are_taken_exactly_once(t9k_server, cuts):
    """Any sequence of uploads of prefixes of the growing file (older ones too), then the
    whole file: the rows held are always a prefix of the records, and in the end all of
    them, each once."""
    full = metrics_yaml(4)
    with Compat(t9k_server.url, t9k_server.keys["alice"]) as compat:
        path, uuid = new_run(compat)
        for cut in cuts:
            assert compat.put(f"{path}/metrics/train.yaml", full[:cut]).status_code == 200
            held = rows_of(t9k_server, uuid)
            assert held == EXPECTED[:len(held)]
        assert compat.put(f"{path}/metrics/train.yaml", full).status_code == 200
        assert compat.put(f"{path}/metrics/train.yaml", metrics_yaml(3)).status_code == 200
        assert rows_of(t9k_server, uuid) == EXPECTED
