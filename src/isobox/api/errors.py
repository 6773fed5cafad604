"""Docker's error statuses: ``{"message": …}`` with 404 for an unknown object, 409 for a
conflict, 400 for a bad parameter and 500 for anything else."""

from __future__ import annotations

from isobox.errors import (
    ConfigError,
    ConflictError,
    InvalidArchiveError,
    IsoboxError,
    NotFoundError,
)


class ApiError(Exception):
    """An HTTP error with Docker's JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bad_parameter(field: str, message: str) -> ApiError:
    return ApiError(400, f"{field}: {message}" if field else message)


def status_of(exc: BaseException) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, ConfigError | InvalidArchiveError):
        return 400
    return 500


def message_of(exc: BaseException) -> str:
    if isinstance(exc, ApiError):
        return exc.message
    if isinstance(exc, IsoboxError):
        return str(exc)
    return "internal server error (see the server's log)"
