"""Exceptions of :mod:`isobox.api.client`, from the server's status and ``{"message": …}``;
each is also the :mod:`isobox.errors` type the local engine raises for the same failure, so
code (and the CLI) handles both alike."""

from __future__ import annotations

from isobox.errors import ConfigError, ConflictError, IsoboxError, NotFoundError, SystemSetupError


class APIError(IsoboxError):
    """The server answered an error status."""

    def __init__(self, status: int, message: str) -> None:
        Exception.__init__(self, message)
        self.status = status
        self.message = message


class NotFound(APIError, NotFoundError):
    """404: no such container, image, VM, snapshot, …"""


class Conflict(APIError, ConflictError):
    """409: the object exists, or is in the wrong state."""


class BadRequest(APIError, ConfigError):
    """400: a bad parameter; the message names the field."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.where = ""


class Unavailable(APIError, SystemSetupError):
    """501: the server's host cannot do it (e.g. a container memory snapshot without CRIU)."""


class ServerError(APIError):
    """Any other error status (500: see the server's log)."""


class ConnectError(IsoboxError):
    """The server could not be reached."""


def error_for(status: int, message: str) -> APIError:
    kind: type[APIError] = {400: BadRequest, 404: NotFound, 409: Conflict,
                            501: Unavailable}.get(status, ServerError)
    return kind(status, message or f"HTTP {status}")
