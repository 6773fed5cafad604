"""What an API client may ask for (catalogue case 47): options that lift the default
confinement (:func:`isobox.engine.privilege.escalations`) are a 403 naming the Docker field,
unless the server runs with ``--allow-privileged``; then they are granted and logged."""

from __future__ import annotations

import logging

from isobox.api.errors import ApiError
from isobox.engine.options import CreateOptions
from isobox.engine.privilege import escalations

log = logging.getLogger("isobox.api")

FIELDS = {"privileged": "HostConfig.Privileged", "cap_add": "HostConfig.CapAdd",
          "seccomp": "HostConfig.SecurityOpt", "devices": "HostConfig.Devices"}


def admit(opts: CreateOptions, allow_privileged: bool) -> str:
    """"" when ``opts`` keeps the default confinement; else what it lifts (for the audit
    line), or a 403 when the server does not allow it."""
    found = escalations(opts)
    if not found:
        return ""
    what = ", ".join(f"{FIELDS[e.option]}: {e.value}" for e in found)
    if not allow_privileged:
        raise ApiError(403, f"{what}: refused: this server does not grant privileges beyond "
                       "the default confinement (it was started without --allow-privileged)")
    return what


def audit(container_id: str, what: str) -> None:
    log.warning("audit: container %s created with %s (allowed by --allow-privileged)",
                container_id[:12], what)
