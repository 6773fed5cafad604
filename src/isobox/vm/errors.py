"""Errors of the VM tier."""

from __future__ import annotations

from isobox.errors import IsoboxError


class VMError(IsoboxError):
    """The VM cannot be prepared or run: missing kernel, no accelerator, QEMU failed, …"""


class DiskError(VMError):
    """A disk image is unusable or unsafe; the message names the path and the reason."""
