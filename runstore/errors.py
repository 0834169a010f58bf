"""Exceptions of the runstore library: one base class, one subclass per condition.

Messages are one line, name the bad value and say what to do.
"""

from __future__ import annotations


class RunstoreError(Exception):
    """Base class of every error runstore raises on purpose."""


class InvalidInputError(RunstoreError, ValueError):
    """A value refused by runstore.rules (the same rules on the SDK, wire and server)."""


class InvalidValueError(InvalidInputError):
    """A value of the right type that breaks a rule (too long, a bad character, ...)."""


class InvalidTypeError(InvalidInputError, TypeError):
    """A value of the wrong type (t9k raises TypeError there)."""


class RunStateError(RunstoreError, RuntimeError):
    """The run is not in a state that allows this (logging to an ended run, finishing twice);
    t9k raises RuntimeError here."""


class StoreError(RunstoreError):
    """The local store cannot be opened or written."""


class StoreFullError(StoreError):
    """The disk holding the store is full; the buffered rows are kept in memory."""


class NotFoundError(RunstoreError, LookupError):
    """A run or artifact that was asked for does not exist."""


class AmbiguousError(NotFoundError):
    """A reference (a name, a UUID prefix) matches several runs or artifacts."""


class SQLError(RunstoreError):
    """User SQL was refused or failed."""


class RemoteError(RunstoreError):
    """Base class of errors talking to a runstore server."""


class NotLoggedInError(RemoteError, RuntimeError):
    """No server credentials are configured (t9k raises RuntimeError here)."""


class TransientRemoteError(RemoteError):
    """A failure worth retrying: connection refused/reset, timeout, 5xx, 429."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentRemoteError(RemoteError):
    """A failure that retrying cannot fix (4xx): the server's message is kept."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ConflictError(PermanentRemoteError, RuntimeError):
    """conflict_strategy='error' and the folder already holds a node of that name."""
