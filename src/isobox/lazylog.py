"""Loggers that cost nothing until logging is in use.

``logging`` and its imports cost 3 to 6 ms of a CLI call here. Debug and info records can be
seen only once something configured logging (the CLI's ``--log-level``, ``isobox serve``), and
configuring it imports it: until then they are dropped, as the unconfigured root logger
(level WARNING) would drop them. Warnings and errors import logging and go through it.
"""

from __future__ import annotations

import sys


class Logger:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def debug(self, msg: str, *args: object) -> None:
        if "logging" in sys.modules:
            sys.modules["logging"].getLogger(self.name).debug(msg, *args, stacklevel=2)

    def info(self, msg: str, *args: object) -> None:
        if "logging" in sys.modules:
            sys.modules["logging"].getLogger(self.name).info(msg, *args, stacklevel=2)

    def warning(self, msg: str, *args: object) -> None:
        import logging

        logging.getLogger(self.name).warning(msg, *args, stacklevel=2)


def get_logger(name: str) -> Logger:
    return Logger(name)
