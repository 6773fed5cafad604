"""Docker's JSON message streams (``/build``, ``/images/load``, ``/images/create``, push): one
JSON object per line, flushed as produced.

The response starts with the first message, so a failure before anything was produced is
still an HTTP error with its status (a pull of an unknown image is a 404, as dockerd's);
after that, errors travel in-band as ``{"errorDetail": {"message": …}, "error": …}``, which
the docker CLI turns into exit status 1. Progress callbacks of parallel pulls and pushes
write from several threads, hence the lock."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from isobox.api.errors import message_of
from isobox.errors import IsoboxError

if TYPE_CHECKING:
    from isobox.api.http import ChunkedWriter, Exchange


class JsonStream:
    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.out: ChunkedWriter | None = None
        self.lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self.out is not None

    def send(self, obj: dict[str, Any]) -> None:
        with self.lock:
            if self.out is None:
                self.out = self.ex.stream()
            self.out.json_line(obj)
            self.out.flush()

    def error(self, exc: BaseException, code: int | None = None) -> None:
        """The in-band error message for ``exc`` (``code``: an exit status, for a failed
        build step)."""
        if not isinstance(exc, IsoboxError):
            logging.getLogger("isobox.api").error("in-band error", exc_info=exc)
        text = message_of(exc)
        detail: dict[str, Any] = {"message": text}
        if code is not None:
            detail["code"] = code
        self.send({"errorDetail": detail, "error": text})

    def close(self) -> None:
        with self.lock:
            if self.out is None:
                self.out = self.ex.stream()
            self.out.close()
