"""The t9k compat API on a server whose tables live in PostgreSQL: the real t9k client uploads
a run (NaN, infinities, an artifact, lineage) and loads it back; runstore reads the same rows."""

from __future__ import annotations

import math

from runstore.remote import Client
from tests.server_harness import ServerProcess
from tests.t9k.conftest import T9kServer
from tests.t9k.test_t9k_client import LOAD_BACK, UPLOAD_RUN, last_json, t9k


def test_t9k_client_round_trip_on_postgres(tmp_path, pg_url):
    with ServerProcess(tmp_path / "server-data", database_url=pg_url) as proc:
        server = T9kServer(proc, {}, {"alice": proc.add_user("alice")})
        server.keys["alice"] = server.new_key("alice")
        up = last_json(t9k(server, UPLOAD_RUN, tmp_path / "up"))
        with Client(server.url, server.tokens["alice"]) as c:
            detail = c.request("GET", f"/runs/{up['id']}")
            rows = c.request("GET", f"/runs/{up['id']}/metrics")["rows"]
        assert (detail["metadata"]["status"], detail["metric_count"]) == ("Complete", 12)
        assert [r[4] for r in rows if r[1] == "odd"] == [1.0, 2.0, "NaN", 4.0, 5.0]
        back = last_json(t9k(server, LOAD_BACK, tmp_path / "down",
                             args=("/alice/proj/sub/t9k-run", "/alice/proj/sub/weights")))
    assert back["hparams"] == {"lr": 0.01, "layers": [64, 32]}
    assert back["metrics"]["val"] == [{"value": {"acc": "inf", "low": "-inf"}, "step": 5,
                                       "epoch": None}]
    assert [r["value"]["loss"] for r in back["metrics"]["train"]] == \
        [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert back["metrics"]["train"][2]["value"]["odd"] == "nan"
    assert back["objects"]["ckpt/w.bin"]["size_bytes"] == 5000
    assert back["assoc"]["output"][0]["name"] == up["art_alt"]
    assert not math.isnan(back["metrics"]["train"][0]["value"]["odd"])
