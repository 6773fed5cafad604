"""What ``--isolation vm`` adds to a container's creation: the root disk and the annotations
that tell isobox-vm-runtime what only a VM needs.

The image's files become one read-only ext4 image per image id (built once from the image's
merged layers, cached under ``<root>/vm/rootfs``); each instance writes to its own qcow2
overlay on top of it, in its container directory, so it can be snapshotted and migrated.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from isobox.engine.options import CreateOptions
from isobox.errors import ConfigError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

DISK_NAME = "disk.qcow2"


def check_vm_options(opts: CreateOptions) -> None:
    """Refuse what a micro-VM cannot honour yet, naming the flag (nothing is made before)."""
    refused = [
        (opts.network == "host", "--network host",
         "a VM has its own kernel and cannot share the host's network stack"),
        (bool(opts.runtime), "--runtime", "a VM always runs through isobox-vm-runtime"),
        (bool(opts.devices), "--device", "host devices cannot be passed to a micro-VM"),
        (opts.privileged, "--privileged", "a VM has no host privileges to grant"),
        (any(m.type == "tmpfs" for m in opts.mounts), "--tmpfs",
         "not supported with --isolation vm yet"),
        (any(m.type == "bind" and m.source and not os.path.isdir(m.source)
             for m in opts.mounts), "--volume",
         "a VM can share host directories only (virtio-9p), not single files"),
        (opts.read_only, "--read-only", "not supported with --isolation vm yet"),
        (opts.init, "--init", "the guest agent already reaps the workload's children"),
    ]
    for bad, flag, why in refused:
        if bad:
            raise ConfigError(flag, f"{flag} with --isolation vm: {why}")
    if opts.hostname:
        from isobox.vm.runtime.machine import valid_hostname

        if not valid_hostname(opts.hostname):
            raise ConfigError("--hostname", f"{opts.hostname!r} is not a valid host name "
                              "(letters, digits, '-' and '.')")
    for flag, path in (("--kernel", opts.vm_kernel), ("--initrd", opts.vm_initrd)):
        if path and not os.path.isfile(path):
            raise ConfigError(flag, f"{path}: no such file")


def base_disk(engine: Engine, image_id: str, rootfs: str) -> str:
    """The image's read-only root disk (raw ext4), built from its merged layers once."""
    from isobox.filelock import locked_file
    from isobox.vm.disk import ext4_image_from_dir

    cache = os.path.join(engine.layout.vm_cache, "rootfs")
    os.makedirs(cache, mode=0o700, exist_ok=True)
    path = os.path.join(cache, image_id.removeprefix("sha256:") + ".ext4")
    if os.path.exists(path):
        return path
    with locked_file(path + ".lock"):
        if not os.path.exists(path):
            ext4_image_from_dir(rootfs, path)
    return path


def prune_base_disks(engine: Engine) -> int:
    """Remove the cached root disks of images that are gone (not in the store, no container
    made from them); returns the bytes freed (the disks are sparse: the blocks they held)."""
    from isobox.filelock import locked_file

    cache = os.path.join(engine.layout.vm_cache, "rootfs")
    try:
        names = sorted(os.listdir(cache))
    except FileNotFoundError:
        return 0
    used = {row.image_id for row in engine.db.all()}
    freed = 0
    for name in names:
        image_id = "sha256:" + name.removesuffix(".ext4")
        if not name.endswith(".ext4") or image_id in used:
            continue
        path = os.path.join(cache, name)
        with locked_file(path + ".lock"):  # not while a create builds it
            if engine.store.db.image(image_id) is not None or not os.path.isfile(path):
                continue
            freed += os.stat(path).st_blocks * 512
            os.unlink(path)
        try:
            os.unlink(path + ".lock")
        except FileNotFoundError:
            pass
    return freed


def make_instance_disk(engine: Engine, image_id: str, rootfs: str, cdir: str) -> str:
    from isobox.vm.disk import create_overlay

    base = base_disk(engine, image_id, rootfs)
    disk = os.path.join(cdir, DISK_NAME)
    create_overlay(base, "raw", disk)
    return disk


def vm_annotations(engine: Engine, cdir: str, opts: CreateOptions) -> dict[str, str]:
    notes = {"org.isobox.vm.disk": os.path.join(cdir, DISK_NAME),
             "org.isobox.vm.disk-format": "qcow2",
             "org.isobox.vm.cache": engine.layout.vm_cache}
    if opts.vm_kernel:
        notes["org.isobox.vm.kernel"] = os.path.abspath(opts.vm_kernel)
    if opts.vm_initrd:
        notes["org.isobox.vm.initrd"] = os.path.abspath(opts.vm_initrd)
    if os.environ.get("ISOBOX_VM_DEBUG") == "1":  # keep the guest's serial console
        notes["org.isobox.vm.console"] = "on"
    return notes
