"""The build context and file staging for ``COPY``/``ADD``.

* :class:`SourceRoot` is where sources come from: the context directory (filtered by
  ``.dockerignore``) or another stage's mounted root (``COPY --from``). Source paths are
  resolved *inside* that root (``openat2(RESOLVE_IN_ROOT)``): a symlink cannot lead out.
* :func:`content_hash` is the cache key part of the sources: paths, types, modes and file
  contents after ``.dockerignore`` (not mtimes, as BuildKit).
* :func:`copy_into` stages the sources into a build snapshot's root; destinations are
  resolved inside the root with :mod:`isobox.linux.safepath`, a symlink at the final
  component is replaced, never followed.
* :func:`lookup_user` resolves ``USER``/``--chown`` names from the image's ``/etc/passwd`` and
  ``/etc/group``, read inside the root, regular files only, at most 10 MiB (catalogue 43).
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import posixpath
import stat
from collections.abc import Generator, Iterator
from dataclasses import dataclass

from isobox.errors import ConfigError, ImageError, NotFoundError
from isobox.images import userdb
from isobox.images.build.dockerignore import Matcher
from isobox.images.userdb import MAX_USER_DB as MAX_USER_DB
from isobox.images.userdb import User as User
from isobox.images.userdb import read_bounded
from isobox.linux import safepath

O_NOFOLLOW_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
O_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
MAX_CONTAINERFILE = 4 * 1024 * 1024
_GLOB = set("*?[")
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


class BuildError(ImageError):
    """A build step cannot be done (bad source, destination, user …)."""


def reopen_regular(pathfd: int) -> int:
    """A readable fd of the regular file behind the O_PATH fd ``pathfd``; anything else (a
    FIFO, a device, a socket) is refused before it is ever opened (no hang, no device open
    with side effects such as arming a watchdog)."""
    if not stat.S_ISREG(os.fstat(pathfd).st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    return os.open(safepath.fd_path(pathfd), O_READ)


def read_containerfile(path: str) -> str:
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as e:
        raise NotFoundError(f"cannot read {path}: {e.strerror}") from None
    try:
        try:
            fd = reopen_regular(pfd)
        except OSError:
            raise ConfigError(path, "not a regular file") from None
    finally:
        os.close(pfd)
    try:
        data = read_bounded(fd, MAX_CONTAINERFILE)
    finally:
        os.close(fd)
    if len(data) > MAX_CONTAINERFILE:
        raise ConfigError(path, f"larger than {MAX_CONTAINERFILE} bytes")
    return data.decode("utf-8", errors="surrogateescape")


def find_containerfile(context_dir: str, given: str | None) -> str:
    if given:
        if given == "-":
            raise ConfigError("-f", "reading the Containerfile from stdin is not supported")
        return given if os.path.isabs(given) else os.path.abspath(given)
    for name in ("Containerfile", "Dockerfile"):
        path = os.path.join(context_dir, name)
        if os.path.isfile(path):
            return path
    raise NotFoundError(f"no Containerfile or Dockerfile in {context_dir}")


@dataclass(frozen=True)
class SourceEntry:
    """One file of a source tree as :meth:`SourceRoot.walk` found it: ``name`` in the
    directory fd ``dirfd`` (or, for the top of the walk, ``name == ""`` and ``dirfd`` is an
    O_PATH fd of the entry itself). Valid only until the walk moves on."""

    sub: str  # path relative to the walked source
    st: os.stat_result  # lstat
    dirfd: int
    name: str

    def _pathfd(self) -> int:
        if not self.name:
            return os.dup(self.dirfd)
        return os.open(self.name, O_NOFOLLOW_PATH, dir_fd=self.dirfd)

    def _check_same(self, fd: int) -> os.stat_result:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino, stat.S_IFMT(now.st_mode)) != (
                self.st.st_dev, self.st.st_ino, stat.S_IFMT(self.st.st_mode)):
            raise OSError(errno.EAGAIN, f"{self.sub or '.'} changed while being copied")
        return now

    def open_file(self) -> int:
        """A readable fd of this regular file, never following a symlink swapped in and
        never opening a FIFO or device swapped in."""
        pfd = self._pathfd()
        try:
            self._check_same(pfd)
            return reopen_regular(pfd)
        finally:
            os.close(pfd)

    def readlink(self) -> str:
        return os.readlink(self.name, dir_fd=self.dirfd)


@dataclass
class SourceRoot:
    """A directory sources are read from; ``matcher`` filters (the context only)."""

    path: str
    matcher: Matcher | None = None
    keep_owner: bool = False  # COPY --from keeps owners; context files become 0:0

    def open(self) -> int:
        return os.open(self.path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def excluded(self, rel: str) -> bool:
        return self.matcher is not None and rel not in (".", "") and self.matcher.excluded(rel)

    def resolved(self, rootfd: int, rel: str) -> str | None:
        """The root-relative path ``rel`` resolves to inside the root (symlinks followed
        inside it), or None when missing. Used for ``.dockerignore``: a symlink in the
        context must not reach a file the context excludes (Docker never sends those)."""
        try:
            fd = safepath.open_in_root(rootfd, rel)
        except OSError:
            return None
        try:
            real = os.readlink(safepath.fd_path(fd))
        finally:
            os.close(fd)
        root = os.readlink(safepath.fd_path(rootfd)).rstrip("/")
        if real == root or (root == "" and real == "/"):
            return "."
        if not real.startswith(root + "/"):
            raise BuildError(f"{rel} resolves outside {self._name()}")
        return real[len(root) + 1:]

    def _visible(self, rootfd: int, rel: str) -> bool:
        """``rel`` exists and neither it nor what it resolves to is excluded."""
        real = self.resolved(rootfd, rel)
        return real is not None and not self.excluded(rel) and not self.excluded(real)

    def expand(self, rootfd: int, pattern: str, what: str) -> list[str]:
        """Context-relative paths ``pattern`` names (wildcards per component)."""
        clean = posixpath.normpath("/" + pattern).lstrip("/")
        comps = safepath.components(clean)
        if not any(ch in _GLOB for ch in clean):
            rel = clean or "."
            real = self.resolved(rootfd, rel)
            if real is None:
                raise BuildError(f'{what}: "{pattern}" not found in {self._name()}')
            if self.excluded(rel) or self.excluded(real):
                raise BuildError(f'{what}: "{pattern}" is excluded by .dockerignore')
            return [rel]
        found = [""]
        for comp in comps:
            nxt = []
            for base in found:
                if not any(ch in _GLOB for ch in comp):
                    nxt.append(f"{base}/{comp}" if base else comp)
                    continue
                try:
                    fd = safepath.open_in_root(rootfd, base or ".", os.O_RDONLY | os.O_DIRECTORY)
                except OSError:
                    continue
                try:
                    names = sorted(os.listdir(fd))
                finally:
                    os.close(fd)
                nxt.extend(f"{base}/{n}" if base else n for n in names
                           if fnmatch.fnmatchcase(n, comp))
            found = nxt
        out = [rel for rel in found if self._visible(rootfd, rel)]
        if not out:
            raise BuildError(f'{what}: no source files were specified ("{pattern}" matches '
                             f"nothing in {self._name()})")
        return out

    def _name(self) -> str:
        return "the build context" if self.matcher is not None else "the source stage"

    def walk(self, rootfd: int, rel: str) -> Generator[SourceEntry, None, None]:
        """``rel`` (resolved inside the root) and everything below it, dirs before their
        contents, sorted. Everything below is reached through directory fds opened with
        O_NOFOLLOW: a symlink below is yielded, never followed, even one swapped in after
        it was listed. ``.dockerignore`` applies to the resolved path."""
        real = self.resolved(rootfd, rel)
        if real is None:
            raise FileNotFoundError(errno.ENOENT, "not found", rel)
        fd = safepath.open_in_root(rootfd, rel)
        # one frame per depth: (dir fd, its path, its subdirectories still to visit)
        stack: list[tuple[int, str, Iterator[tuple[str, os.stat_result]]]] = []
        try:
            st = os.fstat(fd)
            yield SourceEntry("", st, fd, "")
            if not stat.S_ISDIR(st.st_mode):
                return
            dfd, sub = os.open(".", _O_DIR, dir_fd=fd), ""
            while True:
                dirs: list[tuple[str, os.stat_result]] = []
                stack.append((dfd, sub, iter(dirs)))
                with os.scandir(dfd) as it:
                    names = sorted(e.name for e in it)
                for name in names:
                    child = f"{sub}/{name}" if sub else name
                    ctx_rel = child if real == "." else f"{real}/{child}"
                    est = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    is_dir = stat.S_ISDIR(est.st_mode)
                    if self.matcher is not None and self.matcher.excluded(ctx_rel, is_dir):
                        if is_dir and self.matcher.descend(ctx_rel):
                            dirs.append((name, est))  # an exception may match below
                        continue
                    yield SourceEntry(child, est, dfd, name)
                    if is_dir:
                        dirs.append((name, est))
                while stack:
                    pfd, psub, pending = stack[-1]
                    nxt = next(pending, None)
                    if nxt is None:
                        os.close(pfd)
                        stack.pop()
                        continue
                    name, est = nxt
                    sub = f"{psub}/{name}" if psub else name
                    dfd = os.open(name, _O_DIR, dir_fd=pfd)  # ELOOP: swapped for a symlink
                    cst = os.fstat(dfd)
                    if (cst.st_dev, cst.st_ino) != (est.st_dev, est.st_ino):
                        os.close(dfd)
                        raise OSError(errno.EAGAIN, f"{sub} changed while being copied")
                    break
                else:
                    return
        finally:
            for dfd, _, _ in stack:
                os.close(dfd)
            os.close(fd)


def content_hash(src: SourceRoot, patterns: list[str], what: str) -> str:
    """sha256 over the selected sources: paths, types, modes, sizes, contents, link targets."""
    h = hashlib.sha256()
    rootfd = src.open()
    try:
        for pattern in patterns:
            for rel in src.expand(rootfd, pattern, what):
                h.update(f"@{rel}\n".encode(errors="surrogateescape"))
                for e in src.walk(rootfd, rel):
                    st, mode = e.st, e.st.st_mode
                    h.update(f"{e.sub}\0{stat.S_IFMT(mode)}\0{stat.S_IMODE(mode):o}\0"
                             f"{st.st_size}\0".encode(errors="surrogateescape"))
                    if src.keep_owner:
                        h.update(f"{st.st_uid}:{st.st_gid}\0".encode())
                    if stat.S_ISREG(mode):
                        h.update(_file_digest(e))
                    elif stat.S_ISLNK(mode):
                        h.update(e.readlink().encode(errors="surrogateescape"))
                    h.update(b"\n")
    except OSError as err:
        raise BuildError(f"{what}: cannot read the sources: "
                         f"{err.strerror or os.strerror(err.errno or 0)}") from None
    finally:
        os.close(rootfd)
    return h.hexdigest()


def _file_digest(e: SourceEntry) -> bytes:
    """sha256 of the first ``st_size`` bytes (what a copy takes)."""
    d = hashlib.sha256()
    fd = e.open_file()
    try:
        remaining = e.st.st_size
        while remaining > 0 and (chunk := os.read(fd, min(_CHUNK, remaining))):
            d.update(chunk)
            remaining -= len(chunk)
    finally:
        os.close(fd)
    return d.digest()


# --------------------------------------------------------------------------- staging

@dataclass
class CopyOptions:
    chown: tuple[int, int] | None = None
    chmod: int | None = None
    add: bool = False  # ADD: local tar archives are extracted


def parse_chmod(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise ConfigError("--chmod", f"invalid mode {text!r} (octal expected)") from None
    if not 0 <= mode <= 0o7777:
        raise ConfigError("--chmod", f"invalid mode {text!r}")
    return mode


def is_remote(src: str) -> bool:
    low = src.lower()
    return low.startswith(("http://", "https://", "git@", "git://", "ssh://"))


def copy_into(src: SourceRoot, patterns: list[str], dest: str, rootfs: str, workdir: str,
              opts: CopyOptions, what: str) -> None:
    """Docker's COPY/ADD semantics: a directory's contents go into ``dest``; a file goes to
    ``dest`` or, when ``dest`` ends in ``/``, is an existing directory, or there are several
    sources, to ``dest/<name>``."""
    dest_abs = dest if dest.startswith("/") else posixpath.join(workdir or "/", dest)
    dest_abs = "/" + "/".join(safepath.components(posixpath.normpath(dest_abs)))
    srcfd = src.open()
    rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sources = [rel for p in patterns for rel in src.expand(srcfd, p, what)]
        dir_dest = dest.endswith("/") or dest in (".", "") or dest.endswith("/.") \
            or _is_dir_in_root(rootfd, dest_abs)
        if len(sources) > 1 and not dir_dest:
            raise BuildError(f"{what}: when using {what.split()[0]} with more than one source "
                             "file, the destination must be a directory and end with a /")
        for rel in sources:
            top = safepath.open_in_root(srcfd, rel)
            try:
                st = os.fstat(top)
                if opts.add and stat.S_ISREG(st.st_mode) and _tar_kind(top):
                    _extract(top, rootfd, dest_abs, what)
                    continue
            finally:
                os.close(top)
            if stat.S_ISDIR(st.st_mode):
                target = dest_abs
            elif dir_dest:
                target = posixpath.join(dest_abs, posixpath.basename(rel))
            else:
                target = dest_abs
            _copy_tree(src, srcfd, rel, rootfd, target, opts, what)
    finally:
        os.close(rootfd)
        os.close(srcfd)


def _is_dir_in_root(rootfd: int, path: str) -> bool:
    try:
        fd = safepath.open_in_root(rootfd, path)
    except OSError:
        return False
    try:
        return stat.S_ISDIR(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


def _owner(src: SourceRoot, st: os.stat_result, opts: CopyOptions) -> tuple[int, int]:
    if opts.chown is not None:
        return opts.chown
    return (st.st_uid, st.st_gid) if src.keep_owner else (0, 0)


def _copy_tree(src: SourceRoot, srcfd: int, rel: str, rootfd: int, target: str,
               opts: CopyOptions, what: str) -> None:
    walk = src.walk(srcfd, rel)
    dest = target
    try:
        for ent in walk:
            dest = posixpath.join(target, ent.sub) if ent.sub else target
            _copy_entry(src, ent, rootfd, dest, opts)
    except OSError as e:
        raise BuildError(f"{what}: cannot copy to {dest}: "
                         f"{e.strerror or os.strerror(e.errno or 0)}") from None
    finally:
        walk.close()


def _copy_entry(src: SourceRoot, ent: SourceEntry, rootfd: int, dest: str,
                opts: CopyOptions) -> None:
    sub, st = ent.sub, ent.st
    uid, gid = _owner(src, st, opts)
    mode = st.st_mode
    if stat.S_ISDIR(mode) and not sub:
        # The destination of a directory's contents: an existing one keeps its
        # owner and mode (COPY dir/ / must not change /); a new one is 0755, owned
        # by --chown or root, as BuildKit's mkdir -p.
        existed = _is_dir_in_root(rootfd, dest)
        fd = safepath.mkdir_all(rootfd, dest)
        try:
            if not existed and opts.chown is not None:
                os.chown(safepath.fd_path(fd), *opts.chown)
        finally:
            os.close(fd)
    elif stat.S_ISDIR(mode):
        fd = safepath.mkdir_all(rootfd, dest)
        try:
            os.chown(safepath.fd_path(fd), uid, gid)
            os.chmod(safepath.fd_path(fd), opts.chmod if opts.chmod is not None
                     else stat.S_IMODE(mode))
        finally:
            os.close(fd)
    elif stat.S_ISREG(mode):
        _write_file(rootfd, dest, ent, uid, gid, opts.chmod)
    elif stat.S_ISLNK(mode):
        parent, name = _replace_slot(rootfd, dest)
        try:
            os.symlink(ent.readlink(), name, dir_fd=parent)
            os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
    # sockets, fifos and devices in a context are skipped, as BuildKit does


def _replace_slot(rootfd: int, dest: str) -> tuple[int, str]:
    """(parent dir fd, name) with any non-directory at ``dest`` removed (never followed)."""
    parent, name = safepath.open_parent(rootfd, dest)
    try:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return parent, name
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "a directory is in the way", dest)
        os.unlink(name, dir_fd=parent)
        return parent, name
    except BaseException:
        os.close(parent)
        raise


def _write_file(rootfd: int, dest: str, e: SourceEntry, uid: int, gid: int,
                chmod: int | None) -> None:
    st = e.st
    infd = e.open_file()
    try:
        _write_from(rootfd, dest, infd, st, uid, gid, chmod)
    finally:
        os.close(infd)


def _write_from(rootfd: int, dest: str, infd: int, st: os.stat_result, uid: int, gid: int,
                chmod: int | None) -> None:
    parent, name = _replace_slot(rootfd, dest)
    try:
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                      0o600, dir_fd=parent)
    finally:
        os.close(parent)
    try:
        remaining = st.st_size
        while remaining > 0:
            n = os.sendfile(out, infd, None, min(remaining, 1 << 30))
            if n == 0:
                break
            remaining -= n
        os.fchown(out, uid, gid)
        os.fchmod(out, chmod if chmod is not None else stat.S_IMODE(st.st_mode))
        os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    finally:
        os.close(out)


_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
          (b"\x28\xb5\x2f\xfd", "zstd"))


def _tar_kind(fd: int) -> str | None:
    """The compression of a tar archive at ``fd`` ("none" for a plain tar), else None."""
    with open(reopen_regular(fd), "rb") as f:
        head = f.read(512)
        for magic, kind in _MAGIC:
            if head.startswith(magic):
                return kind
        if len(head) >= 262 and head[257:262] == b"ustar":
            return "none"
    return None


def _extract(fd: int, rootfd: int, dest_abs: str, what: str) -> None:
    """ADD of a local archive: unpack it (safely, whiteouts applied) into ``dest_abs``
    inside the root; ``unpack_layer`` sniffs and decompresses gzip/bzip2/xz/zstd itself."""
    from isobox.images.unpack import unpack_layer

    dfd = safepath.mkdir_all(rootfd, dest_abs)
    try:
        # by fd: the directory resolved inside the root, never a path string re-resolved
        with open(reopen_regular(fd), "rb") as raw:
            unpack_layer(raw, dfd, whiteouts="apply")
    finally:
        os.close(dfd)


# --------------------------------------------------------------------------- users
# The user database lives in isobox.images.userdb; builds report its errors as BuildError.


def read_user_db(rootfs: str, path: str) -> str | None:
    try:
        return userdb.read_user_db(rootfs, path)
    except userdb.UserLookupError as e:
        raise BuildError(str(e)) from None


def lookup_user(rootfs: str, spec: str, *, groups: bool = True) -> User:
    """``USER``/``--chown`` ``user[:group]`` (names or numbers) for the image at ``rootfs``."""
    try:
        return userdb.lookup_user(rootfs, spec, groups=groups)
    except userdb.UserLookupError as e:
        raise BuildError(str(e)) from None
