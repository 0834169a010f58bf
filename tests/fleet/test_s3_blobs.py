"""`runstore serve --blobs s3://...` against a real SeaweedFS (tests/s3_harness.py): blobs
round-trip through the bucket, a cut upload resumes, wrong bytes store nothing, two replicas
writing one blob at the same instant leave it whole, and the command line says what is wrong
with a bad --blobs / --workers."""

from __future__ import annotations

import hashlib
import secrets
import threading
from pathlib import Path

import httpx
import pytest

from runstore.protocol import API_PREFIX as API
from runstore.remote import Client, upload_artifact
from runstore.store import Store
from tests.remote.rs_fixtures import make_artifact
from tests.s3_harness import SeaweedProcess
from tests.server_harness import FaultProxy, ServerProcess, run_cli


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    with SeaweedProcess(tmp_path_factory.mktemp("seaweed")) as proc:
        yield proc


def s3_server(s3: SeaweedProcess, base: Path, prefix: str, database_url: str | None = None,
              **env: str) -> ServerProcess:
    return ServerProcess(base, database_url=database_url,
                         extra_env={**s3.env, "RUNSTORE_BLOBS": s3.blobs_url(prefix), **env})


def stored(s3: SeaweedProcess, prefix: str, sha: str) -> bytes | None:
    import obstore

    try:
        return bytes(obstore.get(s3._store(), f"{prefix}/blobs/{sha[:2]}/{sha}").bytes())
    except FileNotFoundError:
        return None


def test_artifact_round_trips_through_the_bucket_and_a_cut_upload_resumes(
        s3: SeaweedProcess, tmp_path: Path):
    big = secrets.token_bytes(20 * 1024 * 1024 + 123)   # 3 client parts: the staged path
    small = b"small file\n" * 100                          # one request: the direct path
    store = Store(tmp_path / "home")
    art = make_artifact(store, tmp_path, "weights", files={"big.bin": big, "small.txt": small})
    with s3_server(s3, tmp_path / "srv", "roundtrip") as server:
        token = server.add_user("alice")
        with FaultProxy(server.port) as proxy:
            # The second part of the big file is cut after 3 MB: the client resumes.
            proxy.cut_request(b"PATCH /api/v1/uploads", after_bytes=3_000_000, times=1)
            with Client(proxy.url, token, max_backoff_s=0.5) as client:
                result = upload_artifact(store, art, client)
            assert proxy.faults_triggered == 1
        assert result.bytes_sent >= len(big) + len(small)
        headers = {"Authorization": f"Bearer {token}"}
        for data in (big, small):
            sha = hashlib.sha256(data).hexdigest()
            assert stored(s3, "roundtrip", sha) == data
            with httpx.stream("GET", f"{server.url}{API}/blobs/{sha}", headers=headers,
                              timeout=60) as got:
                assert got.status_code == 200
                assert got.headers["content-length"] == str(len(data))
                assert b"".join(got.iter_bytes()) == data
        # Another user sends the same bytes: stored already, yet verified and owned only
        # after sending them all (staged like any other large blob, nothing rewritten).
        bob = server.add_user("bob")
        with Client(server.url, bob) as client:
            assert upload_artifact(store, art, client).bytes_sent >= len(big)
        got = httpx.get(f"{server.url}{API}/blobs/{hashlib.sha256(big).hexdigest()}",
                        headers={"Authorization": f"Bearer {bob}"}, timeout=60)
        assert got.status_code == 200 and got.content == big
    assert s3.list_keys("roundtrip/uploads/") == []


@pytest.mark.parametrize("size", [1000, 9 * 1024 * 1024], ids=["direct", "staged"])
def test_wrong_bytes_store_nothing_in_the_bucket(s3: SeaweedProcess, tmp_path: Path,
                                                 size: int):
    data = secrets.token_bytes(size)
    claimed = hashlib.sha256(b"something else").hexdigest()
    prefix = f"mismatch{size}"
    with s3_server(s3, tmp_path / "srv", prefix) as server:
        token = server.add_user("alice")
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=server.url + API, headers=headers, timeout=60) as h:
            assert h.post("/uploads", json={"sha256": claimed, "size_bytes": size}
                          ).json()["offset"] == 0
            part = 8 * 1024 * 1024
            offset, answer = 0, None
            while offset < size:
                answer = h.patch(f"/uploads/{claimed}", params={"offset": offset, "size": size},
                                 content=data[offset:offset + part])
                if answer.status_code != 200:
                    break
                offset = answer.json()["offset"]
            assert answer is not None and answer.status_code == 422
            assert answer.json()["code"] == "hash_mismatch"
            assert claimed in answer.json()["detail"]
            assert h.get(f"/blobs/{claimed}").status_code == 404
            # Nothing half-written: no blob, no staged part; the upload starts again at 0.
            assert h.post("/uploads", json={"sha256": claimed, "size_bytes": size}
                          ).json() == {"sha256": claimed, "size_bytes": size, "offset": 0,
                                       "complete": False}
    assert s3.list_keys(f"{prefix}/") == []


@pytest.mark.parametrize("size", [1000, 9 * 1024 * 1024], ids=["direct", "staged"])
def test_more_bytes_than_declared_is_413_and_stores_nothing(s3: SeaweedProcess,
                                                             tmp_path: Path, size: int):
    data = secrets.token_bytes(size + 1000)
    sha = hashlib.sha256(data[:size]).hexdigest()
    prefix = f"toolarge{size}"
    with s3_server(s3, tmp_path / "srv", prefix) as server:
        token = server.add_user("alice")
        with httpx.Client(base_url=server.url + API, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as h:
            offset = 0
            if size > 8 * 1024 * 1024:  # the first 8 MiB staged, the rest overflows
                offset = h.patch(f"/uploads/{sha}", params={"offset": 0, "size": size},
                                 content=data[:8 * 1024 * 1024]).json()["offset"]
            answer = h.patch(f"/uploads/{sha}", params={"offset": offset, "size": size},
                             content=data[offset:])
            assert answer.status_code == 413, answer.text
            assert f"more bytes than the declared {size} for {sha}" in answer.json()["detail"]
            assert h.post("/uploads", json={"sha256": sha, "size_bytes": size}
                          ).json()["offset"] == offset
    assert s3.list_keys(f"{prefix}/blobs/") == []


def test_two_replicas_writing_one_blob_at_the_same_instant(s3: SeaweedProcess, pg_url: str,
                                                           tmp_path: Path):
    """Two replicas on one database and one bucket get the same blob at the same instant
    (from two users, so neither is told it is done already): both succeed, the bucket holds
    the bytes once and whole, both users may read it."""
    a = s3_server(s3, tmp_path / "a", "race", database_url=pg_url).start()
    b = s3_server(s3, tmp_path / "b", "race", database_url=pg_url).start()
    try:
        tokens = [a.add_user("alice"), a.add_user("bob")]
        for round_ in range(6):
            data = secrets.token_bytes(3 * 1024 * 1024 + round_)
            sha = hashlib.sha256(data).hexdigest()
            barrier = threading.Barrier(2)
            answers: list[httpx.Response] = []

            def send(server: ServerProcess, token: str, data=data, sha=sha,
                     barrier=barrier, answers=answers) -> None:
                with httpx.Client(base_url=server.url + API, timeout=60,
                                  headers={"Authorization": f"Bearer {token}"}) as h:
                    barrier.wait()
                    answers.append(h.patch(f"/uploads/{sha}",
                                           params={"offset": 0, "size": len(data)},
                                           content=data))

            threads = [threading.Thread(target=send, args=(srv, tok))
                       for srv, tok in zip((a, b), tokens, strict=True)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
            assert all(r.json()["complete"] for r in answers)
            assert stored(s3, "race", sha) == data
            for srv, tok in zip((b, a), tokens, strict=True):
                got = httpx.get(f"{srv.url}{API}/blobs/{sha}", timeout=60,
                                headers={"Authorization": f"Bearer {tok}"})
                assert got.status_code == 200 and got.content == data
    finally:
        a.stop()
        b.stop()


def test_bad_blobs_and_workers_options_are_one_line_errors(tmp_path: Path):
    bad = run_cli("serve", "--data", str(tmp_path / "d"), "--blobs", "ftp://host/x")
    assert bad.returncode != 0
    assert "Error: unsupported blob location 'ftp://host/x'. Try: a directory or " \
           "s3://BUCKET/PREFIX" in bad.stderr
    assert "Traceback" not in bad.stderr
    nobucket = run_cli("serve", "--data", str(tmp_path / "d"), "--blobs", "s3://")
    assert nobucket.returncode != 0 and "needs a bucket name" in nobucket.stderr
    workers = run_cli("serve", "--data", str(tmp_path / "d"), "--workers", "2")
    assert workers.returncode != 0
    assert "--workers 2 needs a shared database, not SQLite. Try: --database " in \
           workers.stderr


def test_workers_share_one_database_and_bucket(s3: SeaweedProcess, pg_url: str,
                                               tmp_path: Path):
    """`serve --workers 3`: several processes on one port; artifacts uploaded by parallel
    clients are all there once, whichever worker took each request."""
    store = Store(tmp_path / "home")
    arts = [make_artifact(store, tmp_path, f"a{i}", files={"f.bin": secrets.token_bytes(5000)})
            for i in range(9)]
    with s3_server(s3, tmp_path / "srv", "workers", database_url=pg_url,
                   RUNSTORE_WORKERS="3") as server:
        token = server.add_user("alice")
        errors: list[BaseException] = []

        def push(chunk: list[str]) -> None:
            try:
                with Client(server.url, token) as client:
                    for art in chunk:
                        upload_artifact(store, art, client)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=push, args=(arts[i::3],)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        import psutil

        children = psutil.Process(server.pid).children(recursive=True)
        assert len([c for c in children if "python" in c.name()]) >= 3
        with Client(server.url, token) as client:
            for art in arts:
                assert client.request("GET", f"/artifacts/{art}")["uuid"] == art
    assert len(s3.list_keys("workers/blobs/")) == 9


@pytest.mark.parametrize("backend", ["directory", "s3"])
def test_put_bytes_read_exists_for_other_modules(s3: SeaweedProcess, tmp_path: Path,
                                                 backend: str, monkeypatch: pytest.MonkeyPatch):
    """The BlobStore calls other server modules use to keep objects as blobs, on both
    backends: put_bytes stores through the verified path, read streams it back, the owner
    may read it and nobody else owns it."""
    import asyncio

    from runstore.server import auth
    from runstore.server.blobs import BlobStore, open_backend
    from runstore.server.db import Database

    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    database = Database.for_data_dir(tmp_path / "data")
    auth.add_user(database, "alice")
    auth.add_user(database, "bob")
    location = None if backend == "directory" else s3.blobs_url("putbytes")
    blobs = BlobStore(tmp_path / "data", database, open_backend(tmp_path / "data", location))
    data = b'{"kind": "object"}' * 50

    async def go() -> None:
        sha = await blobs.put_bytes(1, data)
        assert sha == hashlib.sha256(data).hexdigest()
        assert await blobs.put_bytes(1, data) == sha  # again: the same name, nothing new
        assert await blobs.exists(sha)
        assert await blobs.owned(1, sha) and not await blobs.owned(2, sha)
        assert await blobs.owned_size(1, sha) == len(data)
        assert b"".join([c async for c in blobs.read(sha)]) == data
        assert not await blobs.exists(hashlib.sha256(b"never stored").hexdigest())
        await blobs.close()

    asyncio.run(go())
    database.dispose()
