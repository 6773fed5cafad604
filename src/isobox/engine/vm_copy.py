"""``cp`` for a running micro-VM: the files live on the guest's disk, so the guest agent runs
its own busybox ``tar`` chrooted into the workload's root (paths resolve as the workload
sees them) and the archive streams through the exec session.

Out of the guest: the guest's tar is spooled to a host file, then re-written entry by entry
(top name, ownership) with entries outside the requested tree dropped; the caller extracts it
with the layer unpacker, which never follows a guest-made symlink out of the destination
(SECURITY.md). Into the guest: the host-built tar (or the user's) feeds ``tar -x``; whatever
it does stays inside the guest."""

from __future__ import annotations

import os
import posixpath
import signal
import tarfile
import tempfile
from typing import TYPE_CHECKING, BinaryIO, cast

from isobox.engine.state import ContainerRow
from isobox.engine.vm_guest import agent, feed_stdin, require_running, run_tool, start_tool
from isobox.errors import ConfigError, IsoboxError, NotFoundError, SystemSetupError

if TYPE_CHECKING:
    from isobox.engine.copy import PathStat
    from isobox.engine.engine import Engine

_TIMEOUT = 600.0
CP_MAX_ENV = "ISOBOX_VM_CP_MAX"
DEFAULT_CP_MAX = 4 << 30  # bytes of a guest's tar spooled on the host at most


def cp_max() -> int:
    """The cap on a ``cp`` out of a VM (the guest's tar is spooled on the host first)."""
    raw = os.environ.get(CP_MAX_ENV, "").strip()
    if not raw:
        return DEFAULT_CP_MAX
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value <= 0:
        raise ConfigError(CP_MAX_ENV, f"invalid value {raw!r}: a positive number of bytes")
    return value


def _abs(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def _not_found(path: str, row: ContainerRow) -> NotFoundError:
    return NotFoundError(f"Could not find the file {path} in container {row.name}")


def vm_stat(engine: Engine, row: ContainerRow, path: str, *, follow: bool = False
            ) -> PathStat:
    """The guest entry at ``path`` (``follow``: through a final symlink)."""
    from isobox.engine.copy import PathStat

    require_running(engine, row, "cp")
    gpath = _abs(path)
    with agent(engine, row) as conn:
        res = run_tool(conn, ["stat", *(["-L"] if follow else []), "-c", "%f %s %Y", "--",
                              gpath])
        if res.code != 0:
            raise _not_found(path, row)
        try:
            mode_hex, size, mtime = res.stdout.decode().split()
            mode = int(mode_hex, 16)
            st = PathStat(posixpath.basename(gpath.rstrip("/")) or "/", int(size), mode,
                          float(mtime), "")
        except ValueError:
            raise SystemSetupError(f"stat in the guest printed {res.stdout[:80]!r}") from None
        import stat as st_mod

        if st_mod.S_ISLNK(mode):
            link = run_tool(conn, ["readlink", "--", gpath])
            st = PathStat(st.name, st.size, mode, st.mtime,
                          link.stdout.decode(errors="surrogateescape").rstrip("\n"))
        return st


def resolved_kind(engine: Engine, row: ContainerRow, path: str) -> str:
    """"dir", "file" or "missing" for ``path`` in the guest, symlinks followed."""
    import stat

    try:
        st = vm_stat(engine, row, path, follow=True)
    except NotFoundError:
        return "missing"
    return "dir" if stat.S_ISDIR(st.mode) else "file"


def _source(engine: Engine, row: ContainerRow, path: str, follow: bool
            ) -> tuple[str, str]:
    """(directory for ``tar -C``, member to archive) naming ``path`` in the guest."""
    gpath = _abs(path)
    if gpath.endswith("/.") or gpath.rstrip("/") == "":
        return gpath, "."
    if follow:
        with agent(engine, row) as conn:
            res = run_tool(conn, ["readlink", "-f", "--", gpath])
        real = res.stdout.decode(errors="surrogateescape").rstrip("\n")
        if res.code != 0 or not real.startswith("/"):
            raise _not_found(path, row)
        gpath = real
    parent, name = posixpath.split(gpath.rstrip("/"))
    return parent or "/", name or "."


def _renamed(name: str, prefix: str, arcname: str) -> str | None:
    """``name`` of the guest's archive under ``arcname``; None when outside ``prefix``."""
    name = name.rstrip("/")
    if name.startswith("./") and prefix != ".":
        name = name[2:]
    if name == prefix:
        rest = ""
    elif name.startswith(prefix + "/"):
        rest = name[len(prefix) + 1:]
    else:
        return None
    if not arcname:
        return rest or None
    return posixpath.join(arcname, rest) if rest else arcname


def vm_copy_from(engine: Engine, row: ContainerRow, path: str, out: BinaryIO, *,
                 follow: bool, arcname: str, owner: tuple[int, int] | None) -> PathStat:
    """Write ``path`` of the guest to ``out`` as a tar whose top entry is ``arcname`` ("":
    a directory's contents at the top)."""
    import stat

    st = vm_stat(engine, row, path)
    follow = follow or path.endswith(("/", "/."))
    if path.endswith("/") and not stat.S_ISDIR(
            (vm_stat(engine, row, path, follow=True)).mode):
        raise ConfigError(path, "not a directory")
    where, member = _source(engine, row, path, follow)
    limit = cp_max()
    with tempfile.TemporaryFile(dir=engine.layout.container_dir(row.id)) as spool:
        with agent(engine, row) as conn:
            def spooled(data: bytes) -> None:
                if spool.tell() + len(data) > limit:
                    raise SystemSetupError(
                        f"copying {path} out of container {row.name}: the guest's archive is "
                        f"over the {limit}-byte limit ({CP_MAX_ENV})")
                spool.write(data)

            session = start_tool(conn, ["tar", "-C", where, "-cf", "-", "--", member],
                                 on_stdout=spooled)
            session.close_stdin()
            try:
                code = session.wait(_TIMEOUT)
            except SystemSetupError:
                try:  # the guest's tar would go on writing to nobody
                    conn.signal(session.id, signal.SIGKILL)
                except IsoboxError:  # best effort: the cap is the error
                    pass
                raise
        if code != 0:
            err = session.stderr.text()
            raise SystemSetupError(f"tar in the guest ({path}): {err or f'exit {code}'}")
        spool.seek(0)
        _rewrite(cast(BinaryIO, spool), out, member, arcname, owner)
    return st


def _rewrite(src: BinaryIO, out: BinaryIO, prefix: str, arcname: str,
             owner: tuple[int, int] | None) -> None:
    from isobox.engine.copy import open_tar_writer

    tout = open_tar_writer(out)
    try:
        with tarfile.open(fileobj=src, mode="r|", encoding="utf-8",
                          errors="surrogateescape") as tin:
            for ti in tin:
                name = _renamed(ti.name, prefix, arcname)
                if name is None:
                    continue
                if ti.islnk():  # a hard link names another member: rename it alike
                    target = _renamed(ti.linkname, prefix, arcname)
                    if target is None:
                        continue
                    ti.linkname = target
                ti.name = name
                if owner is not None:
                    ti.uid, ti.gid = owner
                    ti.uname = ti.gname = ""
                tout.addfile(ti, tin.extractfile(ti) if ti.isreg() else None)
    except tarfile.TarError as e:
        raise SystemSetupError(f"the guest's tar stream: {e}") from None
    tout.close()


def vm_copy_to(engine: Engine, row: ContainerRow, path: str, stream: BinaryIO) -> None:
    """Extract the tar ``stream`` into the existing guest directory ``path``."""
    import stat

    st = vm_stat(engine, row, path, follow=True)
    if not stat.S_ISDIR(st.mode):
        raise ConfigError(path, "extraction point is not a directory")
    with agent(engine, row) as conn:
        session = start_tool(conn, ["tar", "-x", "-C", _abs(path), "-f", "-"], stdin=True)
        code = feed_stdin(session, stream, _TIMEOUT)
    if code != 0:
        err = session.stderr.text()
        raise SystemSetupError(f"tar in the guest ({path}): {err or f'exit {code}'}")
