"""A training process for the model-based test: the real SDK, driven one command per line.

Run as ``python tests/reliability/agent.py`` with RUNSTORE_HOME set. Each stdin line is a JSON
command; each answer is one stdout line starting with ``@@ `` (the SDK tees stdout into the
run's stdout.log, so other lines may appear). The test SIGKILLs this process at random
moments, as a scheduler kills a training job.

    {"op": "create", "name": "r3", "folder": "proj", "make_folder": true, "strategy": "skip"}
    {"op": "reopen", "uuid": "...", "folder": ..., "make_folder": ..., "strategy": ...}
    {"op": "log", "uuid": "...", "n": 40}        n log() calls, two keys each (NaN/inf too)
    {"op": "artifact", "uuid": "...", "size": 70000, "seed": 5}   an output artifact
    {"op": "use", "uuid": "...", "artifact_uuid": "..."}   an input artifact
    {"op": "flush", "uuid": "..."}   {"op": "finish", "uuid": "..."}
    {"op": "edit", "uuid": "...", "text": "..."}   description/labels/hparams of a run this
                                                   process finished (after finish())
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import tempfile


def main() -> None:
    import runstore as em

    out = sys.__stdout__
    runs: dict[str, em.Run] = {}
    ended: dict[str, em.Run] = {}
    steps: dict[str, int] = {}
    workdir = tempfile.mkdtemp(prefix="agent-")
    out.write("@@ " + json.dumps({"ready": os.getpid()}) + "\n")
    out.flush()
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        answer: dict = {"ok": True}
        if op == "create":
            run = em.create_run(name=cmd["name"], folder=cmd["folder"],
                                make_folder=cmd["make_folder"],
                                conflict_strategy=cmd["strategy"],
                                auto_upload=cmd.get("auto_upload", False),
                                hparams={"lr": 10 ** -random.randint(1, 5)})
            runs[run.uuid] = run
            steps[run.uuid] = 0
            answer = {"uuid": run.uuid, "alternative_name": run.alternative_name}
        elif op == "reopen":  # a requeued job goes on with its run (t9k's load_run)
            run = em.load_run(cmd["uuid"], folder=cmd["folder"],
                              make_folder=cmd["make_folder"],
                              conflict_strategy=cmd["strategy"],
                              auto_upload=cmd.get("auto_upload", False))
            runs[run.uuid] = run
            ended.pop(run.uuid, None)
            steps.setdefault(run.uuid, 0)
            answer = {"status": run.status}
        elif op == "log":
            run = runs[cmd["uuid"]]
            # Into the stdout.log of every live run of this process (the SDK's tees): the
            # server must end up with each run's file byte for byte.
            print(f"{run.alternative_name}: {cmd['n']} rows from step {steps[run.uuid]} \u00e9")
            for _ in range(cmd["n"]):
                i = steps[run.uuid]
                value = [math.nan, math.inf, -math.inf][i % 3] if i % 37 == 5 else 1 / (i + 1)
                run.log("train" if i % 5 else "val", {"loss": value, "acc": i * 0.001},
                        step=i, epoch=i // 50)
                steps[run.uuid] = i + 1
        elif op == "artifact":
            run = runs[cmd["uuid"]]
            rng = random.Random(cmd["seed"])
            path = os.path.join(workdir, f"weights-{cmd['seed']}.bin")
            with open(path, "wb") as fh:
                fh.write(rng.randbytes(cmd["size"]))
            art = em.create_artifact(cmd.get("name") or f"model{cmd['seed']}")
            art.add_file(path, "weights.bin")
            run.mark_output(art)
            answer = {"artifact_uuid": art.uuid}
        elif op == "use":  # an artifact made earlier (maybe by a killed process) as input
            runs[cmd["uuid"]].mark_input(em.load_artifact(cmd["artifact_uuid"]))
        elif op == "flush":
            runs[cmd["uuid"]].flush()
        elif op == "finish":
            run = ended[cmd["uuid"]] = runs.pop(cmd["uuid"])
            run.finish()
        elif op == "edit":  # a user annotating a finished run (maybe after it was synced)
            run = ended[cmd["uuid"]]
            run.description = cmd["text"]
            run.labels = [*run.labels, cmd["text"]]
            run.hparams["note"] = cmd["text"]
        else:
            answer = {"error": f"unknown op {op!r}"}
        out.write("@@ " + json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
