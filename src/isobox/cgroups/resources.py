"""Validation of ``linux.resources`` before anything is written.

The OCI layer has checked JSON types; this checks values and ranges so that a bad document
fails with a :class:`ConfigError` naming the field, and never half-applies. Unknown keys are
ignored (runtime-spec: "unknown properties MUST be ignored"). Kernel-side limits (a period
below 1 ms, a CPU that does not exist) are left to the kernel, whose refusal becomes a
:class:`SystemSetupError` naming the file and value.
"""

from __future__ import annotations

from isobox.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

R = "config.json: linux.resources"
_U64 = (1 << 64) - 1
_I64 = (1 << 63) - 1


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(where, "must be an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(where, "must be an array")
    return value


def _int(d: dict[str, Any], key: str, where: str, lo: int, hi: int = _I64) -> None:
    value = d.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}.{key}", "must be an integer")
    if not lo <= value <= hi:
        if hi >= _I64:
            raise ConfigError(f"{where}.{key}", f"must be ≥ {lo}")
        raise ConfigError(f"{where}.{key}", f"must be between {lo} and {hi}")


def _bool(d: dict[str, Any], key: str, where: str) -> None:
    if d.get(key) is not None and not isinstance(d[key], bool):
        raise ConfigError(f"{where}.{key}", "must be true or false")


def _str(d: dict[str, Any], key: str, where: str) -> None:
    if d.get(key) is not None and not isinstance(d[key], str):
        raise ConfigError(f"{where}.{key}", "must be a string")


def _cpu_list(d: dict[str, Any], key: str, where: str) -> None:
    _str(d, key, where)
    value = d.get(key) or ""
    if value.strip() and set(value.strip()) - set("0123456789,-"):
        raise ConfigError(f"{where}.{key}", f'"{value}" is not a list like "0-3,5"')


def _memory(m: dict[str, Any], where: str) -> None:
    for key in ("limit", "reservation", "swap", "kernel", "kernelTCP"):
        _int(m, key, where, -1)
    _int(m, "swappiness", where, 0, 100)
    for key in ("disableOOMKiller", "useHierarchy", "checkBeforeUpdate"):
        _bool(m, key, where)
    limit, swap = m.get("limit") or 0, m.get("swap") or 0
    if limit > 0 and swap > 0 and swap < limit:
        raise ConfigError(f"{where}.swap", f"memory+swap limit ({swap}) must be ≥ the memory "
                          f"limit ({limit})")


def _cpu(c: dict[str, Any], where: str) -> None:
    _int(c, "shares", where, 0, _U64)
    _int(c, "quota", where, -1)
    _int(c, "period", where, 0, _U64)
    _int(c, "realtimeRuntime", where, -1)
    _int(c, "realtimePeriod", where, 0, _U64)
    _int(c, "burst", where, 0, _U64)
    _int(c, "idle", where, 0, 1)
    _cpu_list(c, "cpus", where)
    _cpu_list(c, "mems", where)


def _devnums(d: dict[str, Any], where: str) -> None:
    for key in ("major", "minor"):
        if d.get(key) is None:
            raise ConfigError(f"{where}.{key}", "is required")
        _int(d, key, where, 0, (1 << 32) - 1)


def _block_io(b: dict[str, Any], where: str) -> None:
    for key in ("weight", "leafWeight"):
        _int(b, key, where, 0, 1000)
        if b.get(key) and b[key] < 10:
            raise ConfigError(f"{where}.{key}", "must be between 10 and 1000 (0: unset)")
    for i, wd in enumerate(_list(b.get("weightDevice") or [], f"{where}.weightDevice")):
        w = f"{where}.weightDevice[{i}]"
        _devnums(_obj(wd, w), w)
        for key in ("weight", "leafWeight"):
            _int(wd, key, w, 0, 1000)
            if wd.get(key) and wd[key] < 10:
                raise ConfigError(f"{w}.{key}", "must be between 10 and 1000 (0: unset)")
    for key in ("throttleReadBpsDevice", "throttleWriteBpsDevice", "throttleReadIOPSDevice",
                "throttleWriteIOPSDevice"):
        for i, td in enumerate(_list(b.get(key) or [], f"{where}.{key}")):
            w = f"{where}.{key}[{i}]"
            _devnums(_obj(td, w), w)
            if td.get("rate") is None:
                raise ConfigError(f"{w}.rate", "is required")
            _int(td, "rate", w, 0, _U64)


def _hugepages(h: list[Any], where: str) -> None:
    for i, item in enumerate(h):
        w = f"{where}[{i}]"
        _obj(item, w)
        size = item.get("pageSize")
        if not isinstance(size, str) or not size[:-2].isdigit() or size[-2:] not in (
                "KB", "MB", "GB", "TB"):
            raise ConfigError(f"{w}.pageSize", f'"{size}" is not a page size like "2MB"')
        if item.get("limit") is None:
            raise ConfigError(f"{w}.limit", "is required")
        _int(item, "limit", w, 0, _U64)


def _network(n: dict[str, Any], where: str) -> None:
    _int(n, "classID", where, 0, (1 << 32) - 1)
    for i, p in enumerate(_list(n.get("priorities") or [], f"{where}.priorities")):
        w = f"{where}.priorities[{i}]"
        _obj(p, w)
        name = p.get("name")
        if not isinstance(name, str) or not name or " " in name or "/" in name:
            raise ConfigError(f"{w}.name", f'"{name}" is not an interface name')
        _int(p, "priority", w, 0, (1 << 32) - 1)


def _rdma(r: dict[str, Any], where: str) -> None:
    for dev, lim in r.items():
        w = f'{where}["{dev}"]'
        if not dev or " " in dev or "\n" in dev:
            raise ConfigError(w, "is not an RDMA device name")
        _obj(lim, w)
        _int(lim, "hcaHandles", w, 0, (1 << 32) - 1)
        _int(lim, "hcaObjects", w, 0, (1 << 32) - 1)


def _unified(u: dict[str, Any], where: str) -> None:
    for key, value in u.items():
        w = f'{where}["{key}"]'
        if not key or "/" in key or key.startswith(".") or "\0" in key:
            raise ConfigError(w, "is not a cgroup file name")
        if not isinstance(value, str):
            raise ConfigError(w, "must be a string")


def pids_value(limit: int) -> str:
    """runc: > 0 as is, 0 means 1 (as systemd's TasksMax), < 0 means unlimited."""
    if limit > 0:
        return str(limit)
    return "1" if limit == 0 else "max"


def rdma_lines(rdma: dict[str, Any]) -> list[str]:
    """``rdma.max`` lines (same format in v1 and v2)."""
    lines = []
    for dev, lim in rdma.items():
        parts = [dev]
        if lim.get("hcaHandles") is not None:
            parts.append(f"hca_handle={lim['hcaHandles']}")
        if lim.get("hcaObjects") is not None:
            parts.append(f"hca_object={lim['hcaObjects']}")
        if len(parts) > 1:
            lines.append(" ".join(parts))
    return lines


def validate(res: Any) -> None:
    """Raise :class:`ConfigError` for the first bad value in a ``linux.resources`` object."""
    _obj(res, R)
    if res.get("memory") is not None:
        _memory(_obj(res["memory"], f"{R}.memory"), f"{R}.memory")
    if res.get("cpu") is not None:
        _cpu(_obj(res["cpu"], f"{R}.cpu"), f"{R}.cpu")
    if res.get("pids") is not None:
        pids = _obj(res["pids"], f"{R}.pids")
        _int(pids, "limit", f"{R}.pids", -(1 << 63))
    if res.get("blockIO") is not None:
        _block_io(_obj(res["blockIO"], f"{R}.blockIO"), f"{R}.blockIO")
    if res.get("hugepageLimits") is not None:
        _hugepages(_list(res["hugepageLimits"], f"{R}.hugepageLimits"), f"{R}.hugepageLimits")
    if res.get("network") is not None:
        _network(_obj(res["network"], f"{R}.network"), f"{R}.network")
    if res.get("rdma") is not None:
        _rdma(_obj(res["rdma"], f"{R}.rdma"), f"{R}.rdma")
    if res.get("unified") is not None:
        _unified(_obj(res["unified"], f"{R}.unified"), f"{R}.unified")
    if res.get("devices") is not None:
        from isobox.cgroups.devices import normalize

        normalize(res["devices"], f"{R}.devices")
