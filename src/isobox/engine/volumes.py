"""Named volumes with Docker's ``local`` driver semantics.

Layout: ``<root>/volumes/<name>/_data`` (what containers see) and ``meta.json`` beside it.
Create and remove hold an flock on ``<root>/volumes/.lock``; copy-up holds the volume's own
``lock`` file, so a slow copy does not block other volumes. A volume appears and disappears
by one rename, so a crash never leaves a half-made one visible.

:meth:`VolumeStore.copy_up` fills an empty volume from the image the first time it is used.
The image path is resolved inside the rootfs (``openat2(RESOLVE_IN_ROOT)``) and the tree is
copied with ``*at`` calls on directory fds that never follow a symlink (catalogue case 42).
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from isobox.atomicfile import atomic_file
from isobox.engine.mountspec import VOLUME_NAME_RE
from isobox.errors import ConfigError, ConflictError, NotFoundError, SystemSetupError
from isobox.filelock import locked_file
from isobox.linux import safepath

ANONYMOUS_LABEL = "com.docker.volume.anonymous"
LOCAL_DRIVER_OPTIONS = ("type", "device", "o", "size")
_MAX_DEPTH = 256
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    driver: str
    mountpoint: str
    created_at: str                       # RFC 3339, UTC
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    initialized: bool = False             # first use happened (copy-up done or skipped)

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels


def volume_doc(v: VolumeInfo) -> dict[str, Any]:
    """Docker's ``Volume`` JSON (``volume inspect``, ``GET /volumes``)."""
    return {"CreatedAt": v.created_at, "Driver": v.driver, "Labels": dict(v.labels),
            "Mountpoint": v.mountpoint, "Name": v.name, "Options": dict(v.options),
            "Scope": "local"}


def _check_name(name: str) -> None:
    if len(name) < 2:
        raise ConfigError("", f"create {name}: volume name is too short, names should be at "
                          "least two alphanumeric characters")
    if not VOLUME_NAME_RE.fullmatch(name):
        raise ConfigError("", f'create {name}: "{name}" includes invalid characters for a '
                          'local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. '
                          "If you intended to pass a host directory, use absolute path")


def tree_size(path: str) -> int:
    """Bytes of the files below ``path`` (hard links counted once; symlinks not followed)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


class VolumeStore:
    def __init__(self, root: str) -> None:
        self.root = root
        self.dir = os.path.join(root, "volumes")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self._lock_path = os.path.join(self.dir, ".lock")

    # -- paths ----------------------------------------------------------------------------
    def _vol_dir(self, name: str) -> str:
        if not VOLUME_NAME_RE.fullmatch(name):     # never a path outside the volumes dir
            raise NotFoundError(f"get {name}: no such volume")
        return os.path.join(self.dir, name)

    def data_path(self, name: str) -> str:
        """The host directory mounted into containers (``Mountpoint``)."""
        return os.path.join(self._vol_dir(name), "_data")

    path = data_path

    # -- metadata -------------------------------------------------------------------------
    def _read_meta(self, name: str) -> dict[str, Any] | None:
        try:
            with open(os.path.join(self._vol_dir(name), "meta.json"), "rb") as f:
                data = json.load(f)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as e:
            raise SystemSetupError(f"volume {name}: unreadable meta.json: {e}") from None
        return data if isinstance(data, dict) else None

    @staticmethod
    def _write_meta(vol_dir: str, meta: dict[str, Any]) -> None:
        with atomic_file(os.path.join(vol_dir, "meta.json"), 0o600) as f:
            f.write(json.dumps(meta, indent=1, sort_keys=True).encode())

    def _info(self, name: str, meta: dict[str, Any]) -> VolumeInfo:
        return VolumeInfo(name=name, driver=str(meta.get("Driver", "local")),
                          mountpoint=self.data_path(name),
                          created_at=str(meta.get("CreatedAt", "")),
                          labels=dict(meta.get("Labels") or {}),
                          options=dict(meta.get("Options") or {}),
                          initialized=bool(meta.get("Initialized", False)))

    # -- API ------------------------------------------------------------------------------
    def create(self, name: str = "", labels: dict[str, str] | None = None,
               driver: str = "local", options: dict[str, str] | None = None) -> VolumeInfo:
        """Create a volume; an existing name returns the existing volume (as Docker does).
        An empty name makes an anonymous volume with a random 64-hex name."""
        anonymous = not name
        if anonymous:
            name = secrets.token_hex(32)
        _check_name(name)
        if driver not in ("", "local"):
            raise NotFoundError(f'create {name}: error looking up volume plugin {driver}: '
                                f'plugin "{driver}" not found')
        for key in options or {}:
            if key not in LOCAL_DRIVER_OPTIONS:
                raise ConfigError("", f'create {name}: invalid option: "{key}"')
            raise ConfigError("", f'create {name}: the local driver option "{key}" is not '
                              "supported by isobox (only plain directory volumes are)")
        labels = dict(labels or {})
        if anonymous:
            labels.setdefault(ANONYMOUS_LABEL, "")
        with locked_file(self._lock_path):
            self._sweep_locked()
            meta = self._read_meta(name)
            if meta is not None:
                return self._info(name, meta)
            tmp = os.path.join(self.dir, f".new-{name}-{secrets.token_hex(4)}")
            os.mkdir(tmp, 0o701)
            try:
                os.mkdir(os.path.join(tmp, "_data"), 0o755)
                meta = {"Name": name, "Driver": "local", "Labels": labels,
                        "Options": dict(options or {}),
                        "CreatedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "Initialized": False}
                self._write_meta(tmp, meta)
                final = self._vol_dir(name)
                if os.path.lexists(final):     # a stray dir without meta (crash debris)
                    shutil.rmtree(final)
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return self._info(name, meta)

    def get(self, name: str) -> VolumeInfo:
        meta = self._read_meta(name)
        if meta is None:
            raise NotFoundError(f"get {name}: no such volume")
        return self._info(name, meta)

    def list(self) -> builtins.list[VolumeInfo]:
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name.startswith(".") or not VOLUME_NAME_RE.fullmatch(name):
                continue
            meta = self._read_meta(name)
            if meta is not None:
                out.append(self._info(name, meta))
        return out

    def inspect(self, name: str) -> dict[str, Any]:
        """Docker's ``VolumeInspect`` shape."""
        return volume_doc(self.get(name))

    def remove(self, name: str, force: bool = False,
               in_use_by: builtins.list[str] | None = None
               ) -> None:
        """Remove a volume. ``in_use_by`` lists the containers using it (the store does not
        know containers); a non-empty list refuses, even with ``force`` (as Docker does);
        ``force`` only makes a missing volume a no-op."""
        if in_use_by:
            raise ConflictError(f"remove {name}: volume is in use - [{' '.join(in_use_by)}]")
        with locked_file(self._lock_path):
            try:
                self.get(name)
            except NotFoundError:
                if force:
                    return
                raise
            self._remove_locked(name)

    def _sweep_locked(self) -> None:
        """Remove what a crash left of a create or a remove: with the volumes lock held no
        ``.new-*`` or ``.del-*`` directory is anyone's work in progress."""
        for entry in os.listdir(self.dir):
            if entry.startswith((".new-", ".del-")):
                shutil.rmtree(os.path.join(self.dir, entry), ignore_errors=True)

    @contextmanager
    def _vol_lock(self, name: str) -> Iterator[None]:
        if not os.path.isdir(self._vol_dir(name)):
            raise NotFoundError(f"get {name}: no such volume")
        with locked_file(os.path.join(self._vol_dir(name), "lock")):
            yield

    def _remove_locked(self, name: str) -> None:
        vol = self._vol_dir(name)
        with self._vol_lock(name):       # wait for a copy-up in progress
            trash = os.path.join(self.dir, f".del-{name}-{secrets.token_hex(4)}")
            os.rename(vol, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def prune(self, in_use: set[str], *, anonymous_only: bool = False,
              select: Callable[[VolumeInfo], bool] | None = None
              ) -> tuple[builtins.list[str], int]:
        """Remove every volume not in ``in_use`` (only anonymous ones with
        ``anonymous_only``, Docker 23's default; only those ``select`` accepts, when given);
        returns (names, bytes reclaimed)."""
        removed: builtins.list[str] = []
        reclaimed = 0
        with locked_file(self._lock_path):
            self._sweep_locked()
            for v in self.list():
                if v.name in in_use or (anonymous_only and not v.anonymous):
                    continue
                if select is not None and not select(v):
                    continue
                reclaimed += tree_size(v.mountpoint)
                self._remove_locked(v.name)
                removed.append(v.name)
        return removed, reclaimed

    def mark_initialized(self, name: str) -> None:
        """Record the first use of a volume mounted without copy-up (``nocopy``)."""
        with self._vol_lock(name):
            meta = self._read_meta(name)
            if meta is None:
                raise NotFoundError(f"get {name}: no such volume")
            if not meta.get("Initialized"):
                meta["Initialized"] = True
                self._write_meta(self._vol_dir(name), meta)

    # -- copy-up --------------------------------------------------------------------------
    def copy_up(self, name: str, image_rootfs: str, path_in_image: str) -> None:
        """Fill the volume from ``path_in_image`` of the image, the first time it is used and
        only if it is empty. The path is resolved inside ``image_rootfs``; a missing path
        copies nothing and is no first use (as podman: a later container's image may fill
        it); a path that is not a directory, or cannot be resolved, fails and leaves the
        volume as it was."""
        self.get(name)
        vol = self._vol_dir(name)
        with self._vol_lock(name):
            meta = self._read_meta(name)
            if meta is None:
                raise NotFoundError(f"get {name}: no such volume")
            if meta.get("Initialized"):
                return
            data_fd = os.open(self.data_path(name), _NOFOLLOW_DIR)
            try:
                used = bool(os.listdir(data_fd)) or self._copy_from_image(
                    data_fd, image_rootfs, path_in_image, name)
            finally:
                os.close(data_fd)
            if used:  # an image without that path leaves the volume to a later first use
                meta["Initialized"] = True
                self._write_meta(vol, meta)

    def _copy_from_image(self, data_fd: int, image_rootfs: str, path_in_image: str,
                         name: str) -> bool:
        """Whether the image had a directory there (then copied, even if empty)."""
        where = f"volume {name}: copy-up of {path_in_image} from the image"
        rootfd = os.open(image_rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                src_fd = safepath.open_in_root(rootfd, path_in_image,
                                               os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                return False                 # nothing in the image there: nothing to copy
            except NotADirectoryError:
                raise ConfigError("", f"{where}: not a directory in the image") from None
            except OSError as e:
                raise ConfigError("", f"{where}: cannot resolve it inside the image: "
                                  f"{os.strerror(e.errno or 0)}") from None
        finally:
            os.close(rootfd)
        try:
            try:
                _Copier(data_fd).copy_dir(src_fd, data_fd, "", 0)
                _copy_meta(src_fd, data_fd, os.fstat(src_fd))
            except BaseException as e:
                _empty_dir(data_fd)
                if isinstance(e, OSError):
                    raise SystemSetupError(f"{where}: {e}") from None
                raise
        finally:
            os.close(src_fd)
        return True


def _empty_dir(dir_fd: int) -> None:
    for entry in os.listdir(dir_fd):
        try:
            st = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(entry, dir_fd=dir_fd)
            else:
                os.unlink(entry, dir_fd=dir_fd)
        except OSError:
            pass


def _copy_xattrs(src: int, dst: int) -> None:
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for attr in names:
        try:
            os.setxattr(dst, attr, os.getxattr(src, attr))
        except OSError:
            pass                             # optional: unsupported or not permitted here


def _copy_meta(src: int, dst: int, st: os.stat_result) -> None:
    """Ownership, mode, xattrs and times of ``src`` onto ``dst`` (both real fds)."""
    os.fchown(dst, st.st_uid, st.st_gid)
    os.fchmod(dst, stat.S_IMODE(st.st_mode))
    _copy_xattrs(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


class _Copier:
    """Copies a tree between directory fds; nothing is ever opened through a symlink."""

    def __init__(self, dst_root: int) -> None:
        self.dst_root = dst_root
        self.links: dict[tuple[int, int], str] = {}    # (dev, ino) → path below dst_root

    def copy_dir(self, src: int, dst: int, rel: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise OSError(errno.ELOOP, f"more than {_MAX_DEPTH} nested directories at "
                          f"/{rel}")
        for entry in sorted(os.listdir(src)):
            st = os.stat(entry, dir_fd=src, follow_symlinks=False)
            child_rel = f"{rel}/{entry}" if rel else entry
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                self._dir(src, dst, entry, child_rel, depth)
            elif stat.S_ISREG(mode):
                self._file(src, dst, entry, child_rel, st)
            elif stat.S_ISLNK(mode):
                target = os.readlink(entry, dir_fd=src)
                os.symlink(target, entry, dir_fd=dst)
                os.chown(entry, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
                os.utime(entry, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst,
                         follow_symlinks=False)
            elif stat.S_ISFIFO(mode):
                os.mkfifo(entry, 0o600, dir_fd=dst)
                fd = os.open(entry, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst)
                try:
                    os.chown(entry, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
                    os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(mode))
                finally:
                    os.close(fd)
            # device nodes and sockets are not copied into a volume on the host

    def _dir(self, src: int, dst: int, entry: str, rel: str, depth: int) -> None:
        s = os.open(entry, _NOFOLLOW_DIR, dir_fd=src)
        try:
            os.mkdir(entry, 0o700, dir_fd=dst)
            d = os.open(entry, _NOFOLLOW_DIR, dir_fd=dst)
            try:
                self.copy_dir(s, d, rel, depth + 1)
                _copy_meta(s, d, os.fstat(s))
            finally:
                os.close(d)
        finally:
            os.close(s)

    def _file(self, src: int, dst: int, entry: str, rel: str, st: os.stat_result) -> None:
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:
            os.link(self.links[key], entry, src_dir_fd=self.dst_root, dst_dir_fd=dst,
                    follow_symlinks=False)
            return
        s = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                    dir_fd=src)
        try:
            sst = os.fstat(s)
            if not stat.S_ISREG(sst.st_mode) or sst.st_ino != st.st_ino:
                raise OSError(errno.EAGAIN, f"/{rel} changed while it was being copied")
            d = os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                        | os.O_CLOEXEC, 0o600, dir_fd=dst)
            try:
                _copy_data(s, d, sst.st_size)
                _copy_meta(s, d, sst)
            finally:
                os.close(d)
        finally:
            os.close(s)
        if st.st_nlink > 1:
            self.links[key] = rel


def _copy_data(src: int, dst: int, size: int) -> None:
    try:
        while True:
            n = os.copy_file_range(src, dst, 1 << 30)
            if n == 0:
                return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(src, 1 << 20):
        os.write(dst, chunk)
