"""Images built offline from the host's own packages, for machines without a registry.

* ``busybox``: Debian's static ``/bin/busybox`` (busybox-static) plus one symlink per applet
  (``busybox --list-full``), ``/etc/passwd`` and ``/etc/group`` with root and nobody, ``/tmp``
  1777 and empty ``/proc``, ``/sys``, ``/dev``; written as a tar with fixed mtimes, owners and
  order, so the image ID is the same for the same busybox binary. ``CMD ["sh"]``.
* ``debian:<suite>``: ``debootstrap --variant=minbase --include=systemd-sysv,udev <suite>``
  mirror (``--mirror``, else ``$ISOBOX_DEBIAN_MIRROR``, else deb.debian.org), imported as one
  layer, ``CMD ["bash"]``. minbase has no init; systemd-sysv gives the image one so that it
  also boots as a system VM (``isobox vm create --image debian:bookworm``).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from typing import BinaryIO, cast

from isobox.errors import ConfigError, SystemSetupError
from isobox.images.reference import parse_reference
from isobox.images.rootfs_import import DEFAULT_PATH, store_tar_layer
from isobox.images.store import ImageRecord, ImageStore, adds_content, remove_tree
from isobox.oci import image as oci

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
FIXED_MTIME = 0
FIXED_CREATED = "1970-01-01T00:00:00Z"
DEBIAN_INCLUDE = "systemd-sysv,udev"  # init and devices for system VMs (minbase has none)
DEBIAN_SUITES = ("bookworm", "trixie", "bullseye", "sid", "stable", "testing", "unstable")


def find_busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.path.isfile(path):
            with open(path, "rb") as f:
                head = f.read(4096)
            if head.startswith(b"\x7fELF") and b"ld-linux" not in head:
                return path
            try:  # the interpreter path sits in the program headers, past 4 KiB at times
                out = subprocess.run(["ldd", path], capture_output=True, text=True,
                                     check=False).stdout + " "
            except OSError:
                out = "not a dynamic executable"
            if "not a dynamic executable" in out or "statically linked" in out:
                return path
    raise SystemSetupError("busybox-static is not installed: no static /bin/busybox "
                           "(apt-get install busybox-static)")


def busybox_rootfs_tar(busybox: str | None = None) -> bytes:
    """The busybox root filesystem as a deterministic uncompressed tar."""
    busybox = busybox or find_busybox()
    listing = subprocess.run([busybox, "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    dirs = {"bin", "dev", "etc", "home", "proc", "root", "run", "sbin", "sys", "tmp", "usr",
            "usr/bin", "usr/sbin", "var"}
    links: dict[str, str] = {}
    for path in listing:
        path = path.strip("/")
        if not path or path == "bin/busybox" or ".." in path.split("/"):
            continue
        parent = os.path.dirname(path)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
        links[path] = "/bin/busybox"
    with open(busybox, "rb") as f:
        binary = f.read()
    files = {
        "bin/busybox": (binary, 0o755),
        "etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\n"
                       b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644),
        "etc/group": (b"root:x:0:\nnogroup:x:65534:\n", 0o644),
    }
    entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]] = []

    def info(name: str) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = FIXED_MTIME, 0, 0, "", ""
        return ti

    names = sorted(dirs | set(files) | set(links))
    for name in names:
        ti = info(name)
        if name in dirs:
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o1777 if name == "tmp" else 0o700 if name == "root" else 0o755
            entries.append(ti)
        elif name in files:
            data, mode = files[name]
            ti.size, ti.mode = len(data), mode
            entries.append((ti, data))
        else:
            ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, links[name], 0o777
            entries.append(ti)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for entry in entries:
            if isinstance(entry, tuple):
                tf.addfile(entry[0], io.BytesIO(entry[1]))
            else:
                tf.addfile(entry)
    return buf.getvalue()


def _commit(store: ImageStore, stream: BinaryIO, tag: str, cmd: list[str],
            created: str, comment: str) -> ImageRecord:
    ref = parse_reference(tag, what="--tag")
    layer, _ = store_tar_layer(store, stream)
    store.ensure_layer(layer.diff_id, layer.blob_digest, layer.media_type)
    plat = oci.host_platform()
    config = {
        "architecture": plat.architecture,
        "config": {"Env": [f"PATH={DEFAULT_PATH}"], "Cmd": cmd},
        "created": created,
        "history": [{"created": created, "created_by": comment}],
        "os": plat.os,
    }
    return store.create_image(config, [layer], [ref])


@adds_content
def bootstrap_busybox(store: ImageStore, tag: str = "busybox:latest",
                      busybox: str | None = None) -> ImageRecord:
    data = busybox_rootfs_tar(busybox)
    return _commit(store, io.BytesIO(data), tag, ["sh"], FIXED_CREATED,
                   "isobox image bootstrap busybox (Debian busybox-static)")


@adds_content
def bootstrap_debian(store: ImageStore, suite: str = "bookworm", tag: str | None = None,
                     mirror: str | None = None) -> ImageRecord:
    if suite not in DEBIAN_SUITES:
        raise ConfigError("bootstrap", f"unknown Debian suite {suite!r} (expected one of "
                                       f"{', '.join(DEBIAN_SUITES)})")
    mirror = mirror or os.environ.get("ISOBOX_DEBIAN_MIRROR") or DEFAULT_MIRROR
    if shutil.which("debootstrap") is None:
        raise SystemSetupError("debootstrap is not installed (apt-get install debootstrap)")
    from isobox.images.layertar import write_layer

    work = tempfile.mkdtemp(prefix="bootstrap-", dir=store.layer_tmp)
    rootfs = os.path.join(work, "rootfs")
    try:
        proc = subprocess.run(["debootstrap", "--variant=minbase",
                               f"--include={DEBIAN_INCLUDE}", suite, rootfs, mirror],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              check=False)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
            raise SystemSetupError(f"debootstrap {suite} from {mirror} failed "
                                   f"(exit {proc.returncode}):\n{tail}")
        _trim_debian(rootfs)
        tar_path = os.path.join(work, "rootfs.tar")
        with open(tar_path, "wb") as out:
            write_layer(rootfs, cast(BinaryIO, out), source="plain", compression="none")
        with open(tar_path, "rb") as f:
            return _commit(store, cast(BinaryIO, f), tag or f"debian:{suite}", ["bash"],
                           _now(), f"debootstrap --variant=minbase "
                           f"--include={DEBIAN_INCLUDE} {suite} {mirror}")
    finally:
        _unmount_below(rootfs)
        remove_tree(work)


def _now() -> str:
    from isobox.images.store import now_rfc3339

    return now_rfc3339()


def _trim_debian(rootfs: str) -> None:
    """What Debian's docker images leave out: device nodes, package caches and lists."""
    _unmount_below(rootfs)
    for rel in ("dev", "var/cache/apt/archives", "var/lib/apt/lists", "run", "tmp"):
        path = os.path.join(rootfs, rel)
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        for name in os.listdir(path):
            if name in ("partial", "lock"):
                continue
            remove_tree(os.path.join(path, name))


def _unmount_below(path: str) -> None:
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return
    below = sorted((p for p in points if p == path or p.startswith(path + "/")), key=len,
                   reverse=True)
    for p in below:
        subprocess.run(["umount", "-l", p], check=False)
