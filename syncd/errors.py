"""Exceptions of the sync daemon: one base class, one subclass per condition.

SyncError is a RunstoreError, so the one CLI edge (runstore.cli.base.user_errors) turns each
into a one-line `Error: ...`.
"""

from __future__ import annotations

from runstore.errors import RunstoreError


class SyncError(RunstoreError):
    """Base class of every error syncd raises on purpose."""


class AlreadyRunningError(SyncError):
    """Another syncd holds the lock of this store."""


class SettingsError(SyncError):
    """A configuration value (file, environment or flag) is bad."""


class ServiceError(SyncError):
    """The systemd unit cannot be written."""
