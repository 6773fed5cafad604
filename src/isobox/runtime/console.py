"""Terminals: a pty made inside the container, its master sent over ``--console-socket``.

The peer is obtained with ``TIOCGPTPEER`` on the master, never by opening /dev/pts/N by
path (CVE-2025-52565), and /dev/console is a fresh file bind-mounted through an fd.
"""

from __future__ import annotations

import os

from isobox.errors import ConfigError, SystemSetupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414


def connect_console_socket(path: str) -> int:
    """Connect to the caller's console socket (before any namespace change); returns an fd.

    Also imports what :func:`setup_terminal` needs: it runs after ``pivot_root`` or after
    joining the container's mount namespace, where the host's modules cannot be found."""
    import fcntl  # noqa: F401
    import socket
    import struct  # noqa: F401

    from isobox.linux import safepath  # noqa: F401

    if not path:
        return -1
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise ConfigError("--console-socket", f"cannot connect to {path}: {e.strerror}") from None
    return s.detach()


def _open_ptmx() -> int:
    """The pty multiplexer, opened only once proven to be one (char 5:2): the image or the
    container controls /dev, and a symlink there must not make us open another file."""
    import stat

    from isobox.linux import safepath

    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for path in ("/dev/pts/ptmx", "/dev/ptmx"):
            try:
                fd = safepath.open_in_root(root, path, os.O_PATH)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(5, 2):
                    return os.open(safepath.fd_path(fd), os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError as e:
                raise SystemSetupError(f"{path}: {e.strerror}") from None
            finally:
                os.close(fd)
    finally:
        os.close(root)
    raise SystemSetupError("no pty multiplexer in the container: neither /dev/pts/ptmx nor "
                           "/dev/ptmx is the char device 5:2")


def setup_terminal(console_fd: int, size: dict[str, int] | None, mount_console: bool) -> None:
    """Make a pty, send its master to the console socket, make the peer our stdio and ctty."""
    import fcntl
    import socket
    import struct

    from isobox.linux import safepath
    from isobox.linux import syscalls as sc

    master = _open_ptmx()
    fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
    peer = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    if size:
        fcntl.ioctl(master, TIOCSWINSZ,
                    struct.pack("HHHH", size.get("height", 0), size.get("width", 0), 0, 0))
    name = os.readlink(f"/proc/self/fd/{peer}")
    sock = socket.socket(fileno=console_fd)
    try:
        socket.send_fds(sock, [name.encode()], [master])
    except OSError as e:
        raise SystemSetupError(f"cannot send the pty master to the console socket: {e.strerror}"
                               ) from None
    finally:
        sock.close()
        os.close(master)
    if mount_console:
        root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = safepath.create_file(root, "/dev/console", 0o600)
        except OSError as e:
            raise SystemSetupError(f"/dev/console: {e.strerror}") from None
        finally:
            os.close(root)
        try:
            sc.mount(f"/proc/self/fd/{peer}", safepath.fd_path(fd), None, sc.MS_BIND)
        finally:
            os.close(fd)
    fcntl.ioctl(peer, TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(peer, target)
    if peer > 2:
        os.close(peer)


class ForegroundConsole:
    """``run`` in the foreground with ``process.terminal`` and no ``--console-socket``: like
    runc, the runtime makes the console itself and copies between it and its own stdio."""

    def __init__(self) -> None:
        import socket

        self._ours, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.master = -1
        self._saved_tty: list[Any] | None = None

    def init_end(self) -> int:
        """The fd to hand to create (in place of a connected --console-socket)."""
        return self._theirs.fileno()

    def receive(self) -> None:
        import socket

        self._theirs.close()
        _, fds, _, _ = socket.recv_fds(self._ours, 1024, 1)
        self._ours.close()
        if not fds:
            raise SystemSetupError("the container did not send its console")
        self.master = fds[0]

    def proxy(self, pid: int) -> int:
        """Copy stdin → console and console → stdout until the console closes; then wait
        for ``pid`` and return its exit status (as :func:`wait_forwarding_signals`)."""
        import fcntl
        import select
        import signal
        import termios
        import tty

        from isobox.runtime.waiting import wait_forwarding_signals

        stdin_tty = os.isatty(0)
        if stdin_tty:
            self._saved_tty = termios.tcgetattr(0)
            tty.setraw(0)
            size = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(self.master, TIOCSWINSZ, size)

            def resize(_sig: int, _frame: object) -> None:
                sz = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
                fcntl.ioctl(self.master, TIOCSWINSZ, sz)

            signal.signal(signal.SIGWINCH, resize)
        try:
            watch = [self.master, 0]
            while True:
                try:
                    ready, _, _ = select.select(watch, [], [])
                except InterruptedError:
                    continue
                if self.master in ready:
                    try:
                        data = os.read(self.master, 65536)
                    except OSError:  # EIO: every holder of the terminal is gone
                        data = b""
                    if not data:
                        break
                    os.write(1, data)
                if 0 in ready:
                    data = os.read(0, 65536)
                    if data:
                        os.write(self.master, data)
                    else:
                        watch.remove(0)  # stdin closed; keep copying the output
        finally:
            if self._saved_tty is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, self._saved_tty)
            os.close(self.master)
        return wait_forwarding_signals(pid)
