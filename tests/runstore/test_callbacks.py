"""The Keras and Lightning callbacks, driven by real model.fit/evaluate and Trainer runs.

The framework tests need the `ml` extra (torch, keras, lightning); without it they are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import runstore as em
from tests.runstore.helpers import run_script

os.environ["KERAS_BACKEND"] = "torch"  # read once, when keras is first imported


def records(run: em.Run, type_: str) -> list[tuple[dict[str, float], int, int | None]]:
    """(value, step, epoch) of each record of a metric type, in logging order."""
    return [(r["value"], r["sequence"]["step"], r["sequence"]["epoch"])
            for r in run.metrics.get(type_, [])]


# -- without the frameworks ------------------------------------------------------------------
def test_import_runstore_does_not_import_frameworks_and_submodules_are_lazy(tmp_path: Path):
    proc = run_script("""
        import sys
        import runstore as em
        heavy = sorted(m for m in ("keras", "torch", "lightning", "pytorch_lightning")
                       if sys.modules.get(m) is not None)
        print("heavy:", heavy)
        assert "runstore.keras" not in sys.modules
        for name in ("keras", "lightning", "pytorch_lightning"):
            sys.modules[name] = None  # attribute access alone is tested: skip the slow imports
        module = em.keras
        assert module is sys.modules["runstore.keras"] and module.EMFitCallback
        assert em.lightning.EMCallback is sys.modules["runstore.lightning"].EMCallback
        try:
            em.nonexistent
        except AttributeError as exc:
            print("error:", exc)
    """, tmp_path / "home")
    assert "heavy: []" in proc.stdout
    assert "error: module 'runstore' has no attribute 'nonexistent'" in proc.stdout


@pytest.mark.parametrize(("module", "cls", "hidden", "package"), [
    ("keras", "EMFitCallback", ["keras"], "keras"),
    ("keras", "EMEvalCallback", ["keras"], "keras"),
    ("lightning", "EMCallback", ["lightning", "lightning.pytorch", "pytorch_lightning"],
     "lightning"),
])
def test_missing_framework_fails_only_when_the_callback_is_made(
        tmp_path: Path, module: str, cls: str, hidden: list[str], package: str):
    proc = run_script(f"""
        import sys
        for name in {hidden!r}:
            sys.modules[name] = None  # as if not installed: importing it raises ImportError
        from runstore.{module} import {cls}
        import runstore as em
        run = em.create_run(name="no-framework")
        try:
            {cls}(run)
        except ImportError as exc:
            print("ImportError:", exc)
        run.finish()
    """, tmp_path / "home")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ImportError:")]
    assert len(lines) == 1, proc.stdout
    assert f"runstore.{module}.{cls} needs" in lines[0]
    assert "pip install 'runstore[ml]'" in lines[0] and f"pip install {package} torch" in lines[0]


# -- Keras 3 on torch --------------------------------------------------------------------------
@pytest.fixture
def keras() -> Any:
    pytest.importorskip("torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras was imported with the {keras.backend.backend()} backend")
    keras.utils.set_random_seed(0)
    return keras


def tiny_keras_model(keras: Any) -> Any:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01), loss="mse",
                  metrics=["mae"])
    return model


def xy(n: int, seed: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 4)).astype("float32"),
            rng.normal(size=(n, 1)).astype("float32"))


def test_keras_fit_logs_train_and_val_per_epoch_and_hparams(keras: Any):
    from runstore.keras import EMFitCallback

    run = em.create_run(name="keras-fit", hparams={"batch_size": 8, "loss": "set-by-user"})
    x, y = xy(32, seed=1)
    history = tiny_keras_model(keras).fit(
        x, y, batch_size=8, epochs=2, validation_data=xy(8, seed=2), verbose=0,
        callbacks=[EMFitCallback(run)])

    h = history.history
    assert records(run, "train") == [
        ({"loss": h["loss"][0], "mae": h["mae"][0]}, 4, 1),
        ({"loss": h["loss"][1], "mae": h["mae"][1]}, 8, 2),
    ]
    assert records(run, "val") == [
        ({"loss": h["val_loss"][0], "mae": h["val_mae"][0]}, 4, 1),
        ({"loss": h["val_loss"][1], "mae": h["val_mae"][1]}, 8, 2),
    ]
    assert set(run.metrics) == {"train", "val"}
    # the user's own value of a key wins over the one the callback derives
    assert dict(run.hparams) == {"batch_size": 8, "loss": "set-by-user", "optimizer": "SGD",
                                 "learning_rate": 0.01}
    run.finish()
    assert em.load_run(run.uuid).hparams["optimizer"] == "SGD"  # persisted in the store


def test_keras_fit_without_validation_logs_train_only(keras: Any):
    from runstore.keras import EMFitCallback

    run = em.create_run(name="keras-noval")
    x, y = xy(24, seed=3)
    tiny_keras_model(keras).fit(x, y, batch_size=8, epochs=3, verbose=0,
                                callbacks=[EMFitCallback(run)])
    assert [(step, epoch) for _, step, epoch in records(run, "train")] == [(3, 1), (6, 2), (9, 3)]
    assert "val" not in run.metrics
    assert dict(run.hparams) == {"optimizer": "SGD", "learning_rate": 0.01, "loss": "mse"}
    run.finish()


def test_keras_evaluate_logs_test_at_the_trained_step(keras: Any):
    from runstore.keras import EMEvalCallback, EMFitCallback

    run = em.create_run(name="keras-eval")
    model = tiny_keras_model(keras)
    model.fit(*xy(16, seed=4), batch_size=8, epochs=1, verbose=0, callbacks=[EMFitCallback(run)])
    loss, mae = model.evaluate(*xy(16, seed=5), batch_size=8, verbose=0,
                               callbacks=[EMEvalCallback(run)])
    assert records(run, "test") == [({"loss": loss, "mae": mae}, 2, None)]
    run.finish()


# -- Lightning -------------------------------------------------------------------------------
@pytest.fixture
def pl() -> Any:
    pytest.importorskip("torch")
    return pytest.importorskip("lightning.pytorch")


def tiny_module(pl: Any) -> Any:
    import torch
    from torch.nn import functional as F  # noqa: N812

    class Tiny(pl.LightningModule):
        def __init__(self, lr: float = 0.05, hidden: int = 3) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, hidden), torch.nn.ReLU(),
                                           torch.nn.Linear(hidden, 1))

        def _loss(self, batch: Any) -> Any:
            x, y = batch
            return F.mse_loss(self.net(x), y)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = self._loss(batch)
            self.log("train_loss", loss, on_step=True, on_epoch=True)  # forked: _step/_epoch
            self.log("batch_idx", float(batch_idx))  # on_step only: its last value
            return loss

        def on_train_epoch_end(self) -> None:
            # logged by the module after the callbacks' hook has run
            self.log("epochs_done", float(self.current_epoch + 1))

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self.log("val_loss", self._loss(batch))
            self.log("val/mae", torch.mean(torch.abs(self.net(batch[0]) - batch[1])))

        def test_step(self, batch: Any, batch_idx: int) -> None:
            self.log("test_loss", self._loss(batch))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    return Tiny()


def loader(n: int, seed: int) -> Any:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = xy(n, seed)
    return DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=8)


def trainer(pl: Any, run: em.Run) -> Any:
    from runstore.lightning import EMCallback

    return pl.Trainer(max_epochs=2, accelerator="cpu", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, log_every_n_steps=1,
                      callbacks=[EMCallback(run)])


def as_floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


# Known-harmless: tiny in-process data sets need no loader workers; Lightning 2.6 still builds
# torch's LeafSpec, which torch 2.13 deprecated.
ignore_few_workers = pytest.mark.filterwarnings(
    "ignore:The '(train|val|test)_dataloader' does not have many workers")
ignore_leafspec = pytest.mark.filterwarnings(
    r"ignore:`isinstance\(treespec, LeafSpec\)` is deprecated:FutureWarning")


@ignore_few_workers
@ignore_leafspec
def test_lightning_logs_train_val_test_and_hparams(pl: Any):
    pl.seed_everything(0, verbose=False)
    run = em.create_run(name="lightning", hparams={"lr": 1.0})
    module = tiny_module(pl)
    t = trainer(pl, run)
    epoch_ends: list[dict[str, float]] = []

    class Spy(pl.Callback):  # what Lightning itself holds once each epoch is over
        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            if trainer.current_epoch:
                epoch_ends.append(as_floats(trainer.callback_metrics))

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            epoch_ends.append(as_floats(trainer.callback_metrics))

    t.callbacks.append(Spy())
    t.fit(module, loader(32, seed=1), loader(16, seed=2))
    t.test(module, loader(16, seed=3), verbose=False)

    # sanity-check validation is not logged; val ends inside each epoch, before train's record
    assert [(sorted(v), step, epoch) for v, step, epoch in records(run, "val")] == [
        (["loss", "mae"], 4, 1), (["loss", "mae"], 8, 2)]
    assert [(sorted(v), step, epoch) for v, step, epoch in records(run, "train")] == [
        (["batch_idx", "epochs_done", "loss"], 4, 1), (["batch_idx", "epochs_done", "loss"], 8, 2)]
    for i, end in enumerate(epoch_ends):
        train, val = records(run, "train")[i][0], records(run, "val")[i][0]
        assert train == pytest.approx({"loss": end["train_loss"], "batch_idx": 3.0,
                                       "epochs_done": i + 1.0})
        assert train["loss"] == pytest.approx(end["train_loss_epoch"])
        assert val == pytest.approx({"loss": end["val_loss"], "mae": end["val/mae"]})
    assert len(epoch_ends) == 2
    assert records(run, "test") == [
        ({"loss": pytest.approx(float(t.callback_metrics["test_loss"]))}, 8, 2)]
    assert set(run.metrics) == {"train", "val", "test"}
    # "lr" was set on the run, so the module's own lr=0.05 does not override it
    assert dict(run.hparams) == {"lr": 1.0, "optimizer": "SGD", "learning_rate": 0.05,
                                 "hidden": 3}
    run.finish()


@ignore_few_workers
@ignore_leafspec
def test_lightning_validate_alone_logs_val_at_step_zero(pl: Any):
    run = em.create_run(name="lightning-validate")
    t = trainer(pl, run)
    t.validate(tiny_module(pl), loader(16, seed=2), verbose=False)
    assert [(sorted(v), step, epoch) for v, step, epoch in records(run, "val")] == [
        (["loss", "mae"], 0, 1)]
    assert set(run.metrics) == {"val"}
    assert dict(run.hparams) == {}  # no training: no optimizer to record
    run.finish()
