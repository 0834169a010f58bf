"""A t9k.em training script, unchanged but for its import line.

    from t9k import em        # before
    import runstore as em     # after

Trains a tiny logistic-regression model with numpy so it runs anywhere in a second.
Usage: python examples/train_t9k.py [--lr 0.1] [--epochs 5] [--config run.yaml]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np

import runstore as em


def make_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(n, 4))
    y = (x @ np.array([1.5, -2.0, 0.5, 1.0]) + rng.normal(scale=0.5, size=n) > 0).astype(float)
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--config", default=None, help="a t9k create_run YAML file")
    args = parser.parse_args()

    run = em.create_run(config_path=args.config, name="logreg",
                        hparams={"lr": args.lr, "epochs": args.epochs, "batch_size": 32},
                        labels=["demo", "numpy"], description="logistic regression demo")
    rng = np.random.default_rng(0)
    x_train, y_train = make_data(rng, 2000)
    x_val, y_val = make_data(rng, 500)

    workdir = tempfile.mkdtemp()
    data_path = os.path.join(workdir, "train.npz")
    np.savez(data_path, x=x_train, y=y_train)
    dataset = em.create_artifact(name="toy-data", labels=["train"])
    dataset.add_file(data_path, obj_path="data/")
    run.mark_input(dataset)

    w = np.zeros(4)
    step = 0
    for epoch in range(1, args.epochs + 1):
        for start in range(0, len(x_train), run.hparams["batch_size"]):
            xb = x_train[start:start + 32]
            yb = y_train[start:start + 32]
            p = 1 / (1 + np.exp(-xb @ w))
            w -= args.lr * xb.T @ (p - yb) / len(xb)
            step += 1
            if step % 10 == 0:
                loss = -np.mean(yb * np.log(p + 1e-9) + (1 - yb) * np.log(1 - p + 1e-9))
                run.log("train", {"loss": loss, "accuracy": np.mean((p > 0.5) == yb)}, step=step,
                        epoch=epoch)
        p_val = 1 / (1 + np.exp(-x_val @ w))
        run.log("val", {"accuracy": np.mean((p_val > 0.5) == y_val)}, step=step, epoch=epoch)
        print(f"epoch {epoch}: val accuracy {np.mean((p_val > 0.5) == y_val):.3f}")
    run.log("test", {"accuracy": np.mean((p_val > 0.5) == y_val)}, step=step)

    model_path = os.path.join(workdir, "weights.npy")
    np.save(model_path, w)
    model = em.create_artifact(name="logreg-model")
    model.add_file(model_path)
    run.mark_output(model)
    run.finish()
    print(f"run {run.alternative_name}: {run.status}")


if __name__ == "__main__":
    main()
