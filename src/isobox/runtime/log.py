"""runc-style logging to ``--log`` (text or json lines) and errors to stderr.

conmon, podman and containerd read the runtime's errors from the ``--log`` file, as
``{"level":"error","msg":"…","time":"…"}`` lines in json format. The stdlib :mod:`logging`
costs several ms to import, so this tiny writer is used on the runtime's hot paths.
"""

from __future__ import annotations

import posix  # not os: start and delete never import it (1.5-2 ms)
import sys
import time


class RuntimeLog:
    __slots__ = ("debug_enabled", "fmt", "path", "prog")

    def __init__(self, path: str | None = None, fmt: str = "text", debug: bool = False) -> None:
        self.path = path
        self.fmt = fmt
        self.debug_enabled = debug
        self.prog = "isobox-runtime"

    def _write(self, level: str, msg: str) -> None:
        if not self.path:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e9):09d}Z"
        if self.fmt == "json":
            from isobox.fastjson import dumps

            line = dumps({"level": level, "msg": msg, "time": stamp})
        else:
            escaped = msg.replace("\\", "\\\\").replace('"', '\\"')
            line = f'time="{stamp}" level={level} msg="{escaped}"'
        try:
            flags = posix.O_WRONLY | posix.O_APPEND | posix.O_CREAT | posix.O_CLOEXEC
            fd = posix.open(self.path, flags, 0o600)
            try:
                posix.write(fd, (line + "\n").encode())
            finally:
                posix.close(fd)
        except OSError:
            pass

    def error(self, msg: str) -> None:
        self._write("error", msg)
        print(f"{self.prog}: error: {msg}", file=sys.stderr)

    def warning(self, msg: str) -> None:
        self._write("warning", msg)
        if self.debug_enabled or not self.path:
            print(f"{self.prog}: warning: {msg}", file=sys.stderr)

    def debug(self, msg: str) -> None:
        if self.debug_enabled:
            self._write("debug", msg)


LOG = RuntimeLog()
