"""The device cgroup rules a container gets: the config's, then what the runtime must allow.

The runtime-spec requires /dev/null, zero, full, random, urandom, tty, console and ptmx in
every container, so (as runc does) their allow rules follow the config's rules, together
with ``mknod`` of any node (useless without rw access) and the devices in
``linux.devices``. ``/dev/net/tun`` is not allowed by default (catalogue case 20).
"""

from __future__ import annotations

from isobox.cgroups.devices import DEFAULT_RULES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def effective_resources(config: dict[str, Any]) -> dict[str, Any]:
    linux = config.get("linux", {})
    resources = dict(linux.get("resources") or {})
    rules = list(resources.get("devices") or [])
    rules.extend(DEFAULT_RULES)
    for d in linux.get("devices", []):
        if d.get("type") in ("c", "b", "u"):
            rules.append({"allow": True, "type": "c" if d["type"] == "u" else d["type"],
                          "major": d["major"], "minor": d["minor"], "access": "rwm"})
    resources["devices"] = rules
    return resources
