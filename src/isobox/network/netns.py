"""Named network namespaces (``ip netns add``/``del``) and running code inside one.

Namespace changes happen on a short-lived helper thread: ``unshare``/``setns`` of a net
namespace affect only the calling thread, so the caller (possibly a multi-threaded API
server) never leaves its own namespace, even when the work fails half-way.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from isobox.errors import SystemSetupError
from isobox.linux import syscalls

T = TypeVar("T")


def _on_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` on a fresh thread and return its result (or raise its exception)."""
    box: list[T] = []
    err: list[BaseException] = []

    def main() -> None:
        try:
            box.append(fn())
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=main, name="isobox-netns", daemon=True)
    t.start()
    t.join()
    if err:
        raise err[0]
    return box[0]


def in_netns(path: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` with the calling thread's network namespace set to the one at ``path``."""
    def enter() -> T:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SystemSetupError(f"network namespace {path}: {e.strerror}") from None
        try:
            syscalls.setns(fd, syscalls.CLONE_NEWNET)
        except OSError as e:
            raise SystemSetupError(f"setns {path}: {e.strerror}") from None
        finally:
            os.close(fd)
        return fn()

    return _on_thread(enter)


def create_netns(path: str) -> None:
    """Create an empty network namespace bind-mounted at ``path`` with ``lo`` up."""
    from isobox.network.netlink import Netlink

    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
    except FileExistsError:
        raise SystemSetupError(f"network namespace {path}: file exists") from None
    os.close(fd)

    def make() -> None:
        syscalls.unshare(syscalls.CLONE_NEWNET)
        syscalls.mount("/proc/thread-self/ns/net", path, None, syscalls.MS_BIND)
        with Netlink() as nl:
            nl.set_up("lo")

    try:
        _on_thread(make)
    except BaseException as e:
        delete_netns(path)
        if isinstance(e, OSError):
            raise SystemSetupError(f"network namespace {path}: {e.strerror}") from None
        raise


def delete_netns(path: str) -> None:
    """Unmount and remove the namespace file at ``path``; no error when it is gone."""
    try:
        syscalls.umount2(path, syscalls.MNT_DETACH | syscalls.UMOUNT_NOFOLLOW)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):
            raise SystemSetupError(f"umount {path}: {e.strerror}") from None
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise SystemSetupError(f"remove {path}: {e.strerror}") from None
