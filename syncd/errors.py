"""Exceptions of the sync daemon: one base class, one subclass per condition."""

from __future__ import annotations


class SyncError(Exception):
    """Base class of every error syncd raises on purpose."""


class AlreadyRunningError(SyncError):
    """Another syncd holds the lock of this store."""


class SettingsError(SyncError):
    """A configuration value (file, environment or flag) is bad."""


class ServiceError(SyncError):
    """The systemd unit cannot be written."""
