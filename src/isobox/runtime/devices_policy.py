"""The device cgroup rules a container gets: the config's, then what the runtime must allow.

The runtime-spec requires /dev/null, zero, full, random, urandom, tty, console and ptmx in
every container, so (as runc does) their allow rules follow the config's rules, together
with ``mknod`` of any node (useless without rw access) and the devices in
``linux.devices`` that no ``linux.resources.devices`` rule names (a rule that does, such as
docker's ``--device /dev/x:r``, is kept as the caller wrote it). ``/dev/net/tun`` is not
allowed by default (catalogue case 20).
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
    explicit = {(r.get("type"), r.get("major"), r.get("minor")) for r in rules}
    for d in linux.get("devices", []):
        if d.get("type") not in ("c", "b", "u"):
            continue
        kind = "c" if d["type"] == "u" else d["type"]
        # a rule the caller wrote for this very device (docker's --device /dev/x:r) is the
        # caller's decision: an automatic rwm allow after it would widen it
        if (kind, d["major"], d["minor"]) in explicit:
            continue
        rules.append({"allow": True, "type": kind, "major": d["major"], "minor": d["minor"],
                      "access": "rwm"})
    resources["devices"] = rules
    return resources
