"""t9k compatibility throughput: the real t9k 0.6 client (`em upload`) sending a run with
--records metric records (5 keys each) and an artifact of --mb MB to a local `runstore serve`,
then loading the run back (`em.load_run`), against the limit measured in the same run: the
same run and artifact brought in by `runstore import` and uploaded by runstore's own client
(runstore.remote, the path syncd takes).

    .venv/bin/python benchmarks/t9k_compat.py [--records 20000] [--mb 100]

Prints points/s and MB/s of each path and their ratio. The t9k path parses YAML the client
wrote and sends files one request each (parts of sqrt(size) for files over 100 MiB); the
runstore path sends binary-free JSON rows in chunks and resumable blob parts.

Then the auto_upload pattern: t9k sends the whole metrics file again after every log() call.
The server parses only what follows the prefix it already took, so the last of --appends
uploads of a growing file should cost about what the first did (the limit: the first upload,
measured in the same run); without that each upload would re-parse the whole file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from runstore.emimport import import_path  # noqa: E402
from runstore.remote import Client, upload_artifact, upload_run  # noqa: E402
from runstore.store import Store  # noqa: E402
from tests.server_harness import ServerProcess  # noqa: E402
from tests.t9k.compat_http import Compat  # noqa: E402
from tests.t9k.emdirs import write_artifact, write_run  # noqa: E402
from tests.t9k.harness import t9k_config, t9k_python  # noqa: E402


def make_em(em: Path, records: int, mb: int) -> tuple[str, str]:
    art = write_artifact(em, "weights", files={})
    with (em / "artifacts" / art / "w.bin").open("wb") as fh:
        block = os.urandom(1 << 20)
        for _ in range(mb):
            fh.write(block)
    alt = write_run(em, "bench", rows=0, outputs=(art,))
    recs = [{"value": {f"k{j}": i * 0.5 + j for j in range(5)},
             "sequence": {"epoch": i // 1000, "step": i,
                          "timestamp": "2024-03-04T05:06:07.000000+08:00"}}
            for i in range(records)]
    (em / "runs" / alt / "metrics" / "train.yaml").write_text(
        yaml.dump(recs, sort_keys=False, Dumper=yaml.CSafeDumper))
    return alt, art


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--appends", type=int, default=50)
    parser.add_argument("--per-append", type=int, default=400)
    args = parser.parse_args()
    points = args.records * 5
    python = t9k_python()
    with tempfile.TemporaryDirectory() as tmp_s, \
            ServerProcess(Path(tmp_s) / "server") as server:
        tmp = Path(tmp_s)
        server.add_user("alice")
        key = server.cli("user", "token", "alice", "--t9k").stdout.strip()
        work = tmp / "t9k"
        alt, art = make_em(work / ".em", args.records, args.mb)
        config = t9k_config(tmp / "t9k-config.yaml", server.url, key)
        env = {**os.environ, "T9K_CONFIG": str(config)}

        def em(*cmd: str) -> float:
            start = time.perf_counter()
            subprocess.run([str(python.parent / "em"), *cmd], cwd=work, env=env, check=True,
                           capture_output=True)
            return time.perf_counter() - start

        t_art = em("upload", f".em/artifacts/{art}", "-f", "t9k", "-m")
        t_run = em("upload", f".em/runs/{alt}", "-f", "t9k", "-m")
        load = textwrap.dedent(f"""
            from t9k import em
            em.login(ais_host='{server.url}/t9k/aistore/server', api_key='{key}')
            em.load_run('/alice/t9k/bench')
            """)
        start = time.perf_counter()
        # in the job directory: t9k's load_run wants the run's artifacts there (.em/artifacts)
        subprocess.run([str(python), "-c", load], cwd=work, check=True, capture_output=True,
                       env={**os.environ, "T9K_CONFIG": str(tmp / "none.yaml")})
        t_load = time.perf_counter() - start

        metrics = (work / ".em" / "runs" / alt / "metrics" / "train.yaml").read_bytes()
        with Compat(server.url, key) as compat:  # the server's share of the t9k run upload
            compat.node("/alice", "raw", "Folder")
            compat.node("/alice/raw", "bench", "Run", alt)
            start = time.perf_counter()
            compat.put("/alice/raw/bench/metrics/train.yaml", metrics).raise_for_status()
            t_server = time.perf_counter() - start
        store = Store(tmp / "home")
        import_path(work / ".em", store)
        token = server.add_user("bob")  # another user: the artifact's bytes go up again
        with Client(server.url, token) as client:
            start = time.perf_counter()
            [art_uuid] = [r["uuid"] for r in store.read("SELECT uuid FROM artifacts")]
            upload_artifact(store, art_uuid, client, folder="rs", make_folder=True)
            r_art = time.perf_counter() - start
            [run_uuid] = [r["uuid"] for r in store.read("SELECT uuid FROM runs")]
            start = time.perf_counter()
            upload_run(store, run_uuid, client, folder="rs", make_folder=True)
            r_run = time.perf_counter() - start
        first, last = auto_upload_pattern(server.url, key, args.appends, args.per_append)
    print(f"t9k client run upload: {points / t_run:,.0f} points/s ({points:,} points, "
          f"{t_run:.2f} s); runstore client: {points / r_run:,.0f} points/s; "
          f"ratio {r_run / t_run:.2f}")
    print(f"  of which the server parsing and storing the metrics file: {t_server:.2f} s "
          f"({points / t_server:,.0f} points/s); the rest is the t9k client (it parses its own "
          "YAML with PyYAML's pure-Python loader)")
    print(f"t9k client artifact upload: {args.mb / t_art:,.1f} MB/s; runstore client: "
          f"{args.mb / r_art:,.1f} MB/s; ratio {r_art / t_art:.2f}")
    print(f"t9k em.load_run of the run (rendered from the tables): {t_load:.2f} s, "
          f"{points / t_load:,.0f} points/s")
    print(f"auto_upload pattern: upload {args.appends} of a growing metrics file "
          f"({args.appends * args.per_append:,} records) took {last * 1000:.0f} ms; the first "
          f"({args.per_append} records) {first * 1000:.0f} ms; ratio {last / first:.2f}")


def auto_upload_pattern(url: str, key: str, appends: int, per_append: int) -> tuple[float, float]:
    """(seconds of the first upload, seconds of the last) of a metrics file that grows by
    per_append records between uploads, sent whole each time as t9k's auto_upload does."""
    chunk = [{"value": {f"k{j}": 0.5 * j for j in range(5)},
              "sequence": {"epoch": 0, "step": 0,
                           "timestamp": "2024-03-04T05:06:07.000000+08:00"}}] * per_append
    text = yaml.dump(chunk, sort_keys=False, Dumper=yaml.CSafeDumper).encode()
    with Compat(url, key) as compat:
        compat.node("/alice", "auto", "Folder")
        compat.node("/alice/auto", "grow", "Run", "grow_240304_050607_abcdef")
        data, times = b"", []
        for _ in range(appends):
            data += text
            start = time.perf_counter()
            compat.put("/alice/auto/grow/metrics/train.yaml", data).raise_for_status()
            times.append(time.perf_counter() - start)
    return times[0], times[-1]


if __name__ == "__main__":
    main()
