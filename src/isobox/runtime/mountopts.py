"""Translate OCI mount ``options`` into mount(2) flags, propagation flags and fs data."""

from __future__ import annotations

from isobox.linux import syscalls as sc

# option -> (clear?, flag)
FLAG_OPTIONS: dict[str, tuple[bool, int]] = {
    "async": (True, sc.MS_SYNCHRONOUS), "atime": (True, sc.MS_NOATIME),
    "bind": (False, sc.MS_BIND), "defaults": (False, 0), "dev": (True, sc.MS_NODEV),
    "diratime": (True, sc.MS_NODIRATIME), "dirsync": (False, sc.MS_DIRSYNC),
    "exec": (True, sc.MS_NOEXEC), "iversion": (False, sc.MS_IVERSION),
    "lazytime": (False, sc.MS_LAZYTIME), "loud": (True, sc.MS_SILENT),
    "mand": (False, sc.MS_MANDLOCK), "noatime": (False, sc.MS_NOATIME),
    "nodev": (False, sc.MS_NODEV), "nodiratime": (False, sc.MS_NODIRATIME),
    "noexec": (False, sc.MS_NOEXEC), "noiversion": (True, sc.MS_IVERSION),
    "nolazytime": (True, sc.MS_LAZYTIME), "nomand": (True, sc.MS_MANDLOCK),
    "norelatime": (True, sc.MS_RELATIME), "nostrictatime": (True, sc.MS_STRICTATIME),
    "nosuid": (False, sc.MS_NOSUID), "nosymfollow": (False, sc.MS_NOSYMFOLLOW),
    "rbind": (False, sc.MS_BIND | sc.MS_REC), "relatime": (False, sc.MS_RELATIME),
    "remount": (False, sc.MS_REMOUNT), "ro": (False, sc.MS_RDONLY),
    "rw": (True, sc.MS_RDONLY), "silent": (False, sc.MS_SILENT),
    "strictatime": (False, sc.MS_STRICTATIME), "suid": (True, sc.MS_NOSUID),
    "sync": (False, sc.MS_SYNCHRONOUS), "symfollow": (True, sc.MS_NOSYMFOLLOW),
}
PROPAGATION_OPTIONS: dict[str, int] = {
    "private": sc.MS_PRIVATE, "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "shared": sc.MS_SHARED, "rshared": sc.MS_SHARED | sc.MS_REC,
    "slave": sc.MS_SLAVE, "rslave": sc.MS_SLAVE | sc.MS_REC,
    "unbindable": sc.MS_UNBINDABLE, "runbindable": sc.MS_UNBINDABLE | sc.MS_REC,
}
UNSUPPORTED = ("idmap", "ridmap", "rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev",
               "rnoexec", "rexec", "rnodiratime", "rdiratime", "rrelatime", "rnorelatime",
               "rnoatime", "ratime", "rstrictatime", "rnostrictatime", "rnosymfollow",
               "rsymfollow")
# Flags kept on a bind remount (statvfs f_flag bit -> mount flag), so that remounting
# read-only never drops nosuid/nodev/noexec the mount already had.
STATVFS_TO_MS = ((1, sc.MS_RDONLY), (2, sc.MS_NOSUID), (4, sc.MS_NODEV), (8, sc.MS_NOEXEC),
                 (1024, sc.MS_NOATIME), (2048, sc.MS_NODIRATIME), (4096, sc.MS_RELATIME))


class MountOptions:
    __slots__ = ("copyup", "data", "flags", "propagation")

    def __init__(self, flags: int, propagation: list[int], data: str, copyup: bool) -> None:
        self.flags = flags
        self.propagation = propagation
        self.data = data
        self.copyup = copyup


def parse_options(options: list[str], where: str) -> MountOptions:
    from isobox.errors import ConfigError

    flags = 0
    prop: list[int] = []
    data: list[str] = []
    copyup = False
    for i, opt in enumerate(options):
        if opt in FLAG_OPTIONS:
            clear, bit = FLAG_OPTIONS[opt]
            flags = flags & ~bit if clear else flags | bit
        elif opt in PROPAGATION_OPTIONS:
            prop.append(PROPAGATION_OPTIONS[opt])
        elif opt == "tmpcopyup":
            copyup = True
        elif opt in UNSUPPORTED:
            raise ConfigError(f"{where}.options[{i}]", f"mount option {opt!r} is not supported")
        else:
            data.append(opt)
    return MountOptions(flags, prop, ",".join(data), copyup)


def preserved_flags(path: str) -> int:
    import posix

    f_flag = posix.statvfs(path).f_flag
    out = 0
    for bit, ms in STATVFS_TO_MS:
        if f_flag & bit:
            out |= ms
    return out
