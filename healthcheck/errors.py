"""The one exception hierarchy; the CLI maps these to exit codes in one place."""

from __future__ import annotations


class HealthcheckError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(HealthcheckError):
    """A configuration problem, naming the file, the key path and what is wrong."""

    def __init__(self, message: str, *, file: str | None = None, path: str | None = None) -> None:
        self.file = file
        self.path = path
        self.message = message
        super().__init__(self.describe())

    def describe(self) -> str:
        where = ": ".join(part for part in (self.file, self.path) if part)
        return f"{where}: {self.message}" if where else self.message


class StorageError(HealthcheckError):
    """The database could not be opened, migrated or written."""


class DeliveryError(HealthcheckError):
    """A notification could not be delivered to a channel."""


class DeliveryTimeout(DeliveryError):
    """Sent, but no answer in time: the channel may well have acted on it."""
