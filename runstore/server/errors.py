"""Errors the server raises, in one tree under runstore.errors.RunstoreError.

ServiceError and its subclasses are what the routes' operations raise; app.py maps each to one
HTTP status and one line. AuthError is a missing or bad token (401). UserExists and NoSuchUser
come from user administration (`runstore user ...`, where the CLI edge prints them). A name or
path refused by runstore.rules is runstore.errors.InvalidInputError (server/paths.py: BadPath).
"""

from __future__ import annotations

from runstore.errors import NotFoundError, RunstoreError


class ServerError(RunstoreError):
    """Base class of the server's own errors."""


class AuthError(ServerError):
    """No valid token (401)."""


class UserExists(ServerError, ValueError):
    """`runstore user add` of a name that is taken."""


class NoSuchUser(NotFoundError, ServerError):
    """A user administration command names a user that does not exist."""


class ServiceError(ServerError):
    status_code = 400
    code = "bad_request"


class NotFound(ServiceError):
    """Absent, or belonging to another user (the same answer: no existence leak)."""

    status_code = 404
    code = "not_found"


class Forbidden(ServiceError):
    status_code = 403
    code = "forbidden"


class Conflict(ServiceError):
    status_code = 409
    code = "conflict"


class NameConflict(Conflict):
    """conflict_strategy='error' and the folder already holds that name."""

    code = "name_conflict"


class OffsetGap(Conflict):
    code = "offset_gap"


class Invalid(ServiceError):
    status_code = 422
    code = "invalid"


class HashMismatch(Invalid):
    code = "hash_mismatch"


class TooLarge(ServiceError):
    status_code = 413
    code = "too_large"
