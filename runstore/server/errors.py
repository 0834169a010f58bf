"""Errors the server's operations raise; app.py maps each to one HTTP status and one line."""

from __future__ import annotations


class ServiceError(Exception):
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
