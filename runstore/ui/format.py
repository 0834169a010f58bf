"""How values look on the pages: numbers, durations, times, sizes, URLs of the runs table."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from runstore.inspect import duration_s, format_duration
from runstore.ui.data import RunsQuery, flatten

MISSING = object()
_TYPES = {"train": "train", "training": "train", "val": "val", "validate": "val",
          "validation": "val", "test": "test", "testing": "test", "eval": "test",
          "evaluate": "test", "evaluation": "test"}


def type_label(type_: str) -> str:
    """t9k's type synonyms as train / val / test (custom types as given)."""
    return _TYPES.get(type_.lower(), type_)


def metric(v: Any) -> str:
    """A metric value (NULL is how a NaN is stored)."""
    return "NaN" if v is None else value(v)


def value(v: Any) -> str:
    """An hparam or metadata value, short: 4 significant digits for floats."""
    if v is None:
        return "null"
    if v is MISSING:
        return "—"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return jsonish(v)
    return str(v)


def jsonish(v: Any) -> str:
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def duration(run: Any) -> str:
    return format_duration(duration_s(run.start_timestamp, run.end_timestamp))


def when(ts: str | None) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM' in UTC (the raw string if unparsable)."""
    if not ts:
        return "—"
    try:
        t = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M")


def size(n: int | None) -> str:
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}"


def flat_dict(mapping: dict[str, Any]) -> dict[str, Any]:
    return flatten(mapping) if isinstance(mapping, dict) else {}


def flat_items(mapping: dict[str, Any]) -> list[tuple[str, Any]]:
    return sorted(flat_dict(mapping).items())


class RunsUrl:
    """Links of the runs table that keep its state (filters, columns) and change one thing."""

    def __init__(self, q: RunsQuery) -> None:
        self.q = q

    def _params(self, **changes: Any) -> list[tuple[str, str]]:
        q = self.q
        state: dict[str, Any] = {"path": q.folder, "status": q.status, "label": q.label,
                                 "name": q.name, "sort": q.sort,
                                 "dir": "desc" if q.desc else "asc", "page": q.page,
                                 "size": q.page_size}
        state.update(changes)
        out = [(k, str(v)) for k, v in state.items() if v not in (None, "")]
        out.append(("cols", "1"))
        out += [("h", h) for h in q.hparams] + [("m", str(m)) for m in q.metrics]
        return out

    def with_(self, **changes: Any) -> str:
        return "/ui/folder?" + urlencode(self._params(**changes))

    def sort(self, column: str) -> str:
        """Sort by a column; again on the same column flips the direction."""
        if self.q.sort == column:
            return self.with_(sort=column, dir="asc" if self.q.desc else "desc", page=1)
        return self.with_(sort=column, dir="asc" if column in ("name",) else "desc", page=1)

    def arrow(self, column: str) -> str:
        if self.q.sort != column:
            return ""
        return "↓" if self.q.desc else "↑"
