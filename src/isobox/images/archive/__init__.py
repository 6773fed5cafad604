"""Offline images: ``docker save``-style archives and OCI image layouts, in and out.

* :func:`load_archive` reads a docker-archive (``manifest.json``; legacy ``<id>/layer.tar`` or
  docker 25's ``blobs/sha256`` layout) or an oci-archive (``oci-layout`` + ``index.json``),
  possibly compressed, verifies every digest and diffID and commits the images to the store;
* :func:`save_images` writes images as a docker-archive, an oci-archive or an OCI layout
  directory, deterministically.
"""

from __future__ import annotations

from isobox.images.archive.load import ArchiveLimits, LoadedImage, load_archive
from isobox.images.archive.save import SAVE_FORMATS, save_images

__all__ = ["SAVE_FORMATS", "ArchiveLimits", "LoadedImage", "load_archive", "save_images"]
