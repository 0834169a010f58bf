"""t9k 0.6 ``.em`` directories written by hand, byte for byte the way t9k writes them
(PyYAML ``dump(..., sort_keys=False)``, metrics appended one record at a time), so tests can
make any run, and break it in any way, without a t9k process."""

from __future__ import annotations

import datetime as dt
import math
import secrets
import string
from pathlib import Path
from typing import Any

import yaml


def _dump(path: Path, data: Any, append: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w") as fh:
        fh.write(yaml.dump(data, sort_keys=False))


def stamp(seconds: float = 0.0) -> str:
    base = dt.datetime(2024, 3, 4, 5, 6, 7, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    return (base + dt.timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def alt_name(name: str) -> str:
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(6))
    return f"{name}_240304_050607_{suffix}"


def metric_value(i: int) -> float:
    return math.nan if i % 7 == 3 else (math.inf if i % 11 == 5 else i * 0.25)


def write_artifact(em: Path, name: str, files: dict[str, bytes] | None = None,
                   refs: dict[str, str] | None = None) -> str:
    alt = alt_name(name)
    d = em / "artifacts" / alt
    _dump(d / "metadata.yaml", {"kind": "Artifact", "name": name, "labels": ["art"],
                                "description": f"artifact {name}",
                                "createdTimestamp": stamp(), "alternativeName": alt,
                                "remote": []})
    for key, data in (files or {}).items():
        (d / key).parent.mkdir(parents=True, exist_ok=True)
        (d / key).write_bytes(data)
    if refs:
        _dump(d / "references.yaml", refs)
    return alt


def write_run(em: Path, name: str, *, rows: int = 4, status: str = "Complete",
              types: tuple[str, ...] = ("train",), hparams: dict | None = None,
              inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = (),
              stdout: str = "epoch 1 done\n", remote: list | None = None) -> str:
    """A run directory with `rows` records per type (two keys each); returns its alt name."""
    alt = alt_name(name)
    d = em / "runs" / alt
    assoc = {"input": [{"kind": "Artifact", "name": a, "localDir": f".em/artifacts/{a}"}
                       for a in inputs],
             "output": [{"kind": "Artifact", "name": a, "localDir": f".em/artifacts/{a}"}
                        for a in outputs]}
    _dump(d / "metadata.yaml", {
        "kind": "Run", "name": name, "labels": ["em"], "description": f"run {name}",
        "startTimestamp": stamp(), "endTimestamp": None if status == "Running" else stamp(999),
        "status": status, "alternativeName": alt, "associations": assoc,
        "remote": remote or []})
    _dump(d / "hyperparameters.yaml", hparams if hparams is not None else {"lr": 0.1, "n": 3})
    _dump(d / "platform.yaml", {"hostname": "t9k-host", "os": "Linux", "python": "3.8.10",
                                "pypkgs": {"torch": "2.0.0"}, "framework": "PyTorch"})
    _dump(d / "git.yaml", {"repo_path": None, "remote_url": None, "branch": None,
                           "commit": None, "is_dirty": None, "entrypoint": None})
    _dump(d / "index.yaml", {"hyperparameters": "hyperparameters.yaml",
                             "metrics": {t: f"metrics/{t}.yaml" for t in types},
                             "platform": "platform.yaml", "git": "git.yaml",
                             "log": "stdout.log"})
    (d / "metrics").mkdir(parents=True, exist_ok=True)
    for i in range(rows):
        for t_index, t in enumerate(types):
            _dump(d / "metrics" / f"{t}.yaml", [{
                "value": {"loss": metric_value(i), "acc": i / 100},
                "sequence": {"epoch": i // 10, "step": i,
                             "timestamp": stamp(i + t_index / 10)}}], append=True)
    (d / "stdout.log").write_text(stdout)
    return alt


def expected_rows(rows: int, types: tuple[str, ...] = ("train",)) -> list[tuple]:
    """The metric rows (type, key, step, epoch, value|None) of write_run, in logging order."""
    out = []
    for i in range(rows):
        for t in types:
            v = metric_value(i)
            out += [(t, "loss", i, i // 10, None if math.isnan(v) else v),
                    (t, "acc", i, i // 10, i / 100)]
    return out
