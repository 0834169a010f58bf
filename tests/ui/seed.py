"""A local store with runs worth looking at, written through the SDK, for the web UI tests.

Known shapes, so the tests can assert what the pages show: series lengths, a NaN, a spike,
lineage both ways, and one run carrying hostile strings everywhere a run can carry one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from runstore.artifact import Artifact
from runstore.run import Run
from runstore.store import Store

LONG_STEPS = 5000          # train/loss of the baseline: more points than any chart is wide
SHORT_STEPS = 40           # val/accuracy: few enough to be sent as raw points
NAN_STEP = 1234
SPIKE_STEP = 2500
SPIKE_VALUE = 50.0
HOSTILE_SCRIPT = "<script>window.__pwned = 1</script>"
HOSTILE_IMG = '<img src=x onerror="window.__pwned=2">'
RTL = "\u202eevil\u202c \u200b\u200d\u2066zero-width\u2069"
HOSTILE_KEY = '"><script>window.__pwned=3</script>'
HOSTILE_METRIC = "<b>acc</b>'\""
FOLDER = "vision"


@dataclass
class Seeded:
    runs: dict[str, str] = field(default_factory=dict)        # name -> uuid
    artifacts: dict[str, str] = field(default_factory=dict)   # name -> uuid
    file_bytes: bytes = b""


def loss(step: int, scale: float = 1.0) -> float:
    if step == NAN_STEP:
        return math.nan
    if step == SPIKE_STEP:
        return SPIKE_VALUE
    return scale * 2.5 * math.exp(-step / 1500) + 0.05 * math.sin(step / 37)


def _run(store: Store, name: str, hparams: dict, labels: list[str], description: str = "",
         folder: str = FOLDER) -> Run:
    return Run({"name": name, "labels": labels, "description": description,
                "_target": {"folder": folder, "make_folder": True}},
               hparams=hparams, store=store)


def seed(home: Path, scratch: Path) -> Seeded:
    """Write the runs and artifacts into the store at ``home``."""
    store = Store(home)
    out = Seeded()
    scratch.mkdir(parents=True, exist_ok=True)
    data = scratch / "train.csv"
    data.write_text("x,y\n1,2\n3,4\n")
    dataset = Artifact({"name": "cifar10", "labels": ["dataset"],
                        "description": "CIFAR-10, 50k train images"}, store=store)
    dataset.add_file(str(data), "train.csv")
    weights = scratch / "weights.bin"
    out.file_bytes = bytes(range(256)) * 40
    weights.write_bytes(out.file_bytes)
    model = Artifact({"name": "resnet18-model", "labels": ["model"]}, store=store)
    model.add_file(str(weights), "model/weights.bin")
    out.artifacts = {"cifar10": dataset.uuid, "resnet18-model": model.uuid}

    adam, sgd = {"name": "adam", "beta1": 0.9}, {"name": "sgd", "beta1": 0.9}
    specs = [
        ("baseline", {"lr": 0.001, "batch_size": 128, "optimizer": adam},
         ["resnet", "baseline"], LONG_STEPS, 1.0, "Complete"),
        ("lr-sweep-1", {"lr": 0.003, "batch_size": 128, "optimizer": adam},
         ["resnet", "sweep"], 1500, 0.8, "Complete"),
        ("lr-sweep-2", {"lr": 0.01, "batch_size": 64, "optimizer": sgd},
         ["resnet", "sweep"], 1200, 1.3, "Complete"),
        ("diverged", {"lr": 0.3, "batch_size": 64, "optimizer": {"name": "sgd", "beta1": 0.8}},
         ["resnet", "sweep"], 300, 3.0, "Error"),
    ]
    for name, hp, labels, steps, scale, status in specs:
        run = _run(store, name, hp, labels, description=f"ResNet-18 on CIFAR-10 ({name})")
        for step in range(steps):
            # (the diverged run's loss overflows at its last step: a chart must show +inf)
            value = math.inf if status == "Error" and step == steps - 1 else loss(step, scale)
            run.log("train", {"loss": value}, step=step, epoch=step // 100)
        for i in range(SHORT_STEPS if steps >= 1000 else 3):
            step = (i + 1) * 100
            run.log("val", {"accuracy": 0.5 + 0.45 * (1 - math.exp(-i / (8 * scale)))},
                    step=step, epoch=i)
        run.mark_input(dataset)
        if name == "baseline":
            run.mark_output(model)
            Path(run.local, "stdout.log").write_text(
                "".join(f"epoch {e}: loss={loss(e * 100):.4f}\n" for e in range(50))
                + f"done {HOSTILE_SCRIPT}\n")
        run.flush()
        run._end_run(status)
        out.runs[name] = run.uuid

    hostile = _run(store, "hostile", {HOSTILE_KEY: HOSTILE_SCRIPT, "lr": 0.001,
                                      "note": "x" * 3000 + RTL},
                   [HOSTILE_SCRIPT, HOSTILE_IMG, RTL],
                   description=f"{HOSTILE_IMG} {HOSTILE_SCRIPT} \"quoted\" 'single' {RTL} "
                               + "long-" * 400)
    for step in range(10):
        hostile.log("val", {HOSTILE_METRIC: step / 10}, step=step)
    Path(hostile.local, "stdout.log").write_text(f"{HOSTILE_SCRIPT}\n{HOSTILE_IMG}\n{RTL}\n")
    hostile.flush()
    hostile._end_run("Complete")
    out.runs["hostile"] = hostile.uuid
    store.close()
    return out
