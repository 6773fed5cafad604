"""Fixtures of the image API tests: a guard that removes every image (and build cache entry) a
test made from the shared per-run root, the docker CLI with the classic builder, and a real
registry — Debian's docker-registry on 127.0.0.1, started with the image tests' helper
(tests/images/registry_server.py). Test modules import them as ``*_fixture``."""

from __future__ import annotations

import io
import os
import sys
import tarfile
from collections.abc import Iterator

import pytest
from api_helpers import ApiServer, Docker
from engine_helpers import Isobox

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "images"))

from registry_server import Registry, htpasswd_line

from isobox.images.store import ImageStore

__all__ = ["Registry", "docker_build_fixture", "htpasswd_line", "image_guard_fixture",
           "registry_fixture", "rootfs_tar"]


@pytest.fixture(name="image_guard")
def image_guard_fixture(engine_root: str, isobox: Isobox) -> Iterator[ImageStore]:
    """The store; afterwards the test's containers, images and build cache entries go."""
    store = ImageStore(engine_root)
    before = {r.id for r in store.images(include_intermediate=True)}
    refs_before = set(store.db.all_refs())
    yield store
    isobox.remove_all_containers()
    for ref in set(store.db.all_refs()) - refs_before:
        store.db.delete_ref(ref)
    for rec in store.images(include_intermediate=True):
        if rec.id not in before:
            store.db.delete_image(rec.id)
    store.db.cache_clear()
    store.collect_garbage()
    after = {r.id for r in store.images(include_intermediate=True)}
    store.close()
    assert after == before, "images left behind"


@pytest.fixture(name="docker_build")
def docker_build_fixture(api_server: ApiServer, image_guard: ImageStore) -> Docker:
    """The docker CLI with the classic builder (``DOCKER_BUILDKIT=0``) and the image guard."""
    d = Docker(api_server.socket_path)
    d.env["DOCKER_BUILDKIT"] = "0"
    return d


@pytest.fixture(name="registry")
def registry_fixture() -> Iterator[Registry]:
    reg = Registry()
    yield reg
    reg.stop()


def rootfs_tar(files: dict[str, bytes]) -> bytes:
    """A small root filesystem tarball (``docker import`` input)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()
