"""Turn a snapshot's changes into a new layer and image (``isobox commit``, build steps)."""

from __future__ import annotations

import copy
import os
import tempfile
from typing import Any, BinaryIO, cast

from isobox.images.db import LayerRow
from isobox.images.layertar import write_layer
from isobox.images.reference import Reference
from isobox.images.snapshots import Snapshots
from isobox.images.store import ImageRecord, ImageStore, now_rfc3339
from isobox.oci import image as oci


def snapshot_layer(store: ImageStore, snaps: Snapshots, snap_id: str, *,
                   consume: bool = False) -> LayerRow:
    """Write the snapshot's upper dir as a gzip layer blob and register the unpacked layer.

    With ``consume`` the snapshot is removed and its upper dir becomes the layer directory
    (no second unpack); otherwise the layer is unpacked from the blob."""
    snap = snaps.get(snap_id)
    writer = store.blobs.writer()
    try:
        blob = write_layer(snap.upper, cast(BinaryIO, writer), source="overlay-upper")
    except BaseException:
        writer.abort()
        raise
    digest = writer.commit()
    layer = LayerRow(blob.diff_id, digest, blob.size, oci.OCI_LAYER_GZIP)
    if consume and not store.has_layer(blob.diff_id):
        snaps.unmount(snap)
        staged = f"{snap.path}/upper"
        moved = tempfile.mkdtemp(prefix=f"unpack-{blob.diff_id[7:]}-", dir=store.layer_tmp)
        os.rmdir(moved)
        os.rename(staged, moved)
        store.add_layer_dir(moved, blob.diff_id, blob.uncompressed_size)
        snaps.remove(snap_id)
    else:
        store.ensure_layer(blob.diff_id, digest, layer.media_type)
        if consume:
            snaps.remove(snap_id)
    return layer


def image_with_layer(store: ImageStore, base: ImageRecord | None, config: dict[str, Any],
                     layer: LayerRow | None, history: dict[str, Any],
                     refs: list[Reference] | tuple[()] = (), *,
                     intermediate: bool = False) -> ImageRecord:
    """A new image: ``base``'s layers (+ ``layer``), ``config``, and one more history entry."""
    raw = copy.deepcopy(config)
    raw.setdefault("created", now_rfc3339())
    raw["history"] = [*raw.get("history", []), history]
    layers = list(base.layers) if base else []
    if layer is not None:
        layers.append(layer)
    return store.create_image(raw, layers, refs, intermediate=intermediate)
