"""A small synchronous QMP client on a unix socket (qemu.qmp's legacy sync API)."""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType
from typing import Any

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from isobox.vm.errors import VMError

APPEAR_WAIT = 2.0  # how long a missing or refusing socket is retried


class QMPClient:
    """``with QMPClient(sock) as q: q.execute("query-status")`` → the command's "return" value."""

    def __init__(self, socket: Path, timeout: float = 5.0) -> None:
        self._socket = socket
        self._timeout = timeout
        self._qmp: QEMUMonitorProtocol | None = None

    def connect(self) -> None:
        # a QEMU just started may not have made its socket yet (the runtime does not wait)
        deadline = time.monotonic() + min(self._timeout, APPEAR_WAIT)
        while True:
            qmp = QEMUMonitorProtocol(str(self._socket))
            try:
                qmp.connect(negotiate=True)
                break
            except (QMPError, OSError) as e:
                qmp.close()
                cause = getattr(e, "exc", None) or e  # qemu.qmp wraps the OSError
                missing = isinstance(cause, (FileNotFoundError, ConnectionRefusedError))
                if not missing or time.monotonic() >= deadline:
                    raise VMError(f"QMP {self._socket}: cannot connect: {e}") from None
            time.sleep(0.02)
        qmp.settimeout(self._timeout)
        self._qmp = qmp

    def execute(self, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one command; a QMP error reply is a VMError naming the command."""
        if self._qmp is None:
            self.connect()
        assert self._qmp is not None
        try:
            reply = self._qmp.cmd_raw(cmd, args)
        except EOFError:
            raise VMError(f"QMP {self._socket}: {cmd}: QEMU closed the connection") from None
        except (TimeoutError, QMPError, OSError) as e:
            raise VMError(f"QMP {self._socket}: {cmd}: {e or type(e).__name__}") from None
        if "error" in reply:
            err = reply["error"]
            raise VMError(f"QMP {self._socket}: {cmd}: {err.get('desc', err)}")
        ret = reply.get("return", {})
        return ret if isinstance(ret, dict) else {"return": ret}

    def send_fd(self, fd: int, name: str) -> None:
        """Give QEMU a file descriptor (SCM_RIGHTS), known to later commands as ``name``."""
        if self._qmp is None:
            self.connect()
        assert self._qmp is not None
        try:
            self._qmp.send_fd_scm(fd)
        except (QMPError, OSError) as e:
            raise VMError(f"QMP {self._socket}: cannot pass a file descriptor: {e}") from None
        self.execute("getfd", {"fdname": name})

    def close(self) -> None:
        if self._qmp is not None:
            qmp, self._qmp = self._qmp, None
            try:
                qmp.close()
            except (QMPError, OSError, EOFError):
                pass  # QEMU is gone already

    def __enter__(self) -> QMPClient:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
