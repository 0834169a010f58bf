"""Alternative names (t9k's ``<name>_<yymmdd>_<HHMMSS>_<6 chars>``).

The rules for names and object paths live in runstore.rules (one set for the SDK, the wire
and the server); they are re-exported here for the callers that import them from here.
"""

from __future__ import annotations

import datetime as _dt
import secrets
import string

from runstore.rules import NAME_PATTERN, check_name, object_path

__all__ = ["NAME_PATTERN", "alternative_name", "check_name", "object_path"]

_ALPHABET = string.ascii_lowercase + string.digits


def alternative_name(name: str, now: _dt.datetime | None = None) -> str:
    """<name>_<yymmdd>_<HHMMSS>_<6 chars of [a-z0-9]> in local time."""
    now = now or _dt.datetime.now()
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    return f"{name}_{now:%y%m%d_%H%M%S}_{suffix}"
