"""Namespace types of the OCI spec, their clone flags, and checks of ``path`` joins."""

from __future__ import annotations

import posix

from isobox.errors import ConfigError
from isobox.linux import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

NS_FLAGS = {
    "pid": sc.CLONE_NEWPID, "network": sc.CLONE_NEWNET, "mount": sc.CLONE_NEWNS,
    "ipc": sc.CLONE_NEWIPC, "uts": sc.CLONE_NEWUTS, "user": sc.CLONE_NEWUSER,
    "cgroup": sc.CLONE_NEWCGROUP, "time": sc.CLONE_NEWTIME,
}
FLAG_NAMES = {v: k for k, v in NS_FLAGS.items()}
PROC_NAMES = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc", "uts": "uts",
              "user": "user", "cgroup": "cgroup", "time": "time"}
# user first (it grants the rights for the others), mount last (it changes path lookups).
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def open_joins(config: dict[str, Any]) -> dict[str, int]:
    """Open every ``linux.namespaces[].path`` and prove it is a namespace of that type."""
    import fcntl

    fds: dict[str, int] = {}
    try:
        for i, ns in enumerate(config.get("linux", {}).get("namespaces", [])):
            path = ns.get("path")
            if not path:
                continue
            where = f"config.json: linux.namespaces[{i}].path"
            try:
                fd = posix.open(path, posix.O_RDONLY | posix.O_CLOEXEC)
            except OSError as e:
                raise ConfigError(where, f"cannot open {path}: {e.strerror}") from None
            fds[ns["type"]] = fd
            try:
                actual = fcntl.ioctl(fd, sc.NS_GET_NSTYPE)
            except OSError:
                raise ConfigError(where, f"{path} is not a namespace file") from None
            if actual != NS_FLAGS[ns["type"]]:
                raise ConfigError(where, f"{path} is a {FLAG_NAMES.get(actual, '?')} namespace, "
                                  f"not {ns['type']}")
    except BaseException:
        for fd in fds.values():
            posix.close(fd)
        raise
    return fds


def new_namespaces(config: dict[str, Any]) -> list[str]:
    return [ns["type"] for ns in config.get("linux", {}).get("namespaces", [])
            if not ns.get("path")]
