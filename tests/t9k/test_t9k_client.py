"""Unmodified t9k 0.6 clients against `runstore serve`: the real t9k.em and `em` CLI, installed
from the sdist into a throwaway venv, driven in subprocesses against a real server.

Each script prints one JSON line last; the tests read it and check the server through
runstore's own API, SDK and CLI (a t9k upload is a runstore run) and the reverse.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3

import httpx

import runstore
from runstore.remote import Client
from tests.server_harness import run_cli
from tests.t9k.harness import AISTORE_PREFIX, em_cli, run_t9k, t9k_config

LOGIN = """
    import json, os
    from t9k import em
    em.login(ais_host=os.environ['HOST'], api_key=os.environ['KEY'])
    """

CATCH = """
    def attempt(fn):
        try:
            fn()
            return 'ok'
        except Exception as e:
            return f'{type(e).__name__}: {e}'
    """


def last_json(done) -> dict:
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def t9k(server, script: str, cwd, user: str = "alice", key: str | None = None, **kw):
    return run_t9k(server.python, script, cwd, host=server.url, key=key or server.keys[user],
                   **kw)


def api(server, user: str = "alice") -> Client:
    return Client(server.url, server.tokens[user])


def folder_nodes(server, path: str) -> dict[str, dict]:
    with api(server) as c:
        return {n["path"]: n for n in c.request("GET", f"/folders{path}")["nodes"]}


def test_login_bad_key_revoked_key_and_no_redirect(t9k_server, tmp_path):
    script = LOGIN.replace("em.login(", "err = None\n    try:\n        em.login(") + """
    except Exception as e:
        err = f'{type(e).__name__}: {e}'
    from t9k.em.client import CLIENT
    print(json.dumps({'user': getattr(CLIENT, 'user_name', None), 'err': err}))
    """
    key = t9k_server.keys["alice"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", key)
    assert last_json(t9k(t9k_server, script, tmp_path)) == {"user": "alice", "err": None}

    unknown = "0b0e7c0e-9d1f-4c6a-8f3e-5a2b1c0d9e8f"
    out = last_json(t9k(t9k_server, script, tmp_path, key=unknown))
    refused = "HTTPError: 401 Client Error: Unauthorized for URL"
    assert out["err"].startswith(refused) and out["user"] is None
    assert out["err"].endswith("api key not found or revoked. Try: runstore user token NAME --t9k")

    # a t9k key is listed and revoked like any token
    extra = t9k_server.new_key("alice")
    assert last_json(t9k(t9k_server, script, tmp_path, key=extra))["user"] == "alice"
    key_id = "t9k-" + hashlib.sha256(extra.encode()).hexdigest()[:12]
    listed = json.loads(t9k_server.proc.cli("user", "list", "--json").stdout)
    assert key_id in [t["id"] for u in listed if u["name"] == "alice" for t in u["tokens"]]
    t9k_server.proc.revoke_user("alice", key_id)
    out = last_json(t9k(t9k_server, script, tmp_path, key=extra))
    assert out["err"].startswith(refused)
    assert last_json(t9k(t9k_server, script, tmp_path))["user"] == "alice"  # others still work

    base = t9k_server.url + AISTORE_PREFIX
    with httpx.Client(follow_redirects=False) as http:
        no_key = http.get(f"{base}/oauth2/userinfo")
        bearer = http.get(f"{base}/oauth2/userinfo",
                          headers={"Authorization": f"Bearer {t9k_server.tokens['alice']}"})
        as_runstore = http.get(f"{t9k_server.url}/api/v1/whoami", params={"apikey": key})
        slash = http.get(f"{base}/apis/v1/nodes/", params={"apikey": key, "parent": "/alice"})
    assert no_key.status_code == 401 and "runstore user token" in no_key.text
    assert bearer.status_code == 401  # the compat API takes only its apikey
    assert as_runstore.status_code == 401  # and the apikey opens nothing else
    assert slash.status_code == 404  # never a redirect (t9k reads one as "no API key")


UPLOAD_RUN = LOGIN + """
    import math
    run = em.create_run(name='t9k-run', hparams={'lr': 0.01, 'layers': [64, 32]},
                        labels=['cv'], description='from t9k')
    for step in range(1, 6):
        run.log('train', {'loss': 1.0 / step, 'odd': math.nan if step == 3 else float(step)},
                step=step, epoch=1)
    run.log('val', {'acc': math.inf, 'low': -math.inf}, step=5)
    art = em.create_artifact(name='weights', labels=['m'])
    open('w.bin', 'wb').write(os.urandom(5000))
    art.add_file('w.bin', 'ckpt/')
    art.add_reference('s3://bucket/key', 'remote.ref')
    run.mark_output(art)
    print('a line the script printed')
    run.finish()
    run.upload(folder='proj/sub', make_folder=True)
    import hashlib
    print(json.dumps({'alt': run.alternative_name, 'id': run.remote[-1]['id'],
                      'art_alt': art.alternative_name,
                      'sha': hashlib.sha256(open('w.bin', 'rb').read()).hexdigest()}))
    """


def test_t9k_upload_is_a_first_class_runstore_run(t9k_server, tmp_path, monkeypatch):
    out = last_json(t9k(t9k_server, UPLOAD_RUN, tmp_path))
    with api(t9k_server) as c:
        runs = {r["path"]: r for r in c.request("GET", "/runs")}
        summary = runs["/alice/proj/sub/t9k-run"]
        assert summary["uuid"] == out["id"]
        assert (summary["status"], summary["complete"]) == ("Complete", True)
        detail = c.request("GET", f"/runs/{out['id']}")
        meta = detail["metadata"]
        assert detail["alternative_name"] == out["alt"]
        assert meta["hparams"] == {"lr": 0.01, "layers": [64, 32]}
        assert (meta["labels"], meta["description"]) == (["cv"], "from t9k")
        assert meta["end_timestamp"] and meta["platform"]["python"]
        assert detail["metric_count"] == 12
        rows = c.request("GET", f"/runs/{out['id']}/metrics")["rows"]
        odd = {r[2]: r[4] for r in rows if r[1] == "odd"}
        assert odd == {1: 1.0, 2: 2.0, 3: "NaN", 4: 4.0, 5: 5.0}
        assert [r[4] for r in rows if r[0] == "val"] == ["Infinity", "-Infinity"]
        [link] = detail["lineage"]["output"]
        art = c.request("GET", f"/artifacts/{link['artifact_uuid']}")
        assert art["alternative_name"] == out["art_alt"]
        objects = {o["path"]: o for o in art["objects"]}
        assert objects["ckpt/w.bin"]["sha256"] == out["sha"]
        assert objects["ckpt/w.bin"]["size_bytes"] == 5000
        assert objects["remote.ref"]["uri"] == "s3://bucket/key"
    log = httpx.get(f"{t9k_server.url}{AISTORE_PREFIX}/apis/v1/objects",
                    params={"path": "/alice/proj/sub/t9k-run/stdout.log",
                            "apikey": t9k_server.keys["alice"]})
    assert "a line the script printed" in log.text

    # runstore's CLI lists it; runstore's SDK loads it by path; SQL on the server's tables
    monkeypatch.setenv("RUNSTORE_SERVER", t9k_server.url)
    monkeypatch.setenv("RUNSTORE_TOKEN", t9k_server.tokens["alice"])
    listing = run_cli("ls", "--remote", "proj/sub", extra_env={
        "RUNSTORE_SERVER": t9k_server.url, "RUNSTORE_TOKEN": t9k_server.tokens["alice"]})
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"t9k-run\s+Complete", listing.stdout)
    run = runstore.load_run("/alice/proj/sub/t9k-run")
    assert run.hparams.as_dict() == {"lr": 0.01, "layers": [64, 32]}
    assert [r["value"]["loss"] for r in run.metrics["train"]] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert math.isnan(run.metrics["train"][2]["value"]["odd"])
    assert run.metrics["val"][0]["value"] == {"acc": math.inf, "low": -math.inf}
    db = sqlite3.connect(t9k_server.proc.data_dir / "server.db")
    assert db.execute("SELECT status, json_extract(hparams, '$.lr') FROM runs "
                      "WHERE uuid = ?", (out["id"],)).fetchone() == ("Complete", 0.01)


CONFLICTS = LOGIN + CATCH + """
    def make(v):
        r = em.create_run(name='same')
        r.log('train', {'v': v}, step=1)
        r.finish()
        return r
    runs = {k: make(i) for i, k in enumerate(
        ['first', 'skip', 'error', 'new', 'replace', 'bogus', 'missing'])}
    res = {'first': attempt(lambda: runs['first'].upload(folder='conflicts', make_folder=True)),
           'again': attempt(lambda: runs['first'].upload(folder='conflicts'))}
    for k in ('skip', 'error', 'new', 'replace', 'bogus'):
        res[k] = attempt(lambda: runs[k].upload(folder='conflicts', conflict_strategy=k))
    res['missing'] = attempt(lambda: runs['missing'].upload(folder='nope/deeper'))
    res['made'] = attempt(lambda: runs['missing'].upload(folder='nope/deeper', make_folder=True))
    print(json.dumps({'res': res, 'alts': {k: r.alternative_name for k, r in runs.items()}}))
    """


def test_conflict_strategies_and_make_folder(t9k_server, tmp_path):
    out = last_json(t9k(t9k_server, CONFLICTS, tmp_path))
    res, alts = out["res"], out["alts"]
    assert res["first"] == res["again"] == res["skip"] == "ok"
    assert res["error"] == "RuntimeError: Run already exists in Folder /alice/conflicts: 'same'"
    assert res["new"] == res["replace"] == "ok"
    assert res["bogus"] == "ValueError: Not supported conflict strategy: 'bogus'"
    assert res["missing"] == "ValueError: Folder does not exist: '/alice/nope/deeper'"
    assert res["made"] == "ok"
    nodes = folder_nodes(t9k_server, "/alice/conflicts")
    # 'first' uploaded twice is one node; replace took its name; new went to its alt name
    assert sorted(nodes) == sorted(["/alice/conflicts/same", f"/alice/conflicts/{alts['new']}"])
    assert nodes["/alice/conflicts/same"]["alternative_name"] == alts["replace"]
    with api(t9k_server) as c:
        rows = c.request("GET", f"/runs/{nodes['/alice/conflicts/same']['uuid']}/metrics")
        assert [r[4] for r in rows["rows"]] == [4.0]  # the replace run's own value
    assert list(folder_nodes(t9k_server, "/alice/nope/deeper")) == ["/alice/nope/deeper/same"]


MAKE_LOCAL = """
    import json
    from t9k import em
    names = []
    for i in range(2):
        r = em.create_run(name=f'cli-{i}', hparams={'i': i})
        r.log('train', {'x': float(i)}, step=i)
        r.finish()
        names.append(r.alternative_name)
    print(json.dumps(names))
    """


def test_em_upload_cli_with_a_t9k_config(t9k_server, tmp_path):
    names = last_json(run_t9k(t9k_server.python, MAKE_LOCAL, tmp_path, host="", key=""))
    config = t9k_config(tmp_path / "t9k-config.yaml", t9k_server.url, t9k_server.keys["alice"])
    one = em_cli(t9k_server.python, ["upload", f".em/runs/{names[0]}", "-f", "cli/one", "-m"],
                 tmp_path, config)
    assert one.returncode == 0, one.stderr
    both = em_cli(t9k_server.python, ["upload", ".em/runs", "-f", "cli/all", "-m", "-c", "new"],
                  tmp_path, config)
    assert both.returncode == 0, both.stderr
    assert list(folder_nodes(t9k_server, "/alice/cli/one")) == ["/alice/cli/one/cli-0"]
    nodes = folder_nodes(t9k_server, "/alice/cli/all")
    assert sorted(nodes) == ["/alice/cli/all/cli-0", "/alice/cli/all/cli-1"]
    assert all(n["status"] == "Complete" for n in nodes.values())


BIG = LOGIN + """
    import hashlib, shutil
    size = 100 * 1024 * 1024 + 12345         # over t9k's 100 MiB single-request limit
    with open('big.bin', 'wb') as f:          # sparse: only the ends are written
        f.write(b'head' * 1000)
        f.seek(size - 4000)
        f.write(b'tail' * 1000)
    art = em.create_artifact(name='big')
    art.add_file('big.bin')
    art.upload(folder='big', make_folder=True)
    md5 = art.objects['big.bin']['checksum']
    shutil.rmtree('.em')
    back = em.load_artifact('/alice/big/big')
    print(json.dumps({'md5': md5, 'back': back.objects['big.bin']['checksum'],
                      'sha': hashlib.sha256(open('big.bin', 'rb').read()).hexdigest(),
                      'size': size}))
    """


def test_file_over_100_mib_goes_up_in_parts(t9k_server, tmp_path):
    out = last_json(t9k(t9k_server, BIG, tmp_path, timeout_s=300))
    assert out["back"] == out["md5"]
    [node] = folder_nodes(t9k_server, "/alice/big").values()
    with api(t9k_server) as c:
        [obj] = c.request("GET", f"/artifacts/{node['uuid']}")["objects"]
    assert (obj["path"], obj["sha256"], obj["size_bytes"]) == ("big.bin", out["sha"], out["size"])
    assert not list((t9k_server.proc.data_dir / "t9k-multipart").iterdir())  # parts cleaned


AUTO = LOGIN + """
    import time, requests, yaml
    run = em.create_run(name='auto', hparams={'a': 1}, auto_upload=True, folder='auto',
                        make_folder=True)
    for i in range(6):
        run.log('train', {'x': float(i), 'y': float(i) * 2}, step=i)
        run.hparams['step'] = i
        time.sleep(0.2)
    live, deadline = [], time.time() + 20
    while len(live) < 6 and time.time() < deadline:  # what the server holds while it runs
        time.sleep(0.2)
        got = requests.get(os.environ['HOST'] + '/apis/v1/objects', params={
            'path': run.remote[-1]['path'] + '/metrics/train.yaml', 'apikey': os.environ['KEY']})
        live = yaml.safe_load(got.text) if got.ok else []
    run.finish()
    print(json.dumps({'alt': run.alternative_name, 'live': live}))
    """


def test_auto_upload_tracks_a_live_run(t9k_server, tmp_path):
    """Rows reach the server while the run is live, each record once however often the file
    went up half-written. (t9k's own file monitor can die reading metadata.yaml while finish()
    rewrites it, a race in the client; so the final state is sent by `em upload` of the same
    directory, which must re-use the node, as with AIStore.)"""
    out = last_json(t9k(t9k_server, AUTO, tmp_path))
    expected = [(k, i, float(i) * (1 if k == "x" else 2)) for i in range(6) for k in ("x", "y")]
    assert [(k, r["sequence"]["step"], v) for r in out["live"] for k, v in r["value"].items()] \
        == expected
    config = t9k_config(tmp_path / "t9k-config.yaml", t9k_server.url, t9k_server.keys["alice"])
    done = em_cli(t9k_server.python, ["upload", f".em/runs/{out['alt']}", "-f", "auto"],
                  tmp_path, config)
    assert done.returncode == 0, done.stderr
    [node] = folder_nodes(t9k_server, "/alice/auto").values()
    assert node["alternative_name"] == out["alt"]
    assert (node["status"], node["complete"]) == ("Complete", True)
    with api(t9k_server) as c:
        detail = c.request("GET", f"/runs/{node['uuid']}")
        rows = c.request("GET", f"/runs/{node['uuid']}/metrics")["rows"]
    assert detail["metadata"]["hparams"] == {"a": 1, "step": 5}
    assert [(r[1], r[2], r[4]) for r in rows] == expected


LOAD_BACK = LOGIN + """
    import sys, math
    art = em.load_artifact(sys.argv[2])
    run = em.load_run(sys.argv[1])
    def clean(v):
        return repr(v) if isinstance(v, float) and not math.isfinite(v) else v
    metrics = {t: [{'value': {k: clean(v) for k, v in r['value'].items()},
                    'step': r['sequence']['step'], 'epoch': r['sequence']['epoch']}
                   for r in recs] for t, recs in run.metrics.items()}
    print(json.dumps({'name': run.name, 'alt': run.alternative_name,
                      'hparams': run.hparams.as_dict(), 'labels': run.labels,
                      'metrics': metrics, 'assoc': run.associations,
                      'objects': art.objects}))
    """


def test_t9k_loads_runs_and_artifacts_uploaded_by_runstore(t9k_server, tmp_path, monkeypatch):
    monkeypatch.setenv("RUNSTORE_SERVER", t9k_server.url)
    monkeypatch.setenv("RUNSTORE_TOKEN", t9k_server.tokens["alice"])
    run = runstore.create_run(name="rs-run", hparams={"opt": "adam", "lr": 0.5},
                              labels=["rs"])
    run.log("train", {"loss": 0.5, "gap": math.nan}, step=1, epoch=0)
    run.log("train", {"loss": 0.25, "gap": math.inf}, step=2, epoch=0)
    run.log("eval", {"acc": 0.9}, step=2)
    art = runstore.create_artifact("rs-art")
    (tmp_path / "model.pt").write_bytes(b"weights" * 100)
    art.add_file(str(tmp_path / "model.pt"), "m/")
    art.add_reference("https://example.com/data", "data.ref")
    run.mark_output(art)
    run.finish()
    run.upload(folder="rs", make_folder=True)

    out = last_json(t9k(t9k_server, LOAD_BACK, tmp_path / "t9k",
                        args=("/alice/rs/rs-run", "rs/rs-art")))
    assert (out["name"], out["alt"], out["labels"]) == ("rs-run", run.alternative_name, ["rs"])
    assert out["hparams"] == {"opt": "adam", "lr": 0.5}
    assert out["metrics"] == {
        "train": [{"value": {"loss": 0.5, "gap": "nan"}, "step": 1, "epoch": 0},
                  {"value": {"loss": 0.25, "gap": "inf"}, "step": 2, "epoch": 0}],
        "eval": [{"value": {"acc": 0.9}, "step": 2, "epoch": None}]}
    assert out["assoc"]["output"] == [{"kind": "Artifact", "name": art.alternative_name,
                                       "localDir": f".em/artifacts/{art.alternative_name}"}]
    md5 = hashlib.md5(b"weights" * 100).hexdigest()
    assert out["objects"] == {
        "m/model.pt": {"path": "m/model.pt", "size_bytes": 700, "checksum": md5},
        "data.ref": {"path": "data.ref", "uri": "https://example.com/data"}}
    # (not platform: t9k's Run() always replaces it with the loading machine's)


OTHER_USER = LOGIN + CATCH + """
    r = em.create_run(name='intruder')
    r.finish()
    print(json.dumps({
        'upload': attempt(lambda: r.upload(folder='/alice/proj', make_folder=True)),
        'load': attempt(lambda: em.load_run('/alice/conflicts/same')),
        'artifact': attempt(lambda: em.load_artifact('/alice/big/big')),
        'own': attempt(lambda: r.upload(folder='mine', make_folder=True))}))
    """


def test_another_users_folder_is_permission_denied(t9k_server, tmp_path):
    before = folder_nodes(t9k_server, "/alice/proj")
    out = last_json(t9k(t9k_server, OTHER_USER, tmp_path, user="bob"))
    assert out == {"upload": "RuntimeError: Permission denied",
                   "load": "RuntimeError: Permission denied",
                   "artifact": "RuntimeError: Permission denied", "own": "ok"}
    assert folder_nodes(t9k_server, "/alice/proj") == before
    with Client(t9k_server.url, t9k_server.tokens["bob"]) as c:
        assert [n["name"] for n in c.request("GET", "/folders/bob/mine")["nodes"]] == \
            ["intruder"]

