"""``cp``: copy files between a container's root filesystem and the host, or a tar stream.

Security (catalogue cases 48-50): every container path is resolved by
``openat2(RESOLVE_IN_ROOT)`` against an fd of the container's root, so ``..``, absolute
symlinks and ``/proc/1/root`` stay inside it; the archive is then read or written relative to
fds pinned there (a symlink swapped in later is refused by ``O_NOFOLLOW`` or resolved inside
the pinned directory). Writing into a container goes through the layer unpacker
(``images.unpack``: no ``tarfile.extract``, devices skipped, ``.wh.`` names kept as
plain files as Docker's cp does, never deleting what the destination holds); reading builds
the tar with the layer writer's fd walk, which stores symlinks as symlinks.

A running container is copied as its processes see it: the root is its init's
``/proc/PID/root``, in the container's mount namespace, so volumes, bind mounts, tmpfs and
the ``/etc`` files the engine binds in are read and written where the container has them.
A stopped container's root is its root filesystem alone (volumes are not mounted then).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, cast

from isobox.engine.state import ContainerRow
from isobox.errors import ConfigError, ConflictError, IsoboxError, NotFoundError
from isobox.linux import safepath

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
LIVE = ("running", "paused", "restarting")


@dataclass(frozen=True)
class PathStat:
    """Docker's ``X-Docker-Container-Path-Stat``: what a container path is."""

    name: str
    size: int
    mode: int
    mtime: float
    link_target: str


@contextlib.contextmanager
def container_root(engine: Engine, ref: str) -> Iterator[tuple[ContainerRow, int]]:
    """(record, O_PATH fd of the container's root filesystem). A stopped container's root
    is mounted for the duration (under its lock, so it cannot start meanwhile) and
    unmounted afterwards unless it was mounted before."""
    row = engine.get(ref)
    if row.status in LIVE:
        fd = _process_root(row)
        if fd < 0:  # between two runs (restarting): its root filesystem as the host has it
            snap = engine.snapshots.get(row.id)
            if not os.path.ismount(snap.rootfs):
                raise ConflictError(f"container {row.name}: root filesystem is not mounted")
            fd = os.open(snap.rootfs, _PATH_DIR)
        try:
            yield row, fd
        finally:
            os.close(fd)
        return
    with engine.locked(row.id) as row:
        if engine.effective_status(row) not in ("created", "exited"):
            raise ConflictError(f"container {row.name} is {engine.effective_status(row)}")
        snap = engine.snapshots.get(row.id)
        was_mounted = os.path.ismount(snap.rootfs)
        if not was_mounted:
            engine.snapshots.mount(snap)
        try:
            fd = os.open(snap.rootfs, _PATH_DIR)
            try:
                yield row, fd
            finally:
                os.close(fd)
        finally:
            if not was_mounted:
                engine.snapshots.unmount(snap)


#: What the runtime mounts for the kernel's interfaces (the spec's default mounts): a
#: running container's root shows them, its root filesystem (and Docker's cp) does not.
KERNEL_MOUNTS = ("/proc", "/sys", "/dev")


def _kernel_mounts(rootfd: int) -> frozenset[tuple[int, int]]:
    """(device, inode) of the kernel-interface directories under ``rootfd``: an archive of
    ``/`` lists them empty instead of walking /proc and /sys, or /dev's device nodes."""
    out = set()
    for path in KERNEL_MOUNTS:
        try:
            fd = safepath.open_in_root(rootfd, path, os.O_PATH | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            out.add((st.st_dev, st.st_ino))
        finally:
            os.close(fd)
    return frozenset(out)


def _process_root(row: ContainerRow) -> int:
    """An O_PATH fd of the root of the container's init as that process sees it (its mount
    namespace: volumes and binds included), or -1 when there is none. The pid is pinned by
    a pidfd and checked to be in the container's cgroup before and after the open, so a
    pid reused by another process is never followed."""
    if row.pid <= 0:
        return -1
    try:
        pidfd = os.pidfd_open(row.pid)
    except OSError:
        return -1
    try:
        if not _in_container(row):
            return -1
        fd = os.open(f"/proc/{row.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        import select

        if select.select([pidfd], [], [], 0)[0] or not _in_container(row):
            os.close(fd)  # it exited meanwhile: the pid may be another process's now
            return -1
        return fd
    except OSError:
        return -1
    finally:
        os.close(pidfd)


def _in_container(row: ContainerRow) -> bool:
    try:
        with open(f"/proc/{row.pid}/cgroup") as f:
            return row.id in f.read()
    except OSError:
        return False


def export_snapshot_id(engine: Engine, ref: str) -> str:
    """The snapshot ``export`` writes for container ``ref`` (its root is the snapshot of the
    same ID), checked to exist; a VM's filesystem is in its disk image and is refused."""
    from isobox.images.snapshots import Snapshots

    row = engine.get(ref)
    if row.options.get("isolation") == "vm":
        raise ConfigError("export", f"{ref} is a VM: its filesystem is in a disk image; copy "
                                    f"it out with `isobox cp {ref}:/ -`")
    Snapshots(engine.store).get(row.id)
    return row.id


def _vm(engine: Engine, ref: str) -> ContainerRow | None:
    """The record of ``ref`` when it is a micro-VM: its files are on the guest's disk, reached
    through the guest agent (engine.vm_copy) instead of a mounted root filesystem."""
    row = engine.get(ref)
    return row if row.options.get("isolation") == "vm" else None


# ------------------------------------------------------------------------------ lookup

def _not_found(path: str, row: ContainerRow) -> NotFoundError:
    return NotFoundError(f"Could not find the file {path} in container {row.name}")


def _split(path: str) -> tuple[str, str]:
    comps = safepath.components(path)
    if not comps:
        return "", ""
    return "/".join(comps[:-1]), comps[-1]


def open_container_path(rootfd: int, path: str, *, follow: bool) -> tuple[int, int, str]:
    """(O_PATH fd of the parent directory, O_PATH fd of the entry, its name), both resolved
    inside the root. The final symlink is followed (inside the root) only with ``follow``,
    or when the path ends with ``/`` or ``/.`` (Docker)."""
    if path.endswith(("/", "/.")) or not safepath.components(path):
        follow = True
    parent_path, name = _split(path)
    if name == "..":
        follow = True
    pfd = safepath.open_in_root(rootfd, parent_path, os.O_PATH | os.O_DIRECTORY)
    try:
        if follow:
            efd = safepath.open_in_root(rootfd, path, os.O_PATH)
        else:
            efd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
    except BaseException:
        os.close(pfd)
        raise
    return pfd, efd, name or "/"


def efd_is_name(follow: bool, path: str) -> bool:
    """Whether :func:`open_container_path` opened the entry by name without following."""
    comps = safepath.components(path)
    return not (follow or path.endswith(("/", "/.")) or not comps or comps[-1] == "..")


def stat_path(engine: Engine, ref: str, path: str) -> PathStat:
    """``HEAD /containers/{id}/archive``: the entry at ``path`` (symlinks not followed)."""
    if (vm := _vm(engine, ref)) is not None:
        from isobox.engine.vm_copy import vm_stat

        return vm_stat(engine, vm, path)
    with container_root(engine, ref) as (row, rootfd):
        try:
            pfd, efd, name = open_container_path(rootfd, path, follow=False)
        except OSError:
            raise _not_found(path, row) from None
        try:
            st = os.fstat(efd)
            target = os.readlink("", dir_fd=efd) if stat.S_ISLNK(st.st_mode) else ""
            return PathStat(name, st.st_size, st.st_mode, st.st_mtime, target)
        finally:
            os.close(efd)
            os.close(pfd)


# ------------------------------------------------------------------------------ out

class _Counting:
    """A write-only stream with ``tell()`` (``tarfile`` asks it; a pipe cannot answer)."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.pos = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        self.out.flush()


def open_tar_writer(out: BinaryIO) -> tarfile.TarFile:
    return tarfile.TarFile(fileobj=cast(BinaryIO, _Counting(out)), mode="w",
                           format=tarfile.PAX_FORMAT, encoding="utf-8",
                           errors="surrogateescape")


def _tar_entry(tf: tarfile.TarFile, dirfd: int, name: str, arcname: str, *,
               owner: tuple[int, int] | None,
               pruned: frozenset[tuple[int, int]] = frozenset()) -> None:
    """Write the tree at ``name`` below ``dirfd`` to ``tf`` as ``arcname`` (or its contents
    at the top when ``arcname`` is ""); the directories ``pruned`` (device, inode) are
    written without their contents."""
    from isobox.images.layertar import _Entry, _walk, _Writer

    uid, gid = owner if owner is not None else (None, None)
    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        dfd = os.open(name, _DIR, dir_fd=dirfd)
        try:
            w = _Writer(tf, "plain", arcname, uid, gid)
            if arcname:
                w.prefix_dirs(os.fstat(dfd))
            for e in _walk(dfd, None, lambda s: (s.st_dev, s.st_ino) in pruned):
                w.entry(e)
        finally:
            os.close(dfd)
        return
    _Writer(tf, "plain", "", uid, gid).entry(_Entry(dirfd, name, arcname or name, st))


def _archive_name(path: str, rename: str | None) -> str:
    if rename is not None:
        return rename
    if path.endswith("/.") or path == ".":
        return ""
    return posixpath.basename(path.rstrip("/")) or ""


def copy_from_container(engine: Engine, ref: str, path: str, out: BinaryIO, *,
                        follow: bool = False, rename: str | None = None,
                        owner: tuple[int, int] | None = None,
                        before: Callable[[PathStat], None] | None = None) -> PathStat:
    """Write ``path`` of the container to ``out`` as a tar stream (``docker cp C:path -``).

    The top entry is the path's base name (``rename`` overrides it; ``""`` or a path
    ending ``/.`` puts a directory's contents at the top). ``owner`` overrides ownership.
    ``before(stat)`` runs once the path is resolved and pinned, before the first byte: what
    it reports (``GET /archive``'s stat header) is what is archived, even if the container
    swaps the path meanwhile (case 49)."""
    if (vm := _vm(engine, ref)) is not None:
        from isobox.engine.vm_copy import vm_copy_from, vm_stat

        if before is not None:
            before(vm_stat(engine, vm, path))
        return vm_copy_from(engine, vm, path, out, follow=follow,
                            arcname=_archive_name(path, rename), owner=owner)
    with container_root(engine, ref) as (row, rootfd):
        try:
            pfd, efd, name = open_container_path(rootfd, path, follow=follow)
        except NotADirectoryError:
            raise ConfigError(path, "not a directory") from None
        except OSError:
            raise _not_found(path, row) from None
        try:
            st = os.fstat(efd)
            if path.endswith("/") and not stat.S_ISDIR(st.st_mode):
                raise ConfigError(path, "not a directory")
            arcname = _archive_name(path, rename)
            target = os.readlink("", dir_fd=efd) if stat.S_ISLNK(st.st_mode) else ""
            pst = PathStat(name, st.st_size, st.st_mode, st.st_mtime, target)
            if before is not None:
                before(pst)
            tf = open_tar_writer(out)
            if stat.S_ISDIR(st.st_mode):  # walked from its own fd, pinned in the root
                _tar_entry(tf, efd, ".", arcname, owner=owner, pruned=_kernel_mounts(rootfd))
            elif efd_is_name(follow, path):  # opened by name in the pinned parent
                _tar_entry(tf, pfd, name, arcname or name, owner=owner)
            else:  # a symlink followed inside the root: read through the pinned inode
                _tar_file(tf, efd, st, arcname or name, owner)
            tf.close()
            return pst
        finally:
            os.close(efd)
            os.close(pfd)


def _tar_file(tf: tarfile.TarFile, efd: int, st: os.stat_result, arcname: str,
              owner: tuple[int, int] | None) -> None:
    """One non-directory entry reached through an O_PATH fd (a followed symlink)."""
    ti = tarfile.TarInfo(arcname)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = owner if owner is not None else (st.st_uid, st.st_gid)
    ti.mtime = int(st.st_mtime)
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISLNK(st.st_mode):
            ti.type = tarfile.SYMTYPE
            ti.linkname = os.readlink("", dir_fd=efd)
        elif stat.S_ISFIFO(st.st_mode):
            ti.type = tarfile.FIFOTYPE
        else:
            ti.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        tf.addfile(ti)
        return
    # Re-open the pinned inode for reading (a regular file: no FIFO can block us).
    fd = os.open(safepath.fd_path(efd), os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    with open(fd, "rb", buffering=0, closefd=True) as f:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(
                now.st_mode):
            raise ConflictError(f"{arcname} changed while being read")
        os.set_blocking(fd, True)
        ti.size = now.st_size
        tf.addfile(ti, cast(BinaryIO, f))


# ------------------------------------------------------------------------------ in

def copy_to_container(engine: Engine, ref: str, path: str, stream: BinaryIO) -> None:
    """Extract the tar ``stream`` into the existing directory ``path`` of the container
    (``docker cp - C:dir``, ``PUT /containers/{id}/archive``)."""
    if (vm := _vm(engine, ref)) is not None:
        from isobox.engine.vm_copy import vm_copy_to

        vm_copy_to(engine, vm, path, stream)
        return
    with container_root(engine, ref) as (row, rootfd):
        try:
            dfd = safepath.open_in_root(rootfd, path, os.O_PATH)
        except OSError:
            raise _not_found(path, row) from None
        try:
            if not stat.S_ISDIR(os.fstat(dfd).st_mode):
                raise ConfigError(path, "extraction point is not a directory")
            _unpack(stream, dfd)
        finally:
            os.close(dfd)


def _unpack(stream: BinaryIO, dirfd: int) -> None:
    from isobox.images.unpack import unpack_layer

    unpack_layer(stream, dirfd, whiteouts="plain", allow_devices=False)


# ------------------------------------------------------------------------------ host side

class _PipeWriter(threading.Thread):
    """Runs ``produce(out)`` in a thread writing into a pipe; the caller reads ``reader``."""

    def __init__(self, produce: object) -> None:
        super().__init__(daemon=True)
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        self.reader = os.fdopen(rfd, "rb")
        self._writer = os.fdopen(wfd, "wb")
        self._produce = produce
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._produce(self._writer)  # type: ignore[operator]
        except BrokenPipeError:
            pass
        except BaseException as e:  # handed to the caller
            self.error = e
        finally:
            with contextlib.suppress(OSError):
                self._writer.close()

    def finish(self) -> None:
        self.reader.close()
        self.join()
        if self.error is not None:
            raise self.error


def _host_kind(path: str) -> str:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    return "dir" if stat.S_ISDIR(st.st_mode) else "file"


def _dest_plan(dest: str, dest_kind: str, src_is_dir: bool, src_base: str,
               src_contents: bool) -> tuple[str, str]:
    """Docker's cp destination rules: (directory to extract into, top name in the tar)."""
    if dest_kind == "dir":
        return dest, "" if src_contents else src_base
    if dest_kind == "file" and src_is_dir:
        raise ConfigError(dest, "cannot copy a directory to a file")
    if dest_kind == "missing" and dest.endswith("/") and not src_is_dir:
        raise NotFoundError(f"{dest}: no such directory")
    parent, base = posixpath.split(dest.rstrip("/") or "/")
    return parent or "/", base


def copy_out(engine: Engine, ref: str, src: str, dest: str, *, follow: bool = False,
             archive: bool = False) -> None:
    """``isobox cp C:SRC DEST`` onto the host. Extraction on the host uses the layer
    unpacker too: a hostile container cannot plant a symlink that redirects the write."""
    st = stat_path(engine, ref, src)
    src_is_dir = stat.S_ISDIR(st.mode)
    if follow and stat.S_ISLNK(st.mode) and (vm := _vm(engine, ref)) is not None:
        from isobox.engine.vm_copy import resolved_kind

        src_is_dir = resolved_kind(engine, vm, src) == "dir"
    elif follow and stat.S_ISLNK(st.mode):
        src_is_dir = False
        with container_root(engine, ref) as (_row, rootfd), contextlib.suppress(OSError):
            fd = safepath.open_in_root(rootfd, src, os.O_PATH)
            src_is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
            os.close(fd)
    where, top = _dest_plan(dest, _host_kind(dest), src_is_dir, st.name,
                            src.endswith("/."))
    if not os.path.isdir(where):
        raise NotFoundError(f"{where}: no such directory")
    owner = None if archive else (os.getuid(), os.getgid())
    producer = _PipeWriter(lambda out: copy_from_container(
        engine, ref, src, out, follow=follow, rename=top, owner=owner))
    producer.start()
    try:
        from isobox.images.unpack import unpack_layer

        unpack_layer(producer.reader, where, whiteouts="plain", allow_devices=False)
    finally:
        producer.finish()


def copy_in(engine: Engine, ref: str, src: str, dest: str, *, follow: bool = False,
            archive: bool = False) -> None:
    """``isobox cp SRC C:DEST`` from the host into the container."""
    try:
        hst = os.stat(src) if follow else os.lstat(src)
    except FileNotFoundError:
        raise NotFoundError(f"{src}: no such file or directory") from None
    src_is_dir = stat.S_ISDIR(hst.st_mode)
    dest_kind = _container_kind(engine, ref, dest)
    where, top = _dest_plan(dest, dest_kind, src_is_dir,
                            os.path.basename(src.rstrip("/")) or "/",
                            src.endswith("/."))
    owner = None if archive else (0, 0)

    def produce(out: BinaryIO) -> None:
        parent, base = os.path.split(os.path.abspath(src))
        if src.endswith("/."):
            parent, base = os.path.abspath(src), "."
        pfd = os.open(parent or "/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            tf = open_tar_writer(out)
            if follow and not src_is_dir and os.path.islink(src):
                fd = os.open(src, os.O_PATH | os.O_CLOEXEC)
                try:
                    _tar_file(tf, fd, os.fstat(fd), top, owner)
                finally:
                    os.close(fd)
            else:
                _tar_entry(tf, pfd, base, top, owner=owner)
            tf.close()
        finally:
            os.close(pfd)

    producer = _PipeWriter(produce)
    producer.start()
    try:
        copy_to_container(engine, ref, where, producer.reader)
    finally:
        producer.finish()


def _container_kind(engine: Engine, ref: str, path: str) -> str:
    if (vm := _vm(engine, ref)) is not None:
        from isobox.engine.vm_copy import resolved_kind

        return resolved_kind(engine, vm, path)
    try:
        st = stat_path(engine, ref, path.rstrip("/") + ("/." if path.endswith("/") else ""))
    except NotFoundError:
        return "missing"
    except IsoboxError:
        raise
    if stat.S_ISLNK(st.mode):
        with container_root(engine, ref) as (_row, rootfd):
            try:
                fd = safepath.open_in_root(rootfd, path, os.O_PATH)
            except OSError:
                return "missing"
            try:
                return "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            finally:
                os.close(fd)
    return "dir" if stat.S_ISDIR(st.mode) else "file"
