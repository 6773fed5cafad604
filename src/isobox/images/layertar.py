"""Write a directory tree as a deterministic OCI layer tar (gzip or plain).

Deterministic: names sorted depth-first, PAX format, numeric ids with empty user/group
names, no atime/ctime, whole-second mtimes from the files, gzip with mtime 0 and no file
name. The tree is read through directory fds with ``O_NOFOLLOW``: a symlink in it is stored,
never followed. ``source="overlay-upper"`` turns an overlay upper dir back into OCI
whiteouts (char 0:0 -> ``.wh.NAME``, opaque dir -> ``DIR/.wh..wh..opq``).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal, cast

from isobox.images.unpack import OPAQUE, WHITEOUT, allowed_xattr

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
GZIP_LEVEL = 6  # as Go's DefaultCompression, which docker and containerd use
COPY_BUF = 1 << 20


@dataclass(frozen=True)
class LayerBlob:
    digest: str  # "sha256:…" of the compressed bytes written
    size: int  # compressed size
    diff_id: str  # sha256 of the uncompressed tar
    uncompressed_size: int


class _Digesting:
    """A write-only stream that hashes and counts what passes through to ``out``."""

    def __init__(self, out: BinaryIO | _Digesting | gzip.GzipFile) -> None:
        self._out = out
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hasher.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


@dataclass(frozen=True)
class _Entry:
    parent: int  # fd of the directory holding ``name``
    name: str
    rel: str  # path below src_dir
    st: os.stat_result


def _walk(rootfd: int, exclude: Callable[[str], bool] | None,
          prune: Callable[[os.stat_result], bool] | None = None) -> Iterator[_Entry]:
    """Every entry below ``rootfd``, sorted, each directory before its children; an excluded
    directory is skipped with its subtree, a pruned one is listed without its subtree.
    Directories are opened with O_NOFOLLOW."""
    stack: list[tuple[int, str, Iterator[str]]] = [
        (os.dup(rootfd), "", iter(sorted(os.listdir(rootfd))))]
    try:
        while stack:
            dfd, drel, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(dfd)
                stack.pop()
                continue
            rel = f"{drel}/{name}" if drel else name
            if exclude is not None and exclude(rel):
                continue
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            yield _Entry(dfd, name, rel, st)
            if stat.S_ISDIR(st.st_mode) and not (prune is not None and prune(st)):
                cfd = os.open(name, O_DIR, dir_fd=dfd)
                stack.append((cfd, rel, iter(sorted(os.listdir(cfd)))))
    finally:
        for dfd, _, _ in stack:
            os.close(dfd)


def _xattrs(target: int | str) -> dict[str, bytes]:
    try:
        names = os.listxattr(target, follow_symlinks=isinstance(target, int))
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EPERM):
            return {}
        raise
    out: dict[str, bytes] = {}
    for n in sorted(names):
        try:
            out[n] = os.getxattr(target, n, follow_symlinks=isinstance(target, int))
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
                raise
    return out


class _Writer:
    def __init__(self, tf: tarfile.TarFile, source: str, prefix: str,
                 uid: int | None, gid: int | None) -> None:
        self.tf = tf
        self.overlay = source == "overlay-upper"
        self.prefix = prefix
        self.uid = uid
        self.gid = gid
        self.links: dict[tuple[int, int], str] = {}

    def info(self, name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = stat.S_IMODE(st.st_mode)
        ti.uid = st.st_uid if self.uid is None else self.uid
        ti.gid = st.st_gid if self.gid is None else self.gid
        ti.uname = ti.gname = ""
        ti.mtime = int(st.st_mtime)
        return ti

    def prefix_dirs(self, root_st: os.stat_result) -> None:
        """The directories of ``prefix`` (COPY into /app): the last one with the source
        root's metadata, the ones above it 0755."""
        comps = [c for c in self.prefix.split("/") if c and c != "."]
        for i in range(len(comps)):
            ti = self.info("/".join(comps[: i + 1]), root_st, tarfile.DIRTYPE)
            if i < len(comps) - 1:
                ti.mode = 0o755
            self.tf.addfile(ti)

    def entry(self, e: _Entry) -> None:
        name = f"{self.prefix}/{e.rel}" if self.prefix else e.rel
        mode = e.st.st_mode
        if stat.S_ISDIR(mode):
            self._dir(e, name)
        elif stat.S_ISREG(mode):
            self._file(e, name)
        elif stat.S_ISLNK(mode):
            ti = self.info(name, e.st, tarfile.SYMTYPE)
            ti.linkname = os.readlink(e.name, dir_fd=e.parent)
            self._add(ti, _xattrs(f"/proc/self/fd/{e.parent}/{e.name}"))
        elif stat.S_ISCHR(mode) and e.st.st_rdev == 0 and self.overlay:
            parent, _, base = name.rpartition("/")
            wh = f"{parent}/{WHITEOUT}{base}" if parent else WHITEOUT + base
            self.tf.addfile(self.info(wh, e.st, tarfile.REGTYPE))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            self._node(e, name)
        # sockets are not representable in tar: skipped, as GNU tar does

    def _add(self, ti: tarfile.TarInfo, xattrs: dict[str, bytes],
             data: BinaryIO | None = None) -> None:
        pax = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
               for k, v in xattrs.items() if allowed_xattr(k)}
        if pax:
            ti.pax_headers = pax
        self.tf.addfile(ti, data)

    def _dir(self, e: _Entry, name: str) -> None:
        fd = os.open(e.name, O_DIR, dir_fd=e.parent)
        try:
            xattrs = _xattrs(fd)
        finally:
            os.close(fd)
        self._add(self.info(name, e.st, tarfile.DIRTYPE), xattrs)
        if self.overlay and any(xattrs.get(k) == b"y" for k in OPAQUE_XATTRS):
            self.tf.addfile(self.info(f"{name}/{OPAQUE}", e.st, tarfile.REGTYPE))

    def _hardlink(self, e: _Entry, name: str) -> bool:
        if e.st.st_nlink < 2:
            return False
        key = (e.st.st_dev, e.st.st_ino)
        first = self.links.get(key)
        if first is None:
            self.links[key] = name
            return False
        ti = self.info(name, e.st, tarfile.LNKTYPE)
        ti.linkname = first
        self.tf.addfile(ti)
        return True

    def _file(self, e: _Entry, name: str) -> None:
        if self._hardlink(e, name):
            return
        # O_PATH first: a device node swapped in for the file (a container has CAP_MKNOD)
        # is never opened for reading, which for some devices acts (a watchdog arms)
        pfd = os.open(e.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=e.parent)
        try:
            if not stat.S_ISREG(os.fstat(pfd).st_mode):
                raise OSError(errno.EAGAIN, f"{e.rel} changed while being read", e.rel)
            fd = os.open(f"/proc/self/fd/{pfd}", O_FILE & ~os.O_NOFOLLOW)  # the pinned inode
        finally:
            os.close(pfd)
        with open(fd, "rb", buffering=0, closefd=True) as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EAGAIN, f"{e.rel} changed while being read", e.rel)
            os.set_blocking(fd, True)
            ti = self.info(name, st, tarfile.REGTYPE)
            ti.size = st.st_size
            self._add(ti, _xattrs(fd), cast(BinaryIO, f))

    def _node(self, e: _Entry, name: str) -> None:
        if self._hardlink(e, name):
            return
        kind = (tarfile.CHRTYPE if stat.S_ISCHR(e.st.st_mode) else
                tarfile.BLKTYPE if stat.S_ISBLK(e.st.st_mode) else tarfile.FIFOTYPE)
        ti = self.info(name, e.st, kind)
        if kind != tarfile.FIFOTYPE:
            ti.devmajor = os.major(e.st.st_rdev)
            ti.devminor = os.minor(e.st.st_rdev)
        self._add(ti, _xattrs(f"/proc/self/fd/{e.parent}/{e.name}"))


def write_layer(src_dir: str, out: BinaryIO, *,
                source: Literal["plain", "overlay-upper"] = "plain",
                compression: Literal["gzip", "none"] = "gzip",
                exclude: Callable[[str], bool] | None = None,
                prefix: str = "", uid: int | None = None, gid: int | None = None) -> LayerBlob:
    """Write the tree below ``src_dir`` to ``out`` as a layer; returns its digests.

    ``exclude(relpath)`` drops an entry (a directory with its subtree); ``prefix`` puts
    everything below that path; ``uid``/``gid`` override every entry's owner."""
    prefix = "/".join(c for c in prefix.split("/") if c and c != ".")
    if ".." in prefix.split("/"):
        raise ValueError(f"layer prefix {prefix!r} contains '..'")
    rootfd = os.open(src_dir, O_DIR)
    compressed = _Digesting(out)
    gz = (gzip.GzipFile(filename="", mode="wb", fileobj=cast(BinaryIO, compressed),
                        compresslevel=GZIP_LEVEL, mtime=0) if compression == "gzip" else None)
    plain = _Digesting(gz if gz is not None else compressed)
    try:
        tf = tarfile.TarFile(fileobj=cast(BinaryIO, plain), mode="w",
                             format=tarfile.PAX_FORMAT, encoding="utf-8",
                             errors="surrogateescape", copybufsize=COPY_BUF)
        w = _Writer(tf, source, prefix, uid, gid)
        if prefix:
            w.prefix_dirs(os.fstat(rootfd))
        for e in _walk(rootfd, exclude):
            w.entry(e)
        tf.close()
        if gz is not None:
            gz.close()
    finally:
        os.close(rootfd)
    return LayerBlob(compressed.digest, compressed.size, plain.digest, plain.size)
