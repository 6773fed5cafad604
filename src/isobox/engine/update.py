"""``update``: change a container's resource limits and restart policy.

A running container gets the new limits through the runtime's ``update --resources -`` (only
the sections that changed); in every state they are saved in the record's options and in the
bundle's ``config.json`` so that the next start applies them. Values are checked with the
same rules as ``run`` (Docker's messages) before anything changes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from isobox.engine.options import Resources, RestartPolicy, Ulimit
from isobox.engine.state import ContainerRow
from isobox.errors import ConfigError, ConflictError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

LIVE = ("running", "paused")


@dataclass(frozen=True)
class ResourceUpdate:
    """What ``update`` changes; ``None`` leaves a value as it is."""

    memory: int | None = None
    memory_swap: int | None = None
    nano_cpus: int | None = None
    cpu_shares: int | None = None
    cpuset_cpus: str | None = None
    pids_limit: int | None = None
    restart: RestartPolicy | None = None

    def empty(self) -> bool:
        return all(v is None for v in asdict(self).values())


def _resources(d: dict[str, Any]) -> Resources:
    ulimits = tuple(Ulimit(str(u["name"]), int(u["soft"]), int(u["hard"]))
                    for u in d.get("ulimits") or [])
    fields = {k: d[k] for k in ("memory", "memory_swap", "nano_cpus", "cpu_shares",
                                "cpuset_cpus", "pids_limit") if k in d}
    return Resources(**fields, ulimits=ulimits)


def merged_resources(old: Resources, change: ResourceUpdate) -> Resources:
    """The limits after ``change``, with Docker's rules for memory and swap."""
    memory = old.memory if change.memory is None else change.memory
    swap = old.memory_swap if change.memory_swap is None else change.memory_swap
    if change.memory is not None and change.memory_swap is None and old.memory_swap > 0 \
            and memory > old.memory_swap:
        raise ConfigError("--memory", "Memory limit should be smaller than already set "
                          "memoryswap limit, update the memoryswap at the same time")
    return Resources(
        memory=memory, memory_swap=swap,
        nano_cpus=old.nano_cpus if change.nano_cpus is None else change.nano_cpus,
        cpu_shares=old.cpu_shares if change.cpu_shares is None else change.cpu_shares,
        cpuset_cpus=old.cpuset_cpus if change.cpuset_cpus is None else change.cpuset_cpus,
        pids_limit=old.pids_limit if change.pids_limit is None else change.pids_limit,
        ulimits=old.ulimits)


def runtime_resources(new: dict[str, Any], change: ResourceUpdate) -> dict[str, Any]:
    """The ``linux.resources`` sections to send to a running container's runtime."""
    out: dict[str, Any] = {}
    if change.memory is not None or change.memory_swap is not None:
        out["memory"] = new.get("memory") or {"limit": -1, "swap": -1}
    cpu: dict[str, Any] = {}
    new_cpu = new.get("cpu") or {}
    if change.nano_cpus is not None:
        cpu["quota"] = new_cpu.get("quota", -1)
        cpu["period"] = new_cpu.get("period", 100_000)
    if change.cpu_shares is not None and new_cpu.get("shares"):
        cpu["shares"] = new_cpu["shares"]
    if change.cpuset_cpus:
        cpu["cpus"] = new_cpu["cpus"]
    if cpu:
        out["cpu"] = cpu
    if change.pids_limit is not None:
        out["pids"] = {"limit": change.pids_limit if change.pids_limit > 0 else -1}
    return out


def _rewrite_spec(engine: Engine, cid: str, resources: dict[str, Any]) -> None:
    path = os.path.join(engine.layout.container_dir(cid), "config.json")
    with open(path) as f:
        spec = json.load(f)
    linux = spec.setdefault("linux", {})
    old = linux.get("resources") or {}
    resources = {**{k: v for k, v in resources.items() if k != "devices"},
                 "devices": old.get("devices") or [{"allow": False, "access": "rwm"}]}
    for key in ("blockIO", "hugepageLimits", "network", "rdma", "unified"):
        if key in old:
            resources[key] = old[key]
    linux["resources"] = resources
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(spec))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def update_container(engine: Engine, ref: str, change: ResourceUpdate) -> ContainerRow:
    """Apply ``change`` to ``ref``; returns the updated record."""
    from isobox.engine.spec import linux_resources

    if change.empty():
        raise ConfigError("update", "you must provide one or more flags when using this "
                          "command")
    row = engine.get(ref)
    with engine.locked(row.id) as row:
        opts = row.options
        if change.restart is not None and opts.get("auto_remove") and \
                change.restart.name not in ("", "no"):
            raise ConflictError("Restart policy cannot be updated because AutoRemove is "
                                "enabled for the container")
        status = engine.effective_status(row)
        if status in ("creating", "dead", "removing"):
            raise ConflictError(f"cannot update container {row.name}: container is {status}")
        new = merged_resources(_resources(opts.get("resources") or {}), change)
        linux = linux_resources(new)  # Docker's checks (minimum memory, swap, cpus)
        if status in LIVE:
            sections = runtime_resources(linux, change)
            if sections:
                engine.runtime(row).update(row.id, sections)
        _rewrite_spec(engine, row.id, linux)
        opts["resources"] = asdict(new)
        if change.restart is not None:
            opts["restart"] = asdict(change.restart)
        engine.db.update(row.id, options=opts)
        row = engine.reload(row.id)
    engine.event(row, "update")
    return row


def rename_container(engine: Engine, ref: str, new_name: str) -> ContainerRow:
    """``rename``, with Docker's errors."""
    from isobox.engine.names import validate_name

    if not new_name.strip("/"):
        raise ConfigError("rename", "Neither old nor new names may be empty")
    name = validate_name(new_name)
    row = engine.get(ref)
    with engine.locked(row.id) as row:
        if row.name == name:
            raise ConflictError("Renaming a container with the same name as its current name")
        old = row.name
        engine.db.rename(row.id, name)
        row = engine.reload(row.id)
    engine.event(row, "rename", oldName="/" + old)
    return row
