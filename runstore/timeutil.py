"""Timestamps as t9k writes them: local ISO 8601 with offset and microseconds."""

from __future__ import annotations

import datetime as _dt
import time


def iso_from_unix(ts: float) -> str:
    """Local ISO 8601 with offset and microseconds, e.g. 2023-12-22T14:19:32.123456+08:00."""
    return _dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="microseconds")


def now_iso() -> str:
    """The current local time in t9k's timestamp format."""
    return iso_from_unix(time.time())


def unix_from_iso(text: str) -> float:
    """Inverse of iso_from_unix (accepts any ISO 8601 string with an offset)."""
    return _dt.datetime.fromisoformat(text).timestamp()
