"""``inspect``: a container record in the JSON shape of Docker's ``GET /containers/{id}/json``.

The CLI prints it and the API serves it; docker-py and the docker CLI read many of these keys
(``State.Running``, ``Config.Tty``, ``HostConfig.LogConfig.Type``, ``NetworkSettings.Ports``),
so absent values keep Docker's types (``null`` lists, ``{}`` maps, zero times).
"""

from __future__ import annotations

import datetime
import json
import os
from typing import TYPE_CHECKING, Any

from isobox.engine.state import ContainerRow
from isobox.errors import IsoboxError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine

ZERO_TIME = "0001-01-01T00:00:00Z"
DEFAULT_STOP_TIMEOUT = 10


def rfc3339nano(ts: float) -> str:
    """Unix seconds as Go's RFC3339Nano in UTC (``2026-11-27T02:47:20.123456789Z``)."""
    if ts <= 0:
        return ZERO_TIME
    whole = int(ts)
    nanos = round((ts - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    base = datetime.datetime.fromtimestamp(whole, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f".{nanos:09d}".rstrip("0").rstrip(".")
    return f"{base}{frac}Z"


def read_spec(engine: Engine, cid: str) -> dict[str, Any]:
    try:
        with open(os.path.join(engine.layout.container_dir(cid), "config.json")) as f:
            spec = json.load(f)
    except (OSError, ValueError):
        return {}
    return spec if isinstance(spec, dict) else {}


def _state(engine: Engine, row: ContainerRow) -> dict[str, Any]:
    status = engine.effective_status(row)
    if status == "creating":
        status = "created"
    running = status in ("running", "paused", "restarting")
    state: dict[str, Any] = {
        "Status": status, "Running": running, "Paused": status == "paused",
        "Restarting": status == "restarting", "OOMKilled": bool(row.oom_killed),
        "Dead": status == "dead", "Pid": row.pid if running else 0,
        "ExitCode": row.exit_code, "Error": row.error,
        "StartedAt": rfc3339nano(row.started_at), "FinishedAt": rfc3339nano(row.finished_at)}
    from isobox.engine.health import effective_probe

    health = row.health or {}
    if effective_probe(row.options) is not None or health.get("status"):
        state["Health"] = {"Status": str(health.get("status") or "starting"),
                           "FailingStreak": int(health.get("failing_streak") or 0),
                           "Log": list(health.get("log") or [])}
    return state


def _ports_key(port: Any, proto: Any) -> str:
    return f"{port}/{proto or 'tcp'}"


def _port_bindings(opts: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    for p in opts.get("ports") or []:
        key = _ports_key(p.get("container_port"), p.get("protocol"))
        host_port = int(p.get("host_port") or 0)
        out.setdefault(key, []).append({"HostIp": str(p.get("host_ip") or ""),
                                        "HostPort": str(host_port) if host_port else ""})
    return out


def _exposed(opts: dict[str, Any]) -> dict[str, dict[str, Any]]:
    exposed: dict[str, dict[str, Any]] = {}
    for key in (opts.get("image_config") or {}).get("ExposedPorts") or {}:
        exposed[str(key)] = {}
    for p in opts.get("ports") or []:
        exposed[_ports_key(p.get("container_port"), p.get("protocol"))] = {}
    return exposed


def _binds(opts: dict[str, Any]) -> list[str] | None:
    binds = []
    for m in opts.get("mounts") or []:
        if m.get("type") == "bind" or (m.get("type") == "volume" and m.get("source")):
            mode = ["ro"] if m.get("read_only") else []
            mode += [o for o in m.get("options") or [] if "=" not in o]
            binds.append(f"{m['source']}:{m['target']}" + (f":{','.join(mode)}" if mode
                                                            else ""))
    return binds or None


def _mounts(engine: Engine, opts: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    resolved = opts.get("mounts_resolved")
    if resolved is None:
        resolved = opts.get("mounts") or []
    for m in resolved:
        kind = str(m.get("type") or "bind")
        rw = not m.get("read_only")
        options = [str(o) for o in m.get("options") or []]
        propagation = next((o for o in options if o in ("private", "rprivate", "shared",
                                                        "rshared", "slave", "rslave")), "")
        entry: dict[str, Any] = {"Type": kind, "Source": str(m.get("source") or ""),
                                 "Destination": str(m.get("target") or ""),
                                 "Mode": ",".join(o for o in options if "=" not in o
                                                  and o != propagation),
                                 "RW": rw, "Propagation": propagation}
        if kind == "volume":
            name = str(m.get("source") or "")
            entry["Name"] = name
            entry["Driver"] = "local"
            entry["Source"] = os.path.join(engine.layout.root, "volumes", name, "_data")
            entry["Propagation"] = ""
        elif kind == "bind":
            entry["Propagation"] = propagation or "rprivate"
        else:
            entry["Source"] = ""
        out.append(entry)
    return out


def _host_config(opts: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    res = opts.get("resources") or {}
    restart = opts.get("restart") or {}
    cpu = ((spec.get("linux") or {}).get("resources") or {}).get("cpu") or {}
    network = str(opts.get("network") or "bridge")
    log_opts = {str(k): str(v) for k, v in (opts.get("log_opts") or {}).items()}
    return {
        "Binds": _binds(opts),
        "ContainerIDFile": "",
        "LogConfig": {"Type": "k8s-file", "Config": log_opts},
        "NetworkMode": network,
        "PortBindings": _port_bindings(opts),
        "RestartPolicy": {"Name": str(restart.get("name") or "no"),
                          "MaximumRetryCount": int(restart.get("maximum_retry_count") or 0)},
        "AutoRemove": bool(opts.get("auto_remove")),
        "VolumeDriver": "", "VolumesFrom": None,
        "CapAdd": list(opts.get("cap_add") or []) or None,
        "CapDrop": list(opts.get("cap_drop") or []) or None,
        "CgroupnsMode": "private",
        "Dns": list(opts.get("dns") or []),
        "DnsOptions": list(opts.get("dns_options") or []),
        "DnsSearch": list(opts.get("dns_search") or []),
        "ExtraHosts": [f"{h}:{a}" for h, a in opts.get("add_hosts") or []] or None,
        "GroupAdd": None, "IpcMode": "private", "Cgroup": "", "Links": None,
        "OomScoreAdj": 0, "PidMode": "", "Privileged": bool(opts.get("privileged")),
        "PublishAllPorts": bool(opts.get("publish_all")),
        "ReadonlyRootfs": bool(opts.get("read_only")),
        "SecurityOpt": _security_opt(opts),
        "UTSMode": "", "UsernsMode": "", "ShmSize": 67108864,
        "Runtime": str(opts.get("runtime") or "isobox-runtime"),
        "Isolation": "vm" if opts.get("isolation") == "vm" else "",
        "CpuShares": int(res.get("cpu_shares") or 0),
        "Memory": int(res.get("memory") or 0),
        "NanoCpus": int(res.get("nano_cpus") or 0),
        "CgroupParent": "",
        "CpuPeriod": 0, "CpuQuota": 0,
        "CpusetCpus": str(res.get("cpuset_cpus") or ""), "CpusetMems": "",
        "Devices": [{"PathOnHost": d.get("host_path"), "PathInContainer": d.get(
            "container_path"), "CgroupPermissions": d.get("permissions")}
            for d in opts.get("devices") or []],
        "MemoryReservation": 0,
        "MemorySwap": _memory_swap(res),
        "MemorySwappiness": None, "OomKillDisable": False,
        "PidsLimit": int(res.get("pids_limit") or 0) or None,
        "Ulimits": [{"Name": u.get("name"), "Soft": u.get("soft"), "Hard": u.get("hard")}
                    for u in res.get("ulimits") or []] or None,
        "Init": bool(opts.get("init")) or None,
        "Tmpfs": {str(m.get("target")): ",".join(m.get("options") or [])
                  for m in opts.get("mounts") or [] if m.get("type") == "tmpfs"} or None,
        "MaskedPaths": list((spec.get("linux") or {}).get("maskedPaths") or []),
        "ReadonlyPaths": list((spec.get("linux") or {}).get("readonlyPaths") or []),
        "CpuQuotaEffective": int(cpu.get("quota") or 0),
    }


def _memory_swap(res: dict[str, Any]) -> int:
    mem = int(res.get("memory") or 0)
    swap = int(res.get("memory_swap") or 0)
    if mem and swap == 0:
        return 2 * mem  # Docker's default: as much swap as memory
    return swap


def _security_opt(opts: dict[str, Any]) -> list[str] | None:
    out = []
    if opts.get("seccomp_profile"):
        out.append(f"seccomp={opts['seccomp_profile']}")
    if opts.get("no_new_privileges"):
        out.append("no-new-privileges")
    return out or None


def _health_config(opts: dict[str, Any]) -> dict[str, Any] | None:
    hc = opts.get("healthcheck")
    if not hc:
        img = (opts.get("image_config") or {}).get("Healthcheck")
        return img if isinstance(img, dict) else None
    return {"Test": list(hc.get("test") or []), "Interval": int(hc.get("interval_ns") or 0),
            "Timeout": int(hc.get("timeout_ns") or 0),
            "StartPeriod": int(hc.get("start_period_ns") or 0),
            "Retries": int(hc.get("retries") or 0)}


def _config(row: ContainerRow, spec: dict[str, Any]) -> dict[str, Any]:
    opts = row.options
    img = opts.get("image_config") or {}
    process = spec.get("process") or {}
    labels = {**(img.get("Labels") or {}), **(opts.get("labels") or {})}
    entrypoint = opts.get("entrypoint")
    if entrypoint is None:
        entrypoint = img.get("Entrypoint")
    cmd = opts.get("command")
    if cmd is None:
        cmd = img.get("Cmd")
    stop_timeout = opts.get("stop_timeout")
    return {
        "Hostname": str(opts.get("hostname_resolved") or opts.get("hostname") or row.id[:12]),
        "Domainname": "",
        "User": str(opts.get("user") or img.get("User") or ""),
        "AttachStdin": False, "AttachStdout": False, "AttachStderr": False,
        "ExposedPorts": _exposed(opts) or None,
        "Tty": bool(opts.get("tty")),
        "OpenStdin": bool(opts.get("open_stdin")),
        "StdinOnce": bool(opts.get("stdin_once")),
        "Env": list(process.get("env") or opts.get("env") or []),
        "Cmd": list(cmd) if cmd is not None else None,
        "Healthcheck": _health_config(opts),
        "Image": row.image_ref,
        "Volumes": img.get("Volumes") or None,
        "WorkingDir": str(process.get("cwd") or opts.get("workdir") or ""),
        "Entrypoint": list(entrypoint) if entrypoint else None,
        "OnBuild": None,
        "Labels": labels,
        "StopSignal": str(opts.get("stop_signal") or img.get("StopSignal") or "SIGTERM"),
        "StopTimeout": DEFAULT_STOP_TIMEOUT if stop_timeout is None else int(stop_timeout),
    }


def _network_settings(engine: Engine, row: ContainerRow) -> dict[str, Any]:
    net = row.network or {}
    mode = str(row.options.get("network") or "bridge")
    running = engine.effective_status(row) in ("running", "paused", "restarting")
    endpoints = net.get("endpoints") or {} if running else {}
    ports: dict[str, list[dict[str, str]] | None] = {k: None for k in _exposed(row.options)}
    if running:
        for p in net.get("ports") or []:
            key = _ports_key(p.get("container_port"), p.get("protocol"))
            if ports.get(key) is None:
                ports[key] = []
            bindings = ports[key]
            assert bindings is not None
            bindings.append({"HostIp": str(p.get("host_ip") or "0.0.0.0"),
                             "HostPort": str(p.get("host_port") or "")})
    from isobox.engine.networking import endpoint_configs

    configs = endpoint_configs(row.options)
    networks: dict[str, Any] = {}
    # running: what it joined; else what it will join (on none at all: Docker's {})
    joined = list(endpoints) if running else list(configs)
    names = [mode] if mode in ("host", "none") else joined
    for name in names:
        ep = endpoints.get(name) or {}
        aliases = configs.get(name) or []
        networks[name] = {
            "IPAMConfig": None, "Links": None,
            "Aliases": list(aliases) or None,
            "MacAddress": str(ep.get("mac") or ""),
            "NetworkID": _network_id(engine, name),
            "EndpointID": (row.id + name)[:64] if ep else "",
            "Gateway": str(ep.get("gateway") or ""),
            "IPAddress": str(ep.get("ip") or ""),
            "IPPrefixLen": int(ep.get("prefixlen") or 0),
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "DNSNames": list(dict.fromkeys([row.name, *aliases, row.id[:12]]))
            if ep and name != "bridge" else None,
        }
    first: dict[str, Any] = next(iter(endpoints.values()), {}) if endpoints else {}
    sandbox = str(net.get("netns") or "") if running else ""
    return {
        "Bridge": "", "SandboxID": row.id if sandbox else "",
        "SandboxKey": sandbox, "HairpinMode": False, "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0, "Ports": ports,
        "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None,
        "EndpointID": (row.id + mode)[:64] if first else "",
        "Gateway": str(first.get("gateway") or ""),
        "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
        "IPAddress": str(first.get("ip") or ""),
        "IPPrefixLen": int(first.get("prefixlen") or 0),
        "IPv6Gateway": "", "MacAddress": str(first.get("mac") or ""),
        "Networks": networks,
    }


def _network_id(engine: Engine, name: str) -> str:
    try:
        return str(engine.networks.inspect(name).id)
    except (IsoboxError, OSError):  # a network that went away
        return ""


def inspect_container(engine: Engine, row: ContainerRow, *, size: bool = False
                      ) -> dict[str, Any]:
    """Docker's container JSON for ``row`` (``size``: add SizeRw / SizeRootFs, which walk the
    snapshot's upper directory and the image's layers)."""
    spec = read_spec(engine, row.id)
    args = list((spec.get("process") or {}).get("args") or [])
    cdir = engine.layout.container_dir(row.id)
    out: dict[str, Any] = {
        "Id": row.id,
        "Created": rfc3339nano(row.created),
        "Path": args[0] if args else "",
        "Args": args[1:],
        "State": _state(engine, row),
        "Image": row.image_id,
        "ResolvConfPath": os.path.join(cdir, "resolv.conf"),
        "HostnamePath": os.path.join(cdir, "hostname"),
        "HostsPath": os.path.join(cdir, "hosts"),
        "LogPath": engine.layout.log_path(row.id),
        "Name": "/" + row.name,
        "RestartCount": row.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": _host_config(row.options, spec),
        "GraphDriver": _graph_driver(engine, row),
        "Mounts": _mounts(engine, row.options),
        "Config": _config(row, spec),
        "NetworkSettings": _network_settings(engine, row),
    }
    if size:
        out["SizeRw"], out["SizeRootFs"] = container_sizes(engine, row)
    if row.options.get("isolation") == "vm":  # isobox's own: guest size, limit, overhead
        from isobox.engine.vm_resources import vm_resources

        out["VM"] = vm_resources(engine, row)
    return out


def _graph_driver(engine: Engine, row: ContainerRow) -> dict[str, Any]:
    try:
        snap = engine.snapshots.get(row.id)
    except (IsoboxError, OSError):  # a record whose snapshot is gone still inspects
        return {"Name": "overlay2", "Data": None}
    return {"Name": "overlay2", "Data": {
        "LowerDir": ":".join(engine.snapshots.lowerdirs(snap)),
        "MergedDir": snap.rootfs, "UpperDir": snap.upper,
        "WorkDir": os.path.join(snap.path, "work")}}


def container_sizes(engine: Engine, row: ContainerRow) -> tuple[int, int]:
    try:
        rw = engine.snapshots.size(row.id)
    except (IsoboxError, OSError):
        rw = 0
    try:
        image = engine.store.get(row.image_id).size
    except (IsoboxError, OSError):
        image = 0
    return rw, rw + int(image)
