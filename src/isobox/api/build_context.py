"""A ``POST /build`` context: the request body (a tar, possibly gzip/xz/bzip2/zstd compressed)
unpacked into a private directory under the store root, and the Dockerfile found in it.

The context comes from a remote client, so nothing in it may reach out of it: the tar goes
through the layer unpacker (``..`` refused, links kept inside, no device nodes, bounded in
bytes and entries), the Dockerfile is resolved with ``openat2(RESOLVE_IN_ROOT)`` and must be
a regular file, and the ignore files the builder reads by path must not be symlinks (a
``.dockerignore`` pointing at ``/etc/shadow`` or ``/dev/zero`` is refused)."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from isobox.api.errors import ApiError
from isobox.images.build.dockerignore import IGNORE_FILES
from isobox.images.store import remove_tree
from isobox.images.unpack import IN_ROOT, UnpackLimits, unpack_layer
from isobox.linux.syscalls import openat2

CONTEXT_LIMITS = UnpackLimits(max_bytes=8 << 30, max_entries=1_000_000)


@contextmanager
def extracted_context(root: str, body: BinaryIO) -> Iterator[str]:
    """The context unpacked in ``<root>/build-contexts/ctx-*`` (0700), removed afterwards."""
    base = os.path.join(root, "build-contexts")
    os.makedirs(base, mode=0o700, exist_ok=True)
    path = tempfile.mkdtemp(prefix="ctx-", dir=base)
    try:
        unpack_layer(body, path, whiteouts="apply", limits=CONTEXT_LIMITS,
                     allow_devices=False)
        os.chmod(path, 0o700)
        yield path
    finally:
        remove_tree(path)


def dockerfile_in(context: str, name: str) -> str:
    """The real path of the Dockerfile ``name`` (relative to the context) inside
    ``context``; 400 when it is missing, escapes, or is not a regular file. The classic
    builder's fallback from ``Dockerfile`` to ``dockerfile`` applies."""
    name = name or "Dockerfile"
    rel = os.path.normpath(name.lstrip("/"))
    if rel == ".." or rel.startswith("../"):
        raise ApiError(400, f"path outside the build context: {name} ()")  # moby's words
    candidates = [name] + (["dockerfile"] if name == "Dockerfile" else [])
    rootfd = os.open(context, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for cand in candidates:
            try:
                fd = openat2(rootfd, cand.lstrip("/"), os.O_PATH | os.O_CLOEXEC, IN_ROOT)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise ApiError(400, f"dockerfile: cannot open {name!r} in the build context: "
                                    f"{e.strerror}") from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ApiError(400, f"dockerfile: {name!r} is not a regular file")
                real = os.readlink(f"/proc/self/fd/{fd}")
            finally:
                os.close(fd)
            _check_ignore_files(context, real)
            return real
    finally:
        os.close(rootfd)
    raise ApiError(400, f"Cannot locate specified Dockerfile: {name}")


def _check_ignore_files(context: str, dockerfile: str) -> None:
    for path in (dockerfile + ".dockerignore", *(os.path.join(context, n)
                                                  for n in IGNORE_FILES)):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            raise ApiError(400, f"{os.path.relpath(path, context)}: must be a regular file "
                                "in the build context")
