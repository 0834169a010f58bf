"""A Lightning callback that logs to a Run: EMCallback (t9k.em's, which is broken in 0.6.0b0).

Works with ``lightning`` (``lightning.pytorch``) or ``pytorch_lightning``. Importing this module
without either succeeds; instantiating the callback then raises ImportError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runstore._callbacks import json_safe, strip_prefixes

if TYPE_CHECKING:
    from runstore.run import Run

_import_error: ImportError | None = None
try:
    import lightning.pytorch as _pl
except ImportError:
    try:
        import pytorch_lightning as _pl  # type: ignore[no-redef]
    except ImportError as exc:  # optional: the error is raised when the callback is made
        _pl = None  # type: ignore[assignment]
        _import_error = exc

_Base: Any = _pl.Callback if _pl is not None else object

__all__ = ["EMCallback"]


def lightning_hparams(trainer: Any, pl_module: Any) -> dict[str, Any]:
    """The optimizers (class name, learning rate) and the module's own ``hparams``."""
    hparams: dict[str, Any] = {}
    optimizers = list(getattr(trainer, "optimizers", None) or [])
    names = [type(opt).__name__ for opt in optimizers]
    rates = [opt.param_groups[0].get("lr") for opt in optimizers
             if getattr(opt, "param_groups", None)]
    if len(names) == 1:
        hparams["optimizer"] = names[0]
    elif names:
        hparams["optimizer"] = names
    if len(rates) == 1:
        hparams["learning_rate"] = rates[0]
    elif rates:
        hparams["learning_rate"] = rates
    module_hparams = getattr(pl_module, "hparams", None)
    if module_hparams:
        hparams.update({str(k): v for k, v in dict(module_hparams).items()})
    return json_safe(hparams)


def _changed(now: dict[str, Any], *befores: dict[str, Any]) -> dict[str, Any]:
    """The entries of now whose value object is none of the ones held in befores.

    Lightning puts a new tensor into ``callback_metrics`` each time a metric is computed, so
    identity tells what a stage logged without reaching into the trainer's internals.
    """
    return {k: v for k, v in now.items() if all(b.get(k) is not v for b in befores)}


def _drop_forked(metrics: dict[str, Any]) -> dict[str, Any]:
    """Drop Lightning's ``x_step``/``x_epoch`` copies of a metric ``x`` logged on both."""
    out = {}
    for key, value in metrics.items():
        base, _, suffix = key.rpartition("_")
        if suffix in ("step", "epoch") and base in metrics:
            continue
        out[key] = value
    return out


class EMCallback(_Base):  # type: ignore[misc,valid-type]
    """Logs `train`, `val` and `test` metrics of a Lightning Trainer, and hparams, to a run.

    - ``train``: at each training epoch end, what the epoch put into ``trainer.callback_metrics``
      (including what ``LightningModule.on_train_epoch_end`` logs), ``train_``/``train/``
      stripped from the names;
    - ``val``: at the end of each validation run (not the sanity check), ``val_``/``val/``
      stripped; ``test``: at the end of ``trainer.test()``, ``test_``/``test/`` stripped.

    ``step`` is ``trainer.global_step``; ``epoch`` is ``current_epoch + 1`` for train and val,
    and the number of epochs trained for test. At train start the optimizer class name,
    learning rate and ``pl_module.hparams`` are recorded, without overriding values the run
    already has. A name logged in both training and validation counts as val, as it does in
    Lightning's own ``callback_metrics``.
    """

    def __init__(self, run: Run) -> None:
        if _import_error is not None:
            raise ImportError(
                f"runstore.lightning.EMCallback needs Lightning ({_import_error}); "
                "install it with: pip install 'runstore[ml]'  (or: pip install lightning torch)"
            ) from _import_error
        super().__init__()
        self.run = run
        self._epoch_start: dict[str, Any] = {}
        self._eval_start: dict[str, Any] = {}
        self._val_logged: dict[str, Any] = {}
        self._pending_train: tuple[int, int] | None = None

    # -- hparams ---------------------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self.run.hparams.update(lightning_hparams(trainer, pl_module), override=False)

    # -- train -----------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        self._flush_train(trainer)
        self._epoch_start = dict(trainer.callback_metrics)
        self._val_logged = {}

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        # The module's own on_train_epoch_end runs after the callbacks' and may log more:
        # the record is written at the next hook, once Lightning has collected those too.
        self._pending_train = (trainer.global_step, trainer.current_epoch + 1)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._flush_train(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._flush_train(trainer)

    def _flush_train(self, trainer: Any) -> None:
        if self._pending_train is None:
            return
        step, epoch = self._pending_train
        self._pending_train = None
        metrics = _changed(dict(trainer.callback_metrics), self._epoch_start, self._val_logged)
        self._log("train", _drop_forked(metrics), ("train_", "train/"), step, epoch)

    # -- validation and test ---------------------------------------------------------------
    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._eval_start = dict(trainer.callback_metrics)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        metrics = _changed(dict(trainer.callback_metrics), self._eval_start)
        self._val_logged.update(metrics)
        self._log("val", _drop_forked(metrics), ("val_", "val/"), trainer.global_step,
                  trainer.current_epoch + 1)

    def on_test_start(self, trainer: Any, pl_module: Any) -> None:
        self._eval_start = dict(trainer.callback_metrics)

    def on_test_end(self, trainer: Any, pl_module: Any) -> None:
        metrics = _changed(dict(trainer.callback_metrics), self._eval_start)
        self._log("test", _drop_forked(metrics), ("test_", "test/"), trainer.global_step,
                  trainer.current_epoch)

    def _log(self, type_: str, metrics: dict[str, Any], prefixes: tuple[str, ...], step: int,
             epoch: int) -> None:
        if metrics:
            self.run.log(type_, strip_prefixes(metrics, prefixes), step=step, epoch=epoch)
