"""The exact answers t9k 0.6's client.py parses (status codes and body texts), checked on the
wire, including the ones the client only meets when something is wrong."""

from __future__ import annotations

import hashlib
import json

from tests.t9k.compat_http import Compat


def test_the_answers_t9k_parses(t9k_server):
    with Compat(t9k_server.url, t9k_server.keys["alice"]) as c:
        missing = c.get("/apis/v1/nodes/info", node="/alice/wire-nope")
        assert (missing.status_code, missing.text) == (404, "node not found [/alice/wire-nope]")
        orphan = c.node("/alice/wire-missing", "x", "Run")
        # the client takes the path between the last '[' and the final character
        assert orphan.status_code == 404 and orphan.text.rsplit("[", 1)[1][:-1] == \
            "/alice/wire-missing"
        assert c.node("/alice", "wire", "Folder").status_code == 200
        made = c.node("/alice/wire", "r", "Run", "r_240101_000000_wire01")
        assert made.status_code == 200
        clash = c.node("/alice/wire", "r", "Artifact", "r_240101_000000_wire02")
        assert clash.status_code == 400 and "Invalid conflicting node Name" in clash.text
        info = c.get("/apis/v1/nodes/info", node="/alice/wire/r").json()
        assert info["id"] == made.json()["id"] and info["type"] == "Run"
        assert json.loads(info["extra"]) == {"alternativeName": "r_240101_000000_wire01"}
        by_id = c.get("/apis/v1/nodes/info", node=info["id"]).json()
        assert by_id["path"] == "/alice/wire/r"
        listing = c.get("/apis/v1/nodes", parent="/alice", type="Folder", size=1, page=1).json()
        assert listing["pagination"]["size"] == 1 and len(listing["data"]) == 1
        assert listing["pagination"]["total"] >= 1

        ls = c.get("/apis/v1/objects/ls", path="/alice/wire/r", size=1000).json()
        assert {o["path"] for o in ls["data"]} >= {"metadata.yaml", "hyperparameters.yaml",
                                                   "platform.yaml", "git.yaml", "stdout.log"}
        assert ls["pagination"]["total"] == len(ls["data"])

        start = c.http.post("/apis/v1/objects/multipart", params={"path": "/alice/wire/r/f"})
        upload_id = start.json()["uploadId"]
        part = c.http.put(f"/apis/v1/objects/multipart/{upload_id}",
                          params={"path": "/alice/wire/r/f", "partNumber": 1},
                          files={"content": ("c", b"abc")})
        assert part.json()["eTag"] == hashlib.md5(b"abc").hexdigest()
        wrong = c.http.post(f"/apis/v1/objects/multipart/{upload_id}",
                            params={"path": "/alice/wire/r/f"},
                            json={"parts": [{"etag": "0" * 32, "partNumber": 1}]})
        assert wrong.status_code == 400 and "etag does not match" in wrong.text
        gone = c.http.post(f"/apis/v1/objects/multipart/{upload_id}",
                           params={"path": "/alice/wire/r/f"},
                           json={"parts": [{"etag": part.json()["eTag"], "partNumber": 1}]})
        assert gone.status_code == 404  # a failed completion ends the upload

        assert c.delete("/alice/wire").status_code == 400  # folders are not deleted
        graph = c.http.post("/apis/v1/graphs", json={"graphs": [{"from": "nope1",
                                                                  "to": "nope2"}]})
        assert graph.status_code == 404 and graph.text == "node not found [nope1]"
        assert c.delete("/alice/wire/r").status_code == 200
        assert c.get("/apis/v1/nodes/info", node="/alice/wire/r").status_code == 404
