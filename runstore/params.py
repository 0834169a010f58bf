"""Params: the dict-like hyperparameters of a run; every change is persisted at once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

from runstore.errors import InvalidTypeError
from runstore.rules import check_json_value


def check_json(key: str, value: Any) -> None:
    """Raise TypeError naming key if value is not JSON-serialisable (NaN/inf are refused)."""
    check_json_value(value, f"hyperparameter {key!r}")


class Params(MutableMapping):
    """Hyperparameters of a Run. Values must be JSON-serialisable.

    A change through this object (``run.hparams['lr'] = 0.1``, ``update``, ``del``) is written
    to the store immediately; nested values mutated in place are written at ``finish()``.
    """

    def __init__(self, data: Mapping[str, Any] | None = None,
                 persist: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._data: dict[str, Any] = {}
        self._persist = persist
        if data:
            for key, value in data.items():
                check_json(str(key), value)
            self._data.update({str(k): v for k, v in data.items()})

    def _save(self) -> None:
        if self._persist is not None:
            self._persist(self._data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise InvalidTypeError(f"hyperparameter names must be str, not {key!r}")
        check_json(key, value)
        self._data[key] = value
        self._save()

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._save()

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Params({self._data!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Params):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other)
        return NotImplemented

    def update(self, new_params: Mapping[str, Any] | None = None,  # type: ignore[override]
               override: bool = True, **kwargs: Any) -> None:
        """Add new_params; with override=False only keys not present yet are added."""
        merged = dict(new_params or {}, **kwargs)
        for key, value in merged.items():
            if not isinstance(key, str):
                raise InvalidTypeError(f"hyperparameter names must be str, not {key!r}")
            check_json(key, value)
        changed = False
        for key, value in merged.items():
            if override or key not in self._data:
                self._data[key] = value
                changed = True
        if changed:
            self._save()

    def as_dict(self) -> dict[str, Any]:
        """A deep copy as a plain dict."""
        return json.loads(json.dumps(self._data))
