"""Keras callbacks that log to a Run (t9k.em.keras): EMFitCallback and EMEvalCallback.

``from runstore.keras import EMFitCallback`` works without Keras installed; instantiating a
callback then raises ImportError naming what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runstore._callbacks import json_safe, split_prefixed

if TYPE_CHECKING:
    from runstore.run import Run

try:
    import keras as _keras

    _Base: Any = _keras.callbacks.Callback
    _import_error: ImportError | None = None
except ImportError as exc:  # keras is optional: the error is raised when a callback is made
    _Base = object
    _import_error = exc

__all__ = ["EMEvalCallback", "EMFitCallback"]


def _require_keras(what: str) -> None:
    if _import_error is not None:
        raise ImportError(
            f"runstore.keras.{what} needs Keras 3 ({_import_error}); "
            "install it with: pip install 'runstore[ml]'  (or: pip install keras torch)"
        ) from _import_error


def _iterations(model: Any) -> int:
    """The optimizer's iteration count (the number of batches trained so far), else 0."""
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    if iterations is None:
        return 0
    return int(_to_python(iterations))


def _to_python(value: Any) -> Any:
    """A Keras variable or backend tensor as a plain Python number.

    Goes through the backend tensor's ``item()``: ``Variable.numpy()`` on the torch backend
    warns under NumPy 2 (torch's ``__array__`` lacks the ``copy`` keyword).
    """
    inner = getattr(value, "value", None)  # a Keras 3 Variable's backend tensor
    if inner is not None and not callable(inner):
        value = inner
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "numpy"):  # TensorFlow eager tensors
        return value.numpy().item()
    return value


def _as_float(value: Any) -> float:
    """A scalar variable as float; float32 by its shortest repr (0.01, not 0.009999999776)."""
    number = float(_to_python(value))
    if str(getattr(value, "dtype", "")).rpartition(".")[2] in ("float32", "float16", "bfloat16"):
        import numpy as np

        return float(str(np.float32(number)))
    return number


def _loss_name(loss: Any) -> Any:
    if loss is None or isinstance(loss, str):
        return loss
    if isinstance(loss, (list, tuple)):
        return [_loss_name(x) for x in loss]
    if isinstance(loss, dict):
        return {str(k): _loss_name(v) for k, v in loss.items()}
    return getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__


def keras_hparams(model: Any) -> dict[str, Any]:
    """The optimizer (class name, learning rate) and loss a compiled model trains with."""
    hparams: dict[str, Any] = {}
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        hparams["optimizer"] = type(optimizer).__name__
        try:
            hparams["learning_rate"] = _as_float(optimizer.learning_rate)
        except (AttributeError, TypeError, ValueError):
            pass  # a schedule object or an optimizer without one: nothing scalar to record
    loss = getattr(model, "loss", None)
    if loss is not None:
        hparams["loss"] = _loss_name(loss)
    return json_safe(hparams)


class EMFitCallback(_Base):  # type: ignore[misc,valid-type]
    """Logs `train` and `val` metrics at each epoch end, and the optimizer and loss as hparams.

    ``step`` is the optimizer's iteration count and ``epoch`` is 1-based; validation keys lose
    their ``val_`` prefix. Hyperparameters already set on the run are not overridden.
    """

    def __init__(self, run: Run, *args: Any, **kwargs: Any) -> None:
        _require_keras(type(self).__name__)
        super().__init__(*args, **kwargs)
        self.run = run

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.run.hparams.update(keras_hparams(self.model), override=False)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        train, val = split_prefixed(logs or {}, ("val_",))
        step = _iterations(self.model)
        if train:
            self.run.log("train", train, step=step, epoch=epoch + 1)
        if val:
            self.run.log("val", val, step=step, epoch=epoch + 1)


class EMEvalCallback(_Base):  # type: ignore[misc,valid-type]
    """Logs `test` metrics at the end of ``model.evaluate()``.

    ``step`` is the optimizer's iteration count (0 for a model never trained).
    """

    def __init__(self, run: Run, *args: Any, **kwargs: Any) -> None:
        _require_keras(type(self).__name__)
        super().__init__(*args, **kwargs)
        self.run = run

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        metrics = {k: _to_python(v) for k, v in (logs or {}).items()}
        if metrics:
            self.run.log("test", metrics, step=_iterations(self.model))
