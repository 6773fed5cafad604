"""Docker's JSON shapes to and from the engine's types: a container create body (``Config``
+ ``HostConfig`` + ``NetworkingConfig``) to :class:`~isobox.engine.options.CreateOptions`,
``filters=`` to pairs, a record to a ``GET /containers/json`` entry, a path's stat to
``X-Docker-Container-Path-Stat``.

Every value is type-checked; a wrong one is a 400 naming its field (``HostConfig.Memory:
expected an integer``). Fields Docker has and isobox does not use are ignored, as dockerd
ignores what its platform does not support."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import stat
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from isobox.api.errors import ApiError
from isobox.engine import mountspec, parse
from isobox.engine.options import (
    CreateOptions,
    DeviceSpec,
    HealthConfig,
    MountSpec,
    PortSpec,
    Resources,
    RestartPolicy,
)
from isobox.errors import ConfigError

if TYPE_CHECKING:
    from isobox.engine.copy import PathStat
    from isobox.engine.engine import Engine
    from isobox.engine.state import ContainerRow

KNOWN_LOG_DRIVERS = ("", "json-file", "k8s-file")


# ------------------------------------------------------------------------------ field access

def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, f"{field}: {message}")


def _obj(d: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    v = d.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _bad(f"{where}{key}", "expected an object")
    return v


def _str(d: dict[str, Any], key: str, where: str) -> str:
    v = d.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        raise _bad(f"{where}{key}", "expected a string")
    return v


def _bool(d: dict[str, Any], key: str, where: str) -> bool:
    v = d.get(key)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise _bad(f"{where}{key}", "expected true or false")
    return v


def _int(d: dict[str, Any], key: str, where: str) -> int:
    v = d.get(key)
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"{where}{key}", "expected an integer")
    return v


def _strs(d: dict[str, Any], key: str, where: str) -> list[str] | None:
    """A list of strings (a lone string is a one-element list: Docker's StrSlice)."""
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, str):
        return [v]
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _bad(f"{where}{key}", "expected a list of strings")
    return list(v)


def _str_map(d: dict[str, Any], key: str, where: str) -> dict[str, str]:
    v = _obj(d, key, where)
    if not all(isinstance(x, str) for x in v.values()):
        raise _bad(f"{where}{key}", "expected an object of strings")
    return dict(v)


def _checked(field: str, fn: Any, *args: Any) -> Any:
    """Run one of the engine's parsers; its ConfigError becomes a 400 naming ``field``."""
    try:
        return fn(*args)
    except ConfigError as e:
        raise _bad(field, e.message) from None


# ------------------------------------------------------------------------------ create

def create_options(body: Any, name: str) -> CreateOptions:
    """``POST /containers/create`` → the engine's create request."""
    if not isinstance(body, dict):
        raise ApiError(400, "request body: expected a JSON object")
    hc = _obj(body, "HostConfig", "")
    image = _str(body, "Image", "")
    if not image:
        raise _bad("Image", "no image given")
    cmd = _strs(body, "Cmd", "")
    entrypoint = _strs(body, "Entrypoint", "")
    if entrypoint is not None and entrypoint in ([], [""]):
        entrypoint = []                              # --entrypoint "": reset the image's
    network = _str(hc, "NetworkMode", "HostConfig.") or "default"
    if network == "default":
        network = "bridge"
    if network.startswith("container:"):
        raise _bad("HostConfig.NetworkMode", "joining another container's network is not "
                   "supported")
    isolation = _str(hc, "Isolation", "HostConfig.")
    if isolation in ("", "default", "process"):
        isolation = "container"
    if isolation not in ("container", "vm"):
        raise _bad("HostConfig.Isolation", f"invalid isolation {isolation!r} (supported: "
                   "default, vm)")
    seccomp, nnp = _checked("HostConfig.SecurityOpt", parse.parse_security_opts,
                            _strs(hc, "SecurityOpt", "HostConfig.") or [])
    publish_all = _bool(hc, "PublishAllPorts", "HostConfig.")
    stop_signal = _str(body, "StopSignal", "")
    if stop_signal:
        _checked("StopSignal", parse.parse_signal, stop_signal, "StopSignal")
    stop_timeout = body.get("StopTimeout")
    if stop_timeout is not None:
        stop_timeout = _int(body, "StopTimeout", "")
    return CreateOptions(
        image=image, command=tuple(cmd) if cmd else None,
        entrypoint=tuple(entrypoint) if entrypoint is not None else None,
        name=name,
        hostname=_checked("Hostname", parse.parse_hostname, _str(body, "Hostname", "")),
        user=_str(body, "User", ""),
        workdir=_str(body, "WorkingDir", ""), env=_env(body),
        labels=_str_map(body, "Labels", ""), tty=_bool(body, "Tty", ""),
        open_stdin=_bool(body, "OpenStdin", ""), stdin_once=_bool(body, "StdinOnce", ""),
        mounts=_mounts(hc),
        ports=_ports(hc, body, publish_all), publish_all=publish_all, network=network,
        network_aliases=_aliases(body, network),
        add_hosts=tuple(_checked("HostConfig.ExtraHosts", parse.parse_add_host, h)
                        for h in _strs(hc, "ExtraHosts", "HostConfig.") or []),
        dns=tuple(_checked("HostConfig.Dns", parse.parse_dns, d)
                  for d in _strs(hc, "Dns", "HostConfig.") or []),
        dns_search=tuple(_strs(hc, "DnsSearch", "HostConfig.") or []),
        dns_options=tuple(_strs(hc, "DnsOptions", "HostConfig.") or []),
        resources=_resources(hc), read_only=_bool(hc, "ReadonlyRootfs", "HostConfig."),
        cap_add=tuple(_strs(hc, "CapAdd", "HostConfig.") or []),
        cap_drop=tuple(_strs(hc, "CapDrop", "HostConfig.") or []),
        seccomp_profile=seccomp, no_new_privileges=nnp,
        privileged=_bool(hc, "Privileged", "HostConfig."), devices=_devices(hc),
        init=_bool(hc, "Init", "HostConfig."), restart=_restart(hc), stop_signal=stop_signal,
        stop_timeout=stop_timeout, healthcheck=_health(body),
        runtime=_runtime(hc), auto_remove=_bool(hc, "AutoRemove", "HostConfig."),
        log_opts=_log_opts(hc), isolation=isolation)


def _env(body: dict[str, Any]) -> tuple[str, ...]:
    out = []
    for item in _strs(body, "Env", "") or []:
        key, sep, _ = item.partition("=")
        if not key:
            raise _bad("Env", f"invalid environment variable: {item}")
        if sep:  # "KEY" alone means the client's value, which only the client knows
            out.append(item)
    return tuple(out)


def _mounts(hc: dict[str, Any]) -> tuple[MountSpec, ...]:
    out = [_checked("HostConfig.Binds", mountspec.parse_volume, b)
           for b in _strs(hc, "Binds", "HostConfig.") or []]
    raw = hc.get("Mounts")
    if raw is not None and not isinstance(raw, list):
        raise _bad("HostConfig.Mounts", "expected a list")
    for i, m in enumerate(raw or []):
        out.append(_checked(f"HostConfig.Mounts[{i}]", mountspec.parse_mount, _mount_csv(m, i)))
    for target, opts in _str_map(hc, "Tmpfs", "HostConfig.").items():
        spec = f"{target}:{opts}" if opts else target
        out.append(_checked("HostConfig.Tmpfs", mountspec.parse_tmpfs, spec))
    return tuple(out)


def _mount_csv(m: Any, i: int) -> str:
    """A ``Mounts`` entry as the ``--mount`` text the engine parses (one set of rules)."""
    where = f"HostConfig.Mounts[{i}]."
    if not isinstance(m, dict):
        raise _bad(where[:-1], "expected an object")
    fields = [f"type={_str(m, 'Type', where) or 'volume'}", f"target={_str(m, 'Target', where)}"]
    if _str(m, "Source", where):
        fields.append(f"source={_str(m, 'Source', where)}")
    if _bool(m, "ReadOnly", where):
        fields.append("readonly")
    prop = _str(_obj(m, "BindOptions", where), "Propagation", where + "BindOptions.")
    if prop:
        fields.append(f"bind-propagation={prop}")
    if _bool(_obj(m, "VolumeOptions", where), "NoCopy", where + "VolumeOptions."):
        fields.append("volume-nocopy")
    tmpfs = _obj(m, "TmpfsOptions", where)
    if _int(tmpfs, "SizeBytes", where + "TmpfsOptions."):
        fields.append(f"tmpfs-size={_int(tmpfs, 'SizeBytes', where)}")
    if _int(tmpfs, "Mode", where + "TmpfsOptions."):
        fields.append(f"tmpfs-mode={_int(tmpfs, 'Mode', where):o}")
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(fields)
    return buf.getvalue()


def _port_key(key: str, field: str) -> tuple[int, str]:
    port, _, proto = key.partition("/")
    proto = (proto or "tcp").lower()
    if not port.isdigit() or not 0 < int(port) <= 65535 or proto not in ("tcp", "udp"):
        raise _bad(field, f"invalid port {key!r} (expected PORT[/tcp|udp])")
    return int(port), proto


def _ports(hc: dict[str, Any], body: dict[str, Any], publish_all: bool) -> tuple[PortSpec, ...]:
    out: list[PortSpec] = []
    for key, bindings in _obj(hc, "PortBindings", "HostConfig.").items():
        field = f"HostConfig.PortBindings[{key}]"
        port, proto = _port_key(key, field)
        if bindings is None:
            bindings = [{}]
        if not isinstance(bindings, list):
            raise _bad(field, "expected a list of bindings")
        for b in bindings or [{}]:
            if not isinstance(b, dict):
                raise _bad(field, "expected {HostIp, HostPort}")
            host_port = _str(b, "HostPort", field + ".")
            if host_port and (not host_port.isdigit() or int(host_port) > 65535):
                raise _bad(field + ".HostPort", f"invalid host port {host_port!r}")
            ip = _str(b, "HostIp", field + ".")
            spec = f"{ip}:{host_port}:{port}/{proto}" if ip else \
                f"{host_port}:{port}/{proto}" if host_port else f"{port}/{proto}"
            out.extend(_checked(field, parse.parse_port, spec))
    if publish_all:  # -P: the exposed ports the client named, on ports the host picks
        have = {(p.container_port, p.protocol) for p in out}
        for key in _obj(body, "ExposedPorts", ""):
            port, proto = _port_key(key, f"ExposedPorts[{key}]")
            if (port, proto) not in have:
                out.append(PortSpec(container_port=port, protocol=proto))
    return tuple(out)


def _aliases(body: dict[str, Any], network: str) -> tuple[str, ...]:
    endpoints = _obj(_obj(body, "NetworkingConfig", ""), "EndpointsConfig",
                     "NetworkingConfig.")
    ep = endpoints.get(network)
    if isinstance(ep, dict):  # `run --ip`: the engine allocates addresses itself
        where = f"NetworkingConfig.EndpointsConfig.{network}."
        ipam = _obj(ep, "IPAMConfig", where)
        for key in ("IPv4Address", "IPv6Address"):
            if _str(ipam, key, where + "IPAMConfig."):
                raise _bad(f"{where}IPAMConfig.{key}", "static addresses are not supported")
    if not isinstance(ep, dict) or network in ("bridge", "host", "none"):
        return ()
    return tuple(_strs(ep, "Aliases", f"NetworkingConfig.EndpointsConfig.{network}.") or [])


def _resources(hc: dict[str, Any]) -> Resources:
    w = "HostConfig."
    memory = _int(hc, "Memory", w)
    if memory < 0:
        raise _bad("HostConfig.Memory", "cannot be negative")
    if 0 < memory < 6 * 1024 * 1024:
        raise _bad("HostConfig.Memory", "Minimum memory limit allowed is 6MB")
    nano = _int(hc, "NanoCpus", w)
    period, quota = _int(hc, "CpuPeriod", w), _int(hc, "CpuQuota", w)
    if nano and (period or quota):
        raise _bad("HostConfig.NanoCpus", "conflicting options: NanoCpus and CpuPeriod/"
                   "CpuQuota cannot both be set")
    if not nano and quota > 0:
        nano = int(Fraction(quota, period or 100_000) * 1_000_000_000)
    ncpu = os.cpu_count() or 1
    if nano < 0 or nano > ncpu * 1_000_000_000:
        raise _bad("HostConfig.NanoCpus", f"range of CPUs is from 0.01 to {ncpu}.00, as "
                   f"there are only {ncpu} CPUs available")
    ulimits = []
    raw = hc.get("Ulimits")
    if raw is not None and not isinstance(raw, list):
        raise _bad("HostConfig.Ulimits", "expected a list")
    for i, u in enumerate(raw or []):
        where = f"HostConfig.Ulimits[{i}]."
        if not isinstance(u, dict):
            raise _bad(where[:-1], "expected {Name, Soft, Hard}")
        spec = f"{_str(u, 'Name', where)}={_int(u, 'Soft', where)}:{_int(u, 'Hard', where)}"
        ulimits.append(spec)
        _checked(where[:-1], parse.parse_ulimit, spec)
    pids = hc.get("PidsLimit")
    return Resources(memory=memory, memory_swap=_int(hc, "MemorySwap", w), nano_cpus=nano,
                     cpu_shares=_int(hc, "CpuShares", w),
                     cpuset_cpus=_str(hc, "CpusetCpus", w),
                     pids_limit=_int(hc, "PidsLimit", w) if pids is not None else 0,
                     ulimits=parse.parse_ulimits(ulimits))


def _devices(hc: dict[str, Any]) -> tuple[DeviceSpec, ...]:
    raw = hc.get("Devices")
    if raw is not None and not isinstance(raw, list):
        raise _bad("HostConfig.Devices", "expected a list")
    out = []
    for i, d in enumerate(raw or []):
        where = f"HostConfig.Devices[{i}]."
        if not isinstance(d, dict):
            raise _bad(where[:-1], "expected {PathOnHost, PathInContainer, CgroupPermissions}")
        host = _str(d, "PathOnHost", where)
        spec = ":".join(x for x in (host, _str(d, "PathInContainer", where) or host,
                                    _str(d, "CgroupPermissions", where) or "rwm"))
        out.append(_checked(where[:-1], parse.parse_device, spec))
    return tuple(out)


def _restart(hc: dict[str, Any]) -> RestartPolicy:
    rp = _obj(hc, "RestartPolicy", "HostConfig.")
    name = _str(rp, "Name", "HostConfig.RestartPolicy.") or "no"
    count = _int(rp, "MaximumRetryCount", "HostConfig.RestartPolicy.")
    text = f"{name}:{count}" if name == "on-failure" and count else name
    policy: RestartPolicy = _checked("HostConfig.RestartPolicy", parse.parse_restart, text)
    return policy


def _health(body: dict[str, Any]) -> HealthConfig | None:
    hc = _obj(body, "Healthcheck", "")
    if not hc:
        return None
    w = "Healthcheck."
    test = _strs(hc, "Test", w) or []
    if test and test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        raise _bad("Healthcheck.Test", f"unknown kind {test[0]!r} (NONE, CMD or CMD-SHELL)")
    values = {k: _int(hc, k, w) for k in ("Interval", "Timeout", "StartPeriod", "Retries")}
    for k, v in values.items():
        if v < 0:
            raise _bad(f"Healthcheck.{k}", "cannot be negative")
        if k != "Retries" and 0 < v < 1_000_000:
            raise _bad(f"Healthcheck.{k}", "cannot be less than 1ms")
    return HealthConfig(test=tuple(test), interval_ns=values["Interval"],
                        timeout_ns=values["Timeout"], start_period_ns=values["StartPeriod"],
                        retries=values["Retries"])


def _runtime(hc: dict[str, Any]) -> str:
    runtime = _str(hc, "Runtime", "HostConfig.")
    return "" if runtime in ("runc-default", "isobox-runtime") else runtime


def _log_opts(hc: dict[str, Any]) -> dict[str, str]:
    lc = _obj(hc, "LogConfig", "HostConfig.")
    driver = _str(lc, "Type", "HostConfig.LogConfig.")
    if driver not in KNOWN_LOG_DRIVERS:
        raise ApiError(400, f"logger: no log driver named '{driver}' is registered")
    opts = _str_map(lc, "Config", "HostConfig.LogConfig.")
    if opts:
        from isobox.engine.logs import parse_log_opts

        _checked("HostConfig.LogConfig.Config", parse_log_opts, dict(opts))
    return opts


# ------------------------------------------------------------------------------ filters

def parse_filters(text: str, field: str = "filters") -> dict[str, list[str]]:
    """``{"name":{"x":true}}`` (or the older ``{"name":["x"]}``) → {"name": ["x"]}."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise _bad(field, f"malformed JSON: {e}") from None
    if not isinstance(raw, dict):
        raise _bad(field, "expected a JSON object")
    out: dict[str, list[str]] = {}
    for key, values in raw.items():
        if isinstance(values, dict):
            out[key] = [str(v) for v, on in values.items() if on]
        elif isinstance(values, list):
            out[key] = [str(v) for v in values]
        else:
            raise _bad(f"{field}.{key}", "expected an object or a list")
    return out


# ------------------------------------------------------------------------------ list entries

def container_summary(engine: Engine, row: ContainerRow, *, size: bool = False
                      ) -> dict[str, Any]:
    """One entry of ``GET /containers/json``."""
    from isobox.engine.inspect import inspect_container
    from isobox.engine.listing import command_args, status_text

    full = inspect_container(engine, row, size=size)
    status = engine.effective_status(row)
    ports: list[dict[str, Any]] = []
    published = set()
    for p in (row.network or {}).get("ports") or [] if status in ("running", "paused") else []:
        proto = str(p.get("protocol") or "tcp")
        ports.append({"IP": str(p.get("host_ip") or "0.0.0.0"),
                      "PrivatePort": int(p["container_port"]),
                      "PublicPort": int(p.get("host_port") or 0), "Type": proto})
        published.add((int(p["container_port"]), proto))
    for key in (full["Config"].get("ExposedPorts") or {}):
        port, _, proto = str(key).partition("/")
        if port.isdigit() and (int(port), proto or "tcp") not in published:
            ports.append({"PrivatePort": int(port), "Type": proto or "tcp"})
    out: dict[str, Any] = {
        "Id": row.id, "Names": ["/" + row.name], "Image": row.image_ref,
        "ImageID": row.image_id, "Command": " ".join(command_args(engine, row)),
        "Created": int(row.created), "Ports": ports,
        "Labels": full["Config"].get("Labels") or {},
        "State": "created" if status == "creating" else status,
        "Status": status_text(engine, row),
        "HostConfig": {"NetworkMode": full["HostConfig"]["NetworkMode"],
                       "Isolation": full["HostConfig"].get("Isolation") or ""},
        "NetworkSettings": {"Networks": full["NetworkSettings"]["Networks"]},
        "Mounts": full["Mounts"]}
    if size:
        out["SizeRw"], out["SizeRootFs"] = full.get("SizeRw", 0), full.get("SizeRootFs", 0)
    return out


def docker_inspect(engine: Engine, row: ContainerRow, *, size: bool = False) -> dict[str, Any]:
    """``GET /containers/{id}/json``: the engine's inspect, with the log driver named as
    docker-py expects to read logs (``json-file``: the API serves them in Docker's shape)."""
    from isobox.engine.inspect import inspect_container

    out = inspect_container(engine, row, size=size)
    out["HostConfig"]["LogConfig"]["Type"] = "json-file"
    return out


# ------------------------------------------------------------------------------ archive

_GO_MODE_BITS = ((stat.S_ISDIR, 1 << 31), (stat.S_ISLNK, 1 << 27), (stat.S_ISBLK, 1 << 26),
                 (stat.S_ISCHR, (1 << 26) | (1 << 21)), (stat.S_ISFIFO, 1 << 25),
                 (stat.S_ISSOCK, 1 << 24))


def go_file_mode(mode: int) -> int:
    """A Unix ``st_mode`` as Go's ``os.FileMode`` (what the docker CLI decodes)."""
    out = mode & 0o777
    for test, bit in _GO_MODE_BITS:
        if test(mode):
            out |= bit
    if mode & stat.S_ISUID:
        out |= 1 << 23
    if mode & stat.S_ISGID:
        out |= 1 << 22
    if mode & stat.S_ISVTX:
        out |= 1 << 20
    return out


def path_stat_header(st: PathStat) -> str:
    """``X-Docker-Container-Path-Stat``: base64 of Docker's ContainerPathStat JSON."""
    from isobox.engine.inspect import rfc3339nano

    doc = {"name": st.name, "size": st.size, "mode": go_file_mode(st.mode),
           "mtime": rfc3339nano(st.mtime), "linkTarget": st.link_target}
    return base64.b64encode(json.dumps(doc).encode()).decode()
