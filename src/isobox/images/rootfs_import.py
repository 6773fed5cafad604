"""``isobox import`` (a root filesystem tarball becomes a one-layer image) and ``isobox
export`` (a snapshot's merged root filesystem as one flat tar).

Import follows ``docker import``: the tarball may be gzip, xz, bzip2 or zstd (decompressed
in-process); the diffID is the sha256 of the uncompressed tar and the stored blob is gzip; the
config carries ``comment`` and one history entry ``Imported from -`` (or the ``-m`` message);
``-c`` applies Dockerfile instructions CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME,
WORKDIR, STOPSIGNAL.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import shlex
from collections.abc import Iterable
from typing import Any, BinaryIO, cast

from isobox.errors import ConfigError
from isobox.images.archive.load import CHUNK, open_decompressed
from isobox.images.db import LayerRow
from isobox.images.reference import Reference
from isobox.images.store import ImageRecord, ImageStore, adds_content, now_rfc3339
from isobox.oci import image as oci

CHANGE_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "USER", "VOLUME",
                       "WORKDIR", "STOPSIGNAL")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# -c CHANGE -------------------------------------------------------------------------------------
def _json_or_shell(rest: str) -> tuple[list[str], bool]:
    text = rest.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value, True
    return ["/bin/sh", "-c", text], False


def _pairs(kind: str, rest: str) -> list[tuple[str, str]]:
    try:
        words = shlex.split(rest)
    except ValueError as e:
        raise ConfigError(f"--change {kind}", str(e)) from None
    if not words:
        raise ConfigError(f"--change {kind}", "needs at least one argument")
    if len(words) >= 2 and "=" not in words[0]:  # legacy form: ENV KEY value words…
        return [(words[0], rest.strip()[len(rest.strip().split(None, 1)[0]):].strip())]
    out = []
    for w in words:
        key, sep, value = w.partition("=")
        if not sep or not key:
            raise ConfigError(f"--change {kind}", f"{w!r}: expected KEY=VALUE")
        out.append((key, value))
    return out


def apply_changes(config: dict[str, Any], changes: Iterable[str]) -> dict[str, Any]:
    """Apply ``-c`` instructions to the inner ``config`` object of an image config."""
    cfg = copy.deepcopy(config)
    for change in changes:
        kind, _, rest = change.strip().partition(" ")
        kind = kind.upper()
        if kind not in CHANGE_INSTRUCTIONS:
            raise ConfigError("--change", f"{change!r}: unsupported instruction (expected one "
                                          f"of {', '.join(CHANGE_INSTRUCTIONS)})")
        rest = rest.strip()
        if kind in ("CMD", "ENTRYPOINT"):
            cfg["Cmd" if kind == "CMD" else "Entrypoint"] = _json_or_shell(rest)[0]
        elif kind == "ENV":
            env = [e for e in cfg.get("Env") or []]
            for key, value in _pairs(kind, rest):
                env = [e for e in env if e.partition("=")[0] != key] + [f"{key}={value}"]
            cfg["Env"] = env
        elif kind == "LABEL":
            labels = dict(cfg.get("Labels") or {})
            labels.update(_pairs(kind, rest))
            cfg["Labels"] = labels
        elif kind in ("EXPOSE", "VOLUME"):
            items = _json_or_shell(rest)[0] if rest.startswith("[") else rest.split()
            if not items:
                raise ConfigError(f"--change {kind}", "needs at least one argument")
            field = "ExposedPorts" if kind == "EXPOSE" else "Volumes"
            current = dict(cfg.get(field) or {})
            for item in items:
                if kind == "EXPOSE" and "/" not in item:
                    item += "/tcp"
                current[item] = {}
            cfg[field] = current
        else:
            if not rest:
                raise ConfigError(f"--change {kind}", "needs an argument")
            cfg[{"USER": "User", "WORKDIR": "WorkingDir", "STOPSIGNAL": "StopSignal"}[kind]] = rest
    return cfg


# import ---------------------------------------------------------------------------------------
def store_tar_layer(store: ImageStore, stream: BinaryIO) -> tuple[LayerRow, int]:
    """Store a (possibly compressed) tar as a gzip layer blob; returns its row and the
    uncompressed size. The diffID is the sha256 of the uncompressed tar."""
    plain, _ = open_decompressed(stream)
    writer = store.blobs.writer()
    h = hashlib.sha256()
    size = 0
    try:
        with gzip.GzipFile(fileobj=cast(BinaryIO, writer), mode="wb", mtime=0,
                           compresslevel=6) as gz:
            for chunk in iter(lambda: plain.read(CHUNK), b""):
                h.update(chunk)
                size += len(chunk)
                gz.write(chunk)
    except BaseException:
        writer.abort()
        raise
    digest = writer.commit()
    return LayerRow(f"sha256:{h.hexdigest()}", digest, store.blobs.size(digest),
                    oci.OCI_LAYER_GZIP), size


@adds_content
def import_rootfs(store: ImageStore, stream: BinaryIO, refs: list[Reference] | None = None, *,
                  changes: Iterable[str] = (), message: str | None = None,
                  source: str = "-", created: str | None = None,
                  platform: oci.Platform | None = None) -> ImageRecord:
    """A one-layer image from a root filesystem tarball (``docker import``)."""
    inner = apply_changes({}, changes)
    layer, _ = store_tar_layer(store, stream)
    try:
        store.ensure_layer(layer.diff_id, layer.blob_digest, layer.media_type)
        when = created or now_rfc3339()
        comment = message if message is not None else f"Imported from {source}"
        plat = platform or oci.host_platform()
        config: dict[str, Any] = {"architecture": plat.architecture, "os": plat.os}
        if plat.variant:
            config["variant"] = plat.variant
        config.update({"comment": comment, "config": inner, "created": when,
                       "history": [{"created": when, "comment": comment}]})
        return store.create_image(config, [layer], refs or [])
    except BaseException:
        _drop_unused_blob(store, layer.blob_digest)
        raise


def _drop_unused_blob(store: ImageStore, digest: str) -> None:
    with store.blobs.lock(digest):
        used = store.db.conn.execute("SELECT 1 FROM image_layers WHERE blob_digest = ? LIMIT 1",
                                     (digest,)).fetchone()
        if not used:
            store.blobs.delete(digest)


# export ---------------------------------------------------------------------------------------
def export_snapshot(store: ImageStore, snap_id: str, out: BinaryIO) -> None:
    """Write the snapshot's merged root filesystem as a flat, uncompressed tar."""
    from isobox.images.layertar import write_layer
    from isobox.images.snapshots import Snapshots

    snaps = Snapshots(store)
    snap = snaps.get(snap_id)
    import os

    mounted_here = not os.path.ismount(snap.rootfs)
    if mounted_here:
        snaps.mount(snap)
    try:
        write_layer(snap.rootfs, out, source="plain", compression="none")
    finally:
        if mounted_here:
            snaps.unmount(snap)
