"""Helpers shared by the framework callbacks (runstore.keras, runstore.lightning)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


def split_prefixed(metrics: Mapping[str, Any],
                   prefixes: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the metrics without any of the prefixes, the prefixed ones with the prefix stripped)."""
    plain: dict[str, Any] = {}
    prefixed: dict[str, Any] = {}
    for key, value in metrics.items():
        prefix = next((p for p in prefixes if key.startswith(p) and len(key) > len(p)), None)
        if prefix is None:
            plain[key] = value
        else:
            prefixed[key[len(prefix):]] = value
    return plain, prefixed


def strip_prefixes(metrics: Mapping[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    """metrics with a leading prefix removed from each key, unless two keys would then clash."""
    plain, prefixed = split_prefixed(metrics, prefixes)
    if set(plain) & set(prefixed) or len(plain) + len(prefixed) < len(metrics):
        return dict(metrics)
    return {**plain, **prefixed}


def json_safe(value: Any) -> Any:
    """value made storable as a hyperparameter: numbers as numbers, anything else as str.

    Framework hparams hold tensors, numpy scalars, paths and classes; Params refuses those.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        return json_safe(value.item())  # numpy scalars, 0-d arrays and tensors
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return str(value)
