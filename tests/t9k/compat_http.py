"""Plain-HTTP access to the t9k compat API of a test server, for what the t9k client never
sends on purpose: files cut short, out of order, hostile paths."""

from __future__ import annotations

import json

import httpx

from tests.t9k.harness import AISTORE_PREFIX


class Compat:
    def __init__(self, server_url: str, key: str) -> None:
        self.http = httpx.Client(base_url=server_url + AISTORE_PREFIX, params={"apikey": key},
                                 follow_redirects=False, timeout=30)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Compat:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def node(self, parent: str, name: str, kind: str, alternative: str | None = None):
        extra = json.dumps({"alternativeName": alternative}) if alternative else ""
        return self.http.post("/apis/v1/nodes", json={
            "parent": parent, "name": name, "labels": [], "description": "", "type": kind,
            "storageType": 2, "extra": extra})

    def put(self, path: str, data: bytes):
        return self.http.post("/apis/v1/objects", params={"path": path},
                              files={"content": ("f", data)})

    def get(self, url: str, **params):
        return self.http.get(url, params=params)

    def delete(self, node: str):
        return self.http.request("DELETE", "/apis/v1/nodes", json={"node": node})
