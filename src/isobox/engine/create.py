"""``create``: check everything, then make the container's record, root filesystem, volumes,
``/etc`` files and bundle — all of it, or (on any error, or an interrupt) none of it."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from isobox.engine import etcfiles
from isobox.engine.names import new_id, random_name, validate_name
from isobox.engine.options import CreateOptions, MountSpec
from isobox.engine.state import ContainerRow
from isobox.errors import ConfigError, ConflictError, NotFoundError, SystemSetupError

if TYPE_CHECKING:
    from collections.abc import Callable

    from isobox.engine.engine import Engine
    from isobox.images.store import ImageRecord

PREDEFINED_NETWORKS = ("bridge", "host", "none")


def check_options(engine: Engine, opts: CreateOptions) -> None:
    """Refuse what Docker refuses, before anything is made."""
    from isobox.engine.mountspec import validate_mounts

    if opts.isolation not in ("container", "default", "", "vm"):
        raise ConfigError("--isolation", f"invalid isolation {opts.isolation!r} (supported: "
                          "container, vm)")
    if opts.isolation == "vm":
        from isobox.engine.vm_disk import check_vm_options

        check_vm_options(opts)
    elif opts.vm_kernel or opts.vm_initrd:
        raise ConfigError("--kernel" if opts.vm_kernel else "--initrd",
                          "--kernel and --initrd need --isolation vm")
    if opts.auto_remove and opts.restart.name not in ("", "no"):
        raise ConfigError("--restart", "Conflicting options: --restart and --rm")
    if opts.network not in PREDEFINED_NETWORKS:
        engine.networks.inspect(opts.network)  # NotFoundError names it
    if opts.network_aliases and opts.network in PREDEFINED_NETWORKS:
        raise ConfigError("--network-alias", "network-scoped aliases are only supported "
                          "for user-defined networks")
    validate_mounts(list(opts.mounts), data_root=engine.layout.root)
    if opts.resources.ulimits:
        from isobox.engine.parse import check_ulimits

        check_ulimits(list(opts.resources.ulimits))
    if opts.runtime:
        from isobox.engine.runtime_client import runtime_path

        runtime_path(opts.runtime)


def _check_socket_room(engine: Engine) -> None:
    from isobox.engine.layout import MAX_SOCKET_PATH

    longest = engine.layout.attach_socket("0" * 64)
    if len(longest) > MAX_SOCKET_PATH:
        raise SystemSetupError(f"the isobox root {engine.layout.root} is too long: a "
                               f"container's attach socket ({len(longest)} bytes) must fit in "
                               f"{MAX_SOCKET_PATH}; use a root of at most "
                               f"{MAX_SOCKET_PATH - len(longest) + len(engine.layout.root)} "
                               "characters")


def create_container(engine: Engine, opts: CreateOptions, *, image: ImageRecord | None = None,
                     warn: Callable[[str], None] | None = None) -> ContainerRow:
    """``warn`` receives what Docker reports as a warning and goes on with (the CLI prints
    it, the API returns it in ``Warnings``)."""
    image = image or engine.store.resolve(opts.image)
    _check_socket_room(engine)
    name = validate_name(opts.name) if opts.name else ""
    check_options(engine, opts)
    if opts.network in ("host", "none") and (opts.ports or opts.publish_all):
        if warn is not None:  # as docker and podman: run, without the ports
            warn(f"Published ports are discarded when using {opts.network} network mode")
        opts = replace(opts, ports=(), publish_all=False)
    cid = new_id()
    row = ContainerRow(id=cid, name=name or random_name(), image_id=image.id,
                       image_ref=opts.image, created=time.time(), options=asdict(opts),
                       status="creating", creator_pid=os.getpid())
    for attempt in range(20):
        try:
            engine.db.insert(row)
            break
        except ConflictError:
            if name or attempt == 19:
                raise
            row.name = random_name()
    try:
        os.mkdir(engine.layout.container_dir(cid), 0o711)
        _materialise(engine, row, opts, image)
    except BaseException:
        discard(engine, row)
        raise
    engine.event(row, "create")
    return row


def _make_workdir(rootfs: str, cwd: str) -> None:
    """Docker creates a working directory that the image lacks (``-w /new/dir``, or a
    WORKDIR removed by a later layer), inside the root: a symlink cannot lead it out."""
    from isobox.linux.safepath import mkdir_all

    rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(mkdir_all(rootfd, cwd))
    except OSError as e:
        reason = os.strerror(e.errno).lower() if e.errno else str(e)
        raise ConfigError("--workdir", f"cannot make the working directory {cwd}: "
                          f"{reason}") from None
    finally:
        os.close(rootfd)


def _materialise(engine: Engine, row: ContainerRow, opts: CreateOptions,
                 image: ImageRecord) -> None:
    from isobox.engine.mountspec import oci_mounts
    from isobox.engine.spec import SpecInputs, build_spec, image_volumes

    cid = row.id
    cdir = engine.layout.container_dir(cid)
    image_config: dict[str, Any] = dict(image.config.raw.get("config") or {})
    snap = engine.snapshots.create(cid, image_id=image.id)
    vm = opts.isolation == "vm"
    if vm:  # the image's files reach the guest as a disk; its VOLUMEs stay on that disk
        from isobox.engine.vm_disk import make_instance_disk

        make_instance_disk(engine, image.id, snap.rootfs, cdir)
    mounts = list(opts.mounts)
    taken = {os.path.normpath(m.target) for m in mounts}
    for target in [] if vm else image_volumes(image_config):  # VOLUME: an anonymous volume
        if os.path.normpath(target) not in taken:
            mounts.append(MountSpec(type="volume", target=target))
    resolved: list[MountSpec] = []
    anonymous: list[str] = []
    for m in mounts:
        if m.type != "volume":
            resolved.append(m)
            continue
        vol = engine.volumes.create(m.source)
        vname = str(vol.name)
        if not m.source:
            anonymous.append(vname)
        row.options["anonymous_volumes"] = anonymous  # known before copy-up can fail
        if not m.volume_nocopy:
            engine.volumes.copy_up(vname, snap.rootfs, m.target)
        resolved.append(replace(m, source=vname))
    extra = oci_mounts(resolved, volume_path=lambda name: engine.volumes.data_path(name),
                       data_root=engine.layout.root)
    hostname = opts.hostname or (etcfiles.host_hostname() if opts.network == "host"
                                 else cid[:12])
    etc = {"/etc/hostname": os.path.join(cdir, "hostname"),
           "/etc/hosts": os.path.join(cdir, "hosts"),
           "/etc/resolv.conf": os.path.join(cdir, "resolv.conf")}
    etcfiles.write_in_place(etc["/etc/hostname"], hostname + "\n")
    etcfiles.write_in_place(etc["/etc/hosts"], etcfiles.hosts_text(
        hostname=hostname, add_hosts=opts.add_hosts, host_network=opts.network == "host"))
    etcfiles.write_in_place(etc["/etc/resolv.conf"], etcfiles.resolv_text(
        dns=opts.dns, search=opts.dns_search, options=opts.dns_options,
        host_network=opts.network == "host"))
    netns: str | None
    if opts.network == "host":
        netns = None
    elif opts.network == "none":
        netns = ""
    else:
        netns = engine.layout.netns_path(cid)
    init_binary = ""
    if opts.init:
        from isobox.engine.spec import find_init_binary

        init_binary = find_init_binary()
    spec = build_spec(SpecInputs(
        container_id=cid, options=replace(opts, hostname=hostname), image_config=image_config,
        rootfs=snap.rootfs, netns_path=netns, etc_files=etc, extra_mounts=extra,
        cgroups_path=f"{engine.layout.cgroup_parent}/{cid}", init_binary=init_binary))
    if vm:
        from isobox.engine.vm_disk import vm_annotations

        spec["annotations"] = vm_annotations(engine, cdir, opts)
    else:
        _make_workdir(snap.rootfs, str(spec["process"]["cwd"]))
    with open(os.path.join(cdir, "config.json.tmp"), "w") as f:
        f.write(json.dumps(spec))  # not dump(): that one is pure Python
    os.rename(os.path.join(cdir, "config.json.tmp"), os.path.join(cdir, "config.json"))
    row.options["hostname_resolved"] = hostname
    row.options["mounts_resolved"] = [asdict(m) for m in resolved]
    row.options["anonymous_volumes"] = anonymous
    row.options["image_config"] = image_config
    row.status = "created"
    engine.db.update(cid, options=row.options, status="created", creator_pid=0)


def discard(engine: Engine, row: ContainerRow) -> None:
    """Undo a create (or finish removing): snapshot, anonymous volumes, directory, record."""
    from isobox.images.store import remove_tree

    cid = row.id
    try:
        engine.snapshots.remove(cid)
    except (NotFoundError, OSError):
        pass
    for vname in row.options.get("anonymous_volumes") or []:
        try:
            engine.volumes.remove(vname, force=True)
        except (NotFoundError, ConflictError, OSError):
            pass
    remove_tree(engine.layout.persist_dir(cid))
    for path in (engine.layout.exit_file(cid), engine.layout.netns_path(cid)):
        try:
            os.unlink(path)
        except (FileNotFoundError, IsADirectoryError, OSError):
            pass
    # the record goes before the directory: a locker that finds the directory gone recreates
    # it only while the record exists (a directory left by a kill here is pruned)
    engine.db.delete(cid)
    remove_tree(engine.layout.container_dir(cid))
