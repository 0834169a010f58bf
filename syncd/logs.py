"""Logging to stderr, one line per event, in a form journald understands.

Under systemd (JOURNAL_STREAM set) each line starts with an sd-daemon priority prefix such as
``<6>`` and carries no timestamp (the journal adds its own); elsewhere lines carry a timestamp
and the level name.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import IO

LOGGER_NAME = "syncd"

# sd-daemon(3) priorities.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
             logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """``<prio>message`` on one line (newlines of tracebacks folded)."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return f"<{prio}>" + text.replace("\n", " | ")


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s syncd: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def under_journald(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM"))


def setup(level: str | int = "INFO", stream: IO[str] | None = None,
          environ: Mapping[str, str] | None = None) -> logging.Logger:
    """Configure the 'syncd' logger to write single lines to stderr."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JournalFormatter() if under_journald(environ) else PlainFormatter())
    logger.addHandler(handler)
    logger.setLevel(level if isinstance(level, int) else level.upper())
    logger.propagate = False
    return logger
