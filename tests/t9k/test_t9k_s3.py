"""The t9k compat API on a server whose blobs live in S3 (a real SeaweedFS): the real t9k
client uploads a run with an artifact and stdout.log, and loads them back; the bytes are in
the bucket."""

from __future__ import annotations

import hashlib

from tests.s3_harness import SeaweedProcess
from tests.server_harness import ServerProcess
from tests.t9k.conftest import T9kServer
from tests.t9k.test_t9k_client import LOAD_BACK, UPLOAD_RUN, last_json, t9k


def test_t9k_client_round_trip_with_s3_blobs(tmp_path):
    import obstore

    with SeaweedProcess(tmp_path / "seaweed") as s3, ServerProcess(
            tmp_path / "server-data",
            extra_env={**s3.env, "RUNSTORE_BLOBS": s3.blobs_url("t9k")}) as proc:
        server = T9kServer(proc, {}, {"alice": proc.add_user("alice")})
        server.keys["alice"] = server.new_key("alice")
        up = last_json(t9k(server, UPLOAD_RUN, tmp_path / "up"))
        back = last_json(t9k(server, LOAD_BACK, tmp_path / "down",
                             args=("/alice/proj/sub/t9k-run", "/alice/proj/sub/weights")))
        stored = bytes(obstore.get(s3._store(),
                                   f"t9k/blobs/{up['sha'][:2]}/{up['sha']}").bytes())
        log = (tmp_path / "down" / ".em" / "runs" / up["alt"] / "stdout.log").read_text()
    assert hashlib.sha256(stored).hexdigest() == up["sha"]
    assert back["objects"]["ckpt/w.bin"]["checksum"] == hashlib.md5(stored).hexdigest()
    assert "a line the script printed" in log
    assert back["hparams"] == {"lr": 0.01, "layers": [64, 32]}
