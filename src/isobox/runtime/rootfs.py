"""The container's root filesystem: mounts, /dev, pivot_root, masked and read-only paths.

Runs inside the init process, in the container's new mount namespace. Every target is
resolved inside the rootfs with :mod:`isobox.linux.safepath` and mounted through its fd.
"""

from __future__ import annotations

import errno
import posix
import stat

from isobox.errors import ConfigError, SystemSetupError
from isobox.linux import pathnames, safepath
from isobox.linux import syscalls as sc
from isobox.oci.config import PROC_BIND_TARGETS
from isobox.runtime.mountopts import parse_options, preserved_flags

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

DEFAULT_DEVICES = (  # name, major, minor (all char devices, 0666)
    ("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
    ("tty", 5, 0),
)
DEV_SYMLINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"))
PROPAGATION = {"shared": sc.MS_SHARED, "slave": sc.MS_SLAVE, "private": sc.MS_PRIVATE,
               "unbindable": sc.MS_UNBINDABLE}


def _nothing() -> None:
    pass


def _fail(what: str, err: OSError) -> SystemSetupError:
    return SystemSetupError(f"{what}: {posix.strerror(err.errno or 0)}")



def _check_not_in_proc(fd: int, dest: str, where: str, *, bind: bool = False,
                       proc: bool = False) -> None:
    """Catalogue case 22 on the *resolved* target: a destination that reaches procfs through
    a symlink in the image (``/myproc -> /proc``, then a mount at ``/myproc/sys``) is refused
    like one that names it, so nothing can cover /proc/sys, /proc/self/attr and the like."""
    if sc.fstatfs_type(fd) != sc.PROC_SUPER_MAGIC:
        return
    clean = pathnames.normpath("/" + dest.lstrip("/"))
    if proc and clean == "/proc":
        return
    if bind and clean in PROC_BIND_TARGETS:
        return
    raise ConfigError(f"{where}.destination",
                      f'"{dest}" cannot be mounted because it is inside /proc')


class RootfsBuilder:
    """Builds the mount tree of one container (one instance per init process)."""

    def __init__(self, config: dict[str, Any], rootfs: str, bundle: str, *,
                 cgroup_mounts: list[dict[str, Any]], new_cgroupns: bool, in_userns: bool
                 ) -> None:
        self.config = config
        self.rootfs = rootfs
        self.bundle = bundle
        self.cgroup_mounts = cgroup_mounts
        self.new_cgroupns = new_cgroupns
        self.in_userns = in_userns
        self.rootfd = -1
        self.before_cgroup_mount: Callable[[], None] = _nothing

    # -- before pivot_root --------------------------------------------------------------
    def prepare(self) -> None:
        linux = self.config.get("linux", {})
        prop = linux.get("rootfsPropagation", "")
        flag = sc.MS_SLAVE | sc.MS_REC
        if prop:
            flag = PROPAGATION[prop.lstrip("r")] | (sc.MS_REC if prop.startswith("r") else 0)
        sc.mount(None, "/", None, flag)
        if flag & sc.MS_SHARED:
            self._make_parent_private()
        try:
            sc.mount(self.rootfs, self.rootfs, None, sc.MS_BIND | sc.MS_REC)
        except OSError as e:
            raise _fail(f"cannot bind-mount the rootfs {self.rootfs}", e) from None
        self.rootfd = posix.open(self.rootfs, posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)

    def _make_parent_private(self) -> None:
        best = ""
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mnt = line.split()[4]
                if (self.rootfs == mnt or self.rootfs.startswith(mnt.rstrip("/") + "/")) and \
                        len(mnt) > len(best):
                    best = mnt
        sc.mount(None, best or "/", None, sc.MS_PRIVATE)

    def mount_all(self) -> None:
        for i, m in enumerate(self.config.get("mounts", [])):
            where = f"config.json: mounts[{i}]"
            try:
                self._mount_one(m, where)
            except (ConfigError, SystemSetupError):
                raise
            except OSError as e:
                raise SystemSetupError(
                    f"{where}: cannot mount {m.get('type') or 'bind'} on {m['destination']}: "
                    f"{e.strerror or posix.strerror(e.errno or 0)}") from None

    def _mount_one(self, m: dict[str, Any], where: str) -> None:
        dest: str = m["destination"]
        opts = parse_options(m.get("options", []), where)
        mtype = m.get("type", "") or ""
        source = m.get("source", "") or ""
        if opts.flags & sc.MS_BIND or mtype == "bind":
            self._bind(source, dest, opts.flags | sc.MS_BIND, opts.propagation, where)
            return
        if mtype in ("cgroup", "cgroup2"):
            self.before_cgroup_mount()
            self._mount_cgroups(dest, mtype, opts.flags)
            return
        if mtype in ("proc", "sysfs") and safepath.is_symlink_in_root(self.rootfd, dest):
            raise ConfigError(f"{where}.destination",
                              f"{dest!r} must be mounted on ordinary directory, not a symlink")
        fd = safepath.mkdir_all(self.rootfd, dest)
        try:
            _check_not_in_proc(fd, dest, where, proc=mtype == "proc")
            flags = opts.flags & ~sc.MS_REMOUNT
            sc.mount(source or mtype, safepath.fd_path(fd), mtype, flags, opts.data or None)
        finally:
            posix.close(fd)
        if opts.copyup:
            pass  # tmpcopyup: the tmpfs starts empty (documented limitation)
        self._propagate(dest, opts.propagation)

    def _bind(self, source: str, dest: str, flags: int, propagation: list[int],
              where: str) -> None:
        if not source:
            raise ConfigError(f"{where}.source", "a bind mount needs a source")
        src = source if source.startswith("/") else pathnames.join(self.bundle, source)
        try:
            st = posix.stat(src)
        except OSError as e:
            raise ConfigError(f"{where}.source",
                              f"bind source {src!r}: {posix.strerror(e.errno or 0)}") from None
        if stat.S_ISDIR(st.st_mode):
            fd = safepath.mkdir_all(self.rootfd, dest)
        else:
            fd = safepath.create_file(self.rootfd, dest)
        try:
            _check_not_in_proc(fd, dest, where, bind=True)
            sc.mount(src, safepath.fd_path(fd), None, flags & (sc.MS_BIND | sc.MS_REC))
        finally:
            posix.close(fd)
        extra = flags & ~(sc.MS_BIND | sc.MS_REC | sc.MS_REMOUNT)
        if extra:
            self._remount_bind(dest, extra)
        self._propagate(dest, propagation)

    def _remount_bind(self, dest: str, flags: int) -> None:
        fd = safepath.open_in_root(self.rootfd, dest)
        try:
            path = safepath.fd_path(fd)
            keep = preserved_flags(path) & ~sc.MS_RDONLY
            sc.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | keep | flags)
        finally:
            posix.close(fd)

    def _propagate(self, dest: str, propagation: list[int]) -> None:
        if not propagation:
            return
        fd = safepath.open_in_root(self.rootfd, dest)
        try:
            for p in propagation:
                sc.mount(None, safepath.fd_path(fd), None, p)
        finally:
            posix.close(fd)

    def _mount_cgroups(self, dest: str, mtype: str, flags: int) -> None:
        """cgroupfs in the container: the host's layout, each hierarchy showing only the
        container's own cgroup (through the cgroup namespace, or a bind of its directory)."""
        base = flags & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC | sc.MS_RELATIME)
        ro = flags & sc.MS_RDONLY
        hier = self.cgroup_mounts
        v2 = [h for h in hier if h["fstype"] == "cgroup2"]
        if mtype == "cgroup2" or (len(hier) == 1 and v2 and not v2[0]["name"]):
            if not v2:
                raise SystemSetupError("this host has no cgroup2 hierarchy to mount")
            self._mount_cgroup_fs(dest, v2[0], base | ro)
            return
        fd = safepath.mkdir_all(self.rootfd, dest)
        try:
            _check_not_in_proc(fd, dest, "config.json: mounts (cgroup)")
            sc.mount("tmpfs", safepath.fd_path(fd), "tmpfs", base, "mode=755")
        finally:
            posix.close(fd)
        for h in hier:
            self._mount_cgroup_fs(f"{dest}/{h['name']}", h, base | ro)
            if h.get("links"):
                parent = safepath.mkdir_all(self.rootfd, dest)
                try:
                    for link in h["links"]:
                        try:
                            posix.symlink(h["name"], link, dir_fd=parent)
                        except FileExistsError:
                            pass
                finally:
                    posix.close(parent)
        if ro:
            self._remount_bind(dest, sc.MS_RDONLY)

    def _mount_cgroup_fs(self, dest: str, h: dict[str, Any], flags: int) -> None:
        fd = safepath.mkdir_all(self.rootfd, dest)
        try:
            _check_not_in_proc(fd, dest, "config.json: mounts (cgroup)")
            target = safepath.fd_path(fd)
            if self.new_cgroupns:
                sc.mount(h["fstype"], target, h["fstype"], flags, h["options"] or None)
            else:
                sc.mount(h["path"], target, None, sc.MS_BIND | sc.MS_REC)
        finally:
            posix.close(fd)
        if not self.new_cgroupns:
            self._remount_bind(dest, flags)

    def setup_dev(self) -> None:
        """Default devices, ``linux.devices``, and the standard /dev symlinks."""
        mounts = self.config.get("mounts", [])
        dev_bound = any(m["destination"].rstrip("/") == "/dev"
                        and ("bind" in m.get("options", []) or "rbind" in m.get("options", [])
                             or m.get("type") == "bind") for m in mounts)
        if dev_bound:
            return
        devices: list[tuple[str, str, int, int, int, int, int]] = [
            (f"/dev/{name}", "c", major, minor, 0o666, 0, 0) for name, major, minor in
            DEFAULT_DEVICES]
        for d in self.config.get("linux", {}).get("devices", []):
            devices = [x for x in devices if x[0] != d["path"]]
            devices.append((d["path"], d["type"], d.get("major", 0), d.get("minor", 0),
                            d.get("fileMode", 0o666) & 0o7777, d.get("uid", 0), d.get("gid", 0)))
        for path, kind, major, minor, mode, uid, gid in devices:
            self._make_device(path, kind, major, minor, mode, uid, gid)
        devfd = safepath.mkdir_all(self.rootfd, "/dev")
        try:
            links = list(DEV_SYMLINKS)
            if pathnames.exists("/proc/kcore"):
                links.append(("core", "/proc/kcore"))
            try:
                st = posix.stat("pts/ptmx", dir_fd=devfd, follow_symlinks=False)
                if stat.S_ISCHR(st.st_mode):
                    links.append(("ptmx", "pts/ptmx"))
            except OSError:
                pass
            for name, target in links:
                if name == "ptmx":
                    try:
                        posix.unlink(name, dir_fd=devfd)
                    except OSError:
                        pass
                try:
                    posix.symlink(target, name, dir_fd=devfd)
                except FileExistsError:
                    pass
        finally:
            posix.close(devfd)

    def _make_device(self, path: str, kind: str, major: int, minor: int, mode: int,
                     uid: int, gid: int) -> None:
        parent, name = safepath.open_parent(self.rootfd, path)
        try:
            try:
                st = posix.stat(name, dir_fd=parent, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):  # replace files, nodes and symlinks
                    posix.unlink(name, dir_fd=parent)
            except FileNotFoundError:
                pass
            kinds = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
            if self.in_userns and kind != "p":
                # mknod is not allowed in a user namespace: bind the host's node instead.
                posix.close(posix.open(name, posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW
                                       | posix.O_WRONLY | posix.O_CLOEXEC, 0o600, dir_fd=parent))
                fd = posix.open(name, posix.O_PATH | posix.O_NOFOLLOW | posix.O_CLOEXEC,
                                dir_fd=parent)
                try:
                    sc.mount(path, safepath.fd_path(fd), None, sc.MS_BIND)
                finally:
                    posix.close(fd)
                return
            posix.mknod(name, kinds[kind] | (mode & 0o777), posix.makedev(major, minor),
                        dir_fd=parent)
            posix.chmod(name, mode & 0o7777, dir_fd=parent, follow_symlinks=False)
            posix.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
        except OSError as e:
            raise SystemSetupError(f"cannot create device {path}: {posix.strerror(e.errno or 0)}"
                                   ) from None
        finally:
            posix.close(parent)

    # -- pivot ------------------------------------------------------------------------
    def pivot(self, no_pivot: bool) -> None:
        if self.rootfd >= 0:
            posix.close(self.rootfd)
            self.rootfd = -1
        if no_pivot:
            posix.chdir(self.rootfs)
            sc.mount(self.rootfs, "/", None, sc.MS_MOVE)
            posix.chroot(".")
            posix.chdir("/")
            return
        oldroot = posix.open("/", posix.O_DIRECTORY | posix.O_RDONLY | posix.O_CLOEXEC)
        newroot = posix.open(self.rootfs, posix.O_DIRECTORY | posix.O_RDONLY | posix.O_CLOEXEC)
        try:
            posix.fchdir(newroot)
            sc.pivot_root(".", ".")
            posix.fchdir(oldroot)
            sc.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC)
            sc.umount2(".", sc.MNT_DETACH)
            posix.chdir("/")
        except OSError as e:
            raise _fail(f"pivot_root into {self.rootfs}", e) from None
        finally:
            posix.close(oldroot)
            posix.close(newroot)


# -- after pivot_root: paths are the container's ---------------------------------------
def _dev_null_fd() -> int:
    """An O_PATH fd of the container's /dev/null, verified to be char 1:3 (CVE-2025-31133)."""
    root = posix.open("/", posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        fd = safepath.open_in_root(root, "/dev/null", posix.O_PATH | posix.O_NOFOLLOW)
    except OSError as e:
        raise SystemSetupError(f"/dev/null in the container: {posix.strerror(e.errno or 0)}"
                               ) from None
    finally:
        posix.close(root)
    st = posix.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or posix.major(st.st_rdev) != 1 or posix.minor(st.st_rdev) != 3:
        posix.close(fd)
        raise SystemSetupError("/dev/null in the container is not the null device (char 1:3); "
                               "refusing to use it to mask paths")
    return fd


def mask_paths(paths: list[str]) -> None:
    if not paths:
        return
    null = _dev_null_fd()
    root = posix.open("/", posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        for p in paths:
            try:
                fd = sc.openat2(root, p.lstrip("/") or ".", posix.O_PATH | posix.O_NOFOLLOW,
                                sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_SYMLINKS)
            except FileNotFoundError:
                continue
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise SystemSetupError(f"masked path {p} must not be a symlink") from None
                raise SystemSetupError(f"masked path {p}: {posix.strerror(e.errno or 0)}"
                                       ) from None
            try:
                mode = posix.fstat(fd).st_mode
                if stat.S_ISLNK(mode):
                    raise SystemSetupError(f"masked path {p} must not be a symlink")
                target = safepath.fd_path(fd)
                if stat.S_ISDIR(mode):
                    sc.mount("tmpfs", target, "tmpfs", sc.MS_RDONLY, None)
                else:
                    sc.mount(safepath.fd_path(null), target, None, sc.MS_BIND)
            except OSError as e:
                raise SystemSetupError(f"cannot mask {p}: {posix.strerror(e.errno or 0)}") from None
            finally:
                posix.close(fd)
    finally:
        posix.close(root)
        posix.close(null)


def readonly_paths(paths: list[str]) -> None:
    root = posix.open("/", posix.O_PATH | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        for p in paths:
            # Symlinks are followed inside the container's root (never out of it), so the
            # file a link names is made read-only, not the link (as runc does after pivot).
            try:
                fd = safepath.open_in_root(root, p, posix.O_PATH)
            except FileNotFoundError:
                continue
            try:
                sc.mount(safepath.fd_path(fd), safepath.fd_path(fd), None,
                         sc.MS_BIND | sc.MS_REC)
            finally:
                posix.close(fd)
            fd = safepath.open_in_root(root, p, posix.O_PATH)
            try:
                path = safepath.fd_path(fd)
                keep = preserved_flags(path)
                sc.mount(None, path, None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | keep)
            except OSError as e:
                raise SystemSetupError(f"cannot make {p} read-only: {posix.strerror(e.errno or 0)}"
                                       ) from None
            finally:
                posix.close(fd)
    finally:
        posix.close(root)


def readonly_root() -> None:
    keep = preserved_flags("/")
    sc.mount(None, "/", None, sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | keep)


def write_sysctls(sysctls: dict[str, str], proc: str | None = None) -> None:
    """Write ``linux.sysctl`` through a procfs of the runtime's own (CVE-2025-52881).

    The handle comes from a private procfs instance (fsopen/fsmount), so no mount over the
    container's /proc can redirect it; where the kernel refuses one (a user namespace whose
    /proc is already partly masked), the container's /proc is used, after proving it is
    the root of a procfs. Either way the walk follows no symlink and crosses no mount point,
    and the file written must be on procfs. ``proc`` names the procfs mount to use instead
    (tests)."""
    if not sysctls:
        return
    from isobox.oci.config import sysctl_file

    if proc is not None:
        base = safepath.open_procfs(proc)
    else:
        try:
            base = safepath.private_procfs()
        except OSError:
            base = safepath.open_procfs("/proc")
    try:
        for key, value in sysctls.items():
            try:
                safepath.proc_write(base, "sys/" + sysctl_file(key), value.encode())
            except SystemSetupError as e:
                raise SystemSetupError(f"sysctl {key}={value!r}: {e}") from None
            except OSError as e:
                raise SystemSetupError(f"sysctl {key}={value!r}: {posix.strerror(e.errno or 0)}"
                                       ) from None
    finally:
        posix.close(base)
