"""Soak the whole chain: the model-based test of tests/reliability/test_model.py, for minutes.

    .venv/bin/python scripts/soak.py --minutes 30 [--steps 40] [--out /tmp/soak.json]

Runs examples of the state machine (each a fresh server, store, daemon and training process,
with SIGKILLs, lost answers, 5xx/429, name conflicts, then healing and the set check) until the
time is up, and prints the figures: examples, steps, faults injected by kind, runs/rows/blob
bytes checked, lost/duplicated/unexpected. Exit status 1 at the first failing example (its
files are kept and named). RUNSTORE_SOAK_MINUTES sets the default duration; SIGTERM stops it
after the batch in progress, with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float,
                        default=float(os.environ.get("RUNSTORE_SOAK_MINUTES", "30")))
    parser.add_argument("--steps", type=int, default=40, help="steps per example (max)")
    parser.add_argument("--examples-per-batch", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="runstore-soak-"))
    os.environ["RUNSTORE_CONFIG_DIR"] = str(work / "config")  # never the user's own config
    os.environ["RUNSTORE_HOME"] = str(work / "unused-home")
    os.environ.pop("RUNSTORE_SERVER", None)
    os.environ.pop("RUNSTORE_TOKEN", None)

    from hypothesis.stateful import run_state_machine_as_test

    from tests.reliability.chain import FIGURES
    from tests.reliability.test_model import ChainMachine, machine_settings

    ChainMachine.base_dir = work
    stop = []
    # SIGTERM: finish the example in progress (heal, set check), then report.
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    started = time.monotonic()
    deadline = started + args.minutes * 60
    batches = 0
    failure = None
    while time.monotonic() < deadline and not stop:
        try:
            run_state_machine_as_test(ChainMachine, settings=machine_settings(
                args.examples_per_batch, args.steps))
        except BaseException as exc:  # report what failed, with the figures so far
            failure = "".join(traceback.format_exception(exc))
            break
        batches += 1
        elapsed = time.monotonic() - started
        print(f"[{elapsed / 60:6.1f} min] examples {FIGURES['examples']}, steps "
              f"{FIGURES['invariant_checks']}, runs checked {FIGURES['checked_runs']}, rows "
              f"{FIGURES['checked_rows']}, lost {FIGURES['checked_lost']}, duplicated "
              f"{FIGURES['checked_duplicated']}, unexpected {FIGURES['checked_unexpected']}",
              flush=True)
    report = {"minutes": round((time.monotonic() - started) / 60, 1), "clean": failure is None,
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "figures": dict(sorted(FIGURES.items()))}
    if failure:
        report["failure"] = failure
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if failure is None else 1


if __name__ == "__main__":
    sys.exit(main())
