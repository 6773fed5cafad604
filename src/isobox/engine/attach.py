"""A client of the monitor's attach socket (conmon's protocol).

conmon listens on ``<bundle>/attach`` (SOCK_SEQPACKET). Every packet it sends starts with one
byte naming the stream (2 stdout, 3 stderr) followed by the data; what the client sends is
written to the container's stdin. The terminal size goes to the ``winsz`` FIFO as
``"1 <rows> <cols>\\n"``.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from typing import TYPE_CHECKING

from isobox.errors import SystemSetupError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.engine.state import ContainerRow

STDOUT_PIPE = 2
STDERR_PIPE = 3
BUFSIZE = 8192 + 1


class AttachSession:
    def __init__(self, sock: socket.socket, bundle: str, vm_state_dir: str = "") -> None:
        self.sock = sock
        self.bundle = bundle
        self.vm_state_dir = vm_state_dir  # a micro-VM's: its workload's terminal is in the guest

    @classmethod
    def to_container(cls, engine: Engine, row: ContainerRow) -> AttachSession:
        session = cls.connect(engine.layout.container_dir(row.id))
        if row.options.get("isolation") == "vm":
            session.vm_state_dir = os.path.join(engine.layout.vm_runtime_root, row.id)
        return session

    @classmethod
    def connect(cls, bundle: str) -> AttachSession:
        path = os.path.join(bundle, "attach")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
        except OSError as e:
            sock.close()
            raise SystemSetupError(f"cannot attach to the container ({path}): "
                                   f"{e.strerror}") from None
        return cls(sock, bundle)

    def close(self) -> None:
        self.sock.close()

    def resize(self, rows: int, cols: int) -> None:
        resize_terminal(self.bundle, rows, cols)
        if self.vm_state_dir:  # conmon's pty is QEMU's serial line: the guest's pty needs this
            from isobox.engine.vm_guest import resize_workload

            resize_workload(self.vm_state_dir, rows, cols)

    def pump(self, stdin_fd: int | None, stdout_fd: int, stderr_fd: int) -> None:
        """Copy until the container closes its output: container stdout/stderr to the two
        fds, ``stdin_fd`` (if any) to the container; stdin's EOF is passed on as a
        half-close, so ``echo x | isobox run -i … cat`` sees its end of input."""
        sfd = self.sock.fileno()
        poller = select.poll()
        poller.register(sfd, select.POLLIN)
        if stdin_fd is not None:
            poller.register(stdin_fd, select.POLLIN)
        while True:
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            for fd, _ev in events:
                if fd == sfd:
                    try:
                        data = self.sock.recv(BUFSIZE)
                    except OSError as e:
                        if e.errno == errno.EINTR:
                            continue
                        return
                    if not data:
                        return
                    out = stderr_fd if data[0] == STDERR_PIPE else stdout_fd
                    _write_all(out, data[1:])
                elif stdin_fd is not None and fd == stdin_fd:
                    try:
                        data = os.read(stdin_fd, BUFSIZE - 1)
                    except OSError:
                        data = b""
                    if data:
                        try:
                            self.sock.sendall(data)
                        except OSError:
                            pass
                    else:
                        poller.unregister(stdin_fd)
                        stdin_fd = None
                        try:
                            self.sock.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass


def resize_container_terminal(engine: Engine, row: ContainerRow, rows: int, cols: int) -> None:
    """The container's terminal size, wherever its terminal is (a micro-VM's is in the guest)."""
    resize_terminal(engine.layout.container_dir(row.id), rows, cols)
    if row.options.get("isolation") == "vm":
        from isobox.engine.vm_guest import resize_workload

        resize_workload(os.path.join(engine.layout.vm_runtime_root, row.id), rows, cols)


def resize_terminal(bundle: str, rows: int, cols: int) -> None:
    """Tell the monitor the container's terminal size (ignored when it has no terminal)."""
    try:
        fd = os.open(os.path.join(bundle, "winsz"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, f"1 {rows} {cols}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        except BrokenPipeError:
            return
        view = view[n:]
