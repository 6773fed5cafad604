"""``update``: change the resources of a live container (flags or ``-r resources.json``)."""

from __future__ import annotations

from isobox import fastjson
from isobox.errors import ConfigError, ConflictError
from isobox.runtime.state import StateStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# flag -> (section, key, parser)
FLAG_FIELDS: dict[str, tuple[str, str, str]] = {
    "memory": ("memory", "limit", "size"),
    "memory-reservation": ("memory", "reservation", "size"),
    "memory-swap": ("memory", "swap", "size"),
    "kernel-memory": ("memory", "kernel", "size"),
    "kernel-memory-tcp": ("memory", "kernelTCP", "size"),
    "cpu-quota": ("cpu", "quota", "int"),
    "cpu-period": ("cpu", "period", "uint"),
    "cpu-rt-period": ("cpu", "realtimePeriod", "uint"),
    "cpu-rt-runtime": ("cpu", "realtimeRuntime", "int"),
    "cpu-share": ("cpu", "shares", "uint"),
    "cpu-shares": ("cpu", "shares", "uint"),
    "cpuset-cpus": ("cpu", "cpus", "str"),
    "cpuset-mems": ("cpu", "mems", "str"),
    "pids-limit": ("pids", "limit", "int"),
    "blkio-weight": ("blockIO", "weight", "uint"),
}
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1 << 10, "m": 1 << 20, "mb": 1 << 20,
          "g": 1 << 30, "gb": 1 << 30, "t": 1 << 40, "tb": 1 << 40}


def parse_size(text: str, flag: str) -> int:
    """``512m``, ``1G``, ``1048576``, ``-1`` (unlimited) → bytes."""
    t = text.strip().lower()
    if t == "-1":
        return -1
    num = t.rstrip("kmgtb")
    unit = t[len(num):]
    try:
        value = float(num)
    except ValueError:
        value = -2
    if value < 0 or unit not in _UNITS:
        raise ConfigError(f"--{flag}", f"invalid size {text!r}")
    return int(value * _UNITS[unit])


def resources_from_flags(flags: dict[str, str]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for flag, value in flags.items():
        section, key, kind = FLAG_FIELDS[flag]
        parsed: Any
        if kind == "size":
            parsed = parse_size(value, flag)
        elif kind == "str":
            parsed = value
        else:
            try:
                parsed = int(value)
            except ValueError:
                raise ConfigError(f"--{flag}", f"invalid number {value!r}") from None
            if kind == "uint" and parsed < 0:
                raise ConfigError(f"--{flag}", f"must not be negative, got {value}")
        res.setdefault(section, {})[key] = parsed
    return res


def read_resources_file(path: str) -> dict[str, Any]:
    import sys

    try:
        if path == "-":
            raw = sys.stdin.read()
        else:
            with open(path) as f:
                raw = f.read()
        doc = fastjson.loads(raw)
    except (OSError, ValueError) as e:
        raise ConfigError(path, f"cannot read resources: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(path, "expected a JSON object (linux.resources)")
    return doc


def update(store: StateStore, cid: str, resources: dict[str, Any]) -> None:
    from isobox.cgroups import CgroupManager
    from isobox.oci.config import validate_config

    st = store.load(cid)
    if st.status() == "stopped":
        raise ConflictError(f"container {cid} is not running")
    config = dict(st.config)
    linux = dict(config.get("linux", {}))
    merged = dict(linux.get("resources") or {})
    for section, values in resources.items():
        if isinstance(values, dict) and isinstance(merged.get(section), dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    linux["resources"] = merged
    config["linux"] = linux
    validate_config(config, "resources")
    CgroupManager.from_state(st.data["cgroup"]).update(resources)
    st.data["config"] = config
    st.save()
