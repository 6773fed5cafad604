"""A container's filesystem snapshots: its writable layer (the overlay upper directory) as a
tar in ``<container dir>/snapshots/<name>.tar``.

GNU tar keeps what overlayfs needs: whiteouts (character devices 0:0), ``trusted.overlay.*``
xattrs (opaque directories), owners by number, hard links and sparse files. A restore unpacks
beside the upper directory and swaps it in, so a failure leaves the old content in place.
"""

from __future__ import annotations

import os
import subprocess
from typing import TYPE_CHECKING

from isobox.engine.state import ContainerRow
from isobox.errors import ConflictError, SystemSetupError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

TAR_OPTS = ("--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "--selinux")
STOPPED = ("created", "exited")


def tar_path(engine: Engine, cid: str, name: str) -> str:
    from isobox.engine.instance_snapshots import snapshot_dir

    return os.path.join(snapshot_dir(engine, cid), f"{name}.tar")


def _tar(*args: str) -> None:
    try:
        p = subprocess.run(["tar", *TAR_OPTS, *args], capture_output=True, text=True,
                           check=False)
    except OSError as e:
        raise SystemSetupError(f"tar: {e.strerror}") from None
    if p.returncode != 0:
        raise SystemSetupError(f"tar {args[0]}: {p.stderr.strip() or p.returncode}")


def fs_create(engine: Engine, row: ContainerRow, name: str) -> int:
    """Archive the container's writable layer (a running container's is taken as it is)."""
    from isobox.engine.instance_snapshots import snapshot_dir

    upper = engine.snapshots.get(row.id).upper
    os.makedirs(snapshot_dir(engine, row.id), mode=0o700, exist_ok=True)
    dest = tar_path(engine, row.id, name)
    tmp = f"{dest}.tmp{os.getpid()}"
    try:
        _tar("--create", "--sparse", "--file", tmp, "--directory", upper, ".")
        os.chmod(tmp, 0o600)
        os.rename(tmp, dest)
    except BaseException:
        _unlink(tmp)
        raise
    return os.path.getsize(dest)


def fs_delete(engine: Engine, row: ContainerRow, name: str) -> None:
    _unlink(tar_path(engine, row.id, name))


def fs_restore(engine: Engine, row: ContainerRow, name: str) -> None:
    """Replace the writable layer's content with the snapshot's (the container must be
    stopped: its overlay is unmounted for the swap, and mounted again if it was)."""
    from isobox.images.store import remove_tree

    if row.status not in STOPPED:
        raise ConflictError(f"cannot restore snapshot {name} of container {row.name}: the "
                            f"container is {row.status}: stop it first")
    src = tar_path(engine, row.id, name)
    if not os.path.isfile(src):
        raise SystemSetupError(f"snapshot {name} of {row.name}: {src} is missing")
    snap = engine.snapshots.get(row.id)
    fresh = os.path.join(snap.path, f"upper.restore{os.getpid()}")
    old = os.path.join(snap.path, f"upper.old{os.getpid()}")
    remove_tree(fresh)
    os.mkdir(fresh, 0o755)
    try:
        _tar("--extract", "--preserve-permissions", "--same-owner", "--file", src,
             "--directory", fresh)
    except BaseException:
        remove_tree(fresh)
        raise
    was_mounted = os.path.ismount(snap.rootfs)
    engine.snapshots.unmount(snap)
    os.rename(snap.upper, old)
    os.rename(fresh, snap.upper)
    remove_tree(old)
    work = os.path.join(snap.path, "work")  # overlay scratch of the old upper: start clean
    remove_tree(work)
    os.mkdir(work, 0o755)
    if was_mounted:
        engine.snapshots.mount(snap)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
