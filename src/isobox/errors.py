"""The one error hierarchy of isobox: every message says what was wrong and where."""

from __future__ import annotations


class IsoboxError(Exception):
    """Base of every error isobox reports to a user (never shown with a traceback)."""


class ConfigError(IsoboxError):
    """An invalid document; ``where`` names the file and JSON path: ``config.json: process``."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.message = message


class NotFoundError(IsoboxError):
    """A named object (container, image, …) does not exist."""


class ConflictError(IsoboxError):
    """The object exists already, or is in the wrong state for the operation."""


class SystemSetupError(IsoboxError):
    """The host refused an operation (mount, cgroup write, syscall) with a reason."""


class ImageError(IsoboxError):
    """An image, layer or blob is unusable (bad manifest, unknown reference, …)."""


class InvalidArchiveError(ImageError):
    """A tar stream or archive is malformed or hostile; the message names the entry."""


class VerificationError(ImageError):
    """Content does not match its descriptor: digest, size or diffID mismatch."""


class RegistryError(ImageError):
    """A registry refused a request or answered something we cannot use."""


def command_failure_status(message: str) -> int:
    """A shell's status for a command that could not be run, from the runtime's message:
    127 not found (or no such cwd), 126 not runnable, 0 when the message is neither (as the
    docker CLI's runStartContainerErr and podman read it)."""
    low = message.lower()
    if "executable file not found" in low or "no such file or directory" in low:
        return 127
    if any(s in low for s in ("permission denied", "is a directory", "not a directory")):
        return 126
    return 0
