"""A VM resumed from a state file (``isobox vm save`` wrote it; ``vm restore`` asks for it).

The engine passes the file, where QEMU's migration stream starts in it and the stream's
sha256 recorded at save (annotations ``org.isobox.vm.incoming``, ``…-offset``, ``…-sha256``).
QEMU's loader is not made for hostile input, so the stream is hashed here, through the very
descriptor QEMU then reads with ``-incoming fd:N``: only the state isobox saved for this VM is
ever loaded.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from isobox.errors import ConfigError
from isobox.vm.runtime.machine import ANNOTATION, annotation

CHUNK = 1 << 20


def open_incoming(config: dict[str, Any]) -> int:
    """The state file's fd, positioned at the migration stream and verified; -1 if none."""
    path = annotation(config, "incoming")
    if not path:
        return -1
    offset, digest = annotation(config, "incoming-offset"), annotation(config, "incoming-sha256")
    if not offset.isdigit() or len(digest) != 64:
        raise ConfigError("annotations", f"{ANNOTATION}incoming needs -offset and -sha256")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError as e:
        raise ConfigError("FILE", f"{path}: {e.strerror}") from None
    try:
        h = hashlib.sha256()
        os.lseek(fd, int(offset), os.SEEK_SET)
        while chunk := os.read(fd, CHUNK):
            h.update(chunk)
        if h.hexdigest() != digest:
            raise ConfigError("FILE", f"{path}: the saved state changed since it was written "
                              "(its sha256 does not match the one recorded at save); refusing "
                              "to load it")
        os.lseek(fd, int(offset), os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd
