"""Building small images in a test store without a registry: tar layers made with ``tarfile``
(writing test archives is fine; the store never extracts with it)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from typing import Any

from isobox.images.reference import parse_reference
from isobox.images.store import ImageRecord, ImageStore
from isobox.oci import image as oci

Files = dict[str, bytes | str | None]  # path → content; str = symlink target; None = directory


def layer_tar(files: Files, *, whiteouts: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif isinstance(content, str):
                info.type, info.linkname = tarfile.SYMTYPE, content
                tf.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tf.addfile(info, io.BytesIO(content))
        for name in whiteouts:
            info = tarfile.TarInfo(name)
            tf.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_image(store: ImageStore, layers: list[bytes], ref: str | None = None,
              config_extra: dict[str, Any] | None = None,
              commit: bool = True) -> tuple[str, ImageRecord | None]:
    """Store gzip blobs for ``layers`` (uncompressed tars), a config and a manifest; commit
    the image unless ``commit`` is false. Returns (manifest digest, record)."""
    descs = []
    for tar in layers:
        gz = gzip.compress(tar, mtime=0)
        descs.append({"mediaType": oci.OCI_LAYER_GZIP, "digest": store.blobs.put(gz),
                      "size": len(gz)})
    config = {"architecture": "amd64", "os": "linux", "created": "2026-11-26T00:00:00Z",
              "config": {"Cmd": ["sh"]},
              "rootfs": {"type": "layers", "diff_ids": [sha(t) for t in layers]},
              "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]}
    config.update(config_extra or {})
    cbytes = json.dumps(config).encode()
    manifest = {"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                "config": {"mediaType": oci.OCI_CONFIG, "digest": store.blobs.put(cbytes),
                           "size": len(cbytes)},
                "layers": descs}
    mdigest = store.blobs.put(json.dumps(manifest).encode())
    if not commit:
        return mdigest, None
    refs = [parse_reference(ref)] if ref else []
    return mdigest, store.commit_image(mdigest, refs)
