"""The engine's :class:`~isobox.engine.options.CreateOptions` as Docker's create body: the
inverse of :func:`isobox.api.docker_json.create_options`, so the remote CLI sends exactly what
``isobox run`` parsed (tests/api/test_sdk_create.py checks the round trip)."""

from __future__ import annotations

from typing import Any

from isobox.engine.options import CreateOptions, MountSpec
from isobox.errors import ConfigError


def _bind(m: MountSpec) -> str:
    opts = [*m.options, *(["ro"] if m.read_only else [])]
    head = f"{m.source}:{m.target}" if m.source else m.target
    return f"{head}:{','.join(opts)}" if opts else head


def _mounts(opts: CreateOptions, hc: dict[str, Any]) -> None:
    binds: list[str] = []
    mounts: list[dict[str, Any]] = []
    tmpfs: dict[str, str] = {}
    for m in opts.mounts:
        if m.type == "tmpfs":
            tmpfs[m.target] = ",".join(m.options)
        elif m.volume_nocopy:
            mounts.append({"Type": "volume", "Source": m.source, "Target": m.target,
                           "ReadOnly": m.read_only, "VolumeOptions": {"NoCopy": True}})
        else:
            binds.append(_bind(m))
    if binds:
        hc["Binds"] = binds
    if mounts:
        hc["Mounts"] = mounts
    if tmpfs:
        hc["Tmpfs"] = tmpfs


def _ports(opts: CreateOptions, body: dict[str, Any], hc: dict[str, Any]) -> None:
    bindings: dict[str, list[dict[str, str]]] = {}
    for p in opts.ports:
        key = f"{p.container_port}/{p.protocol}"
        bindings.setdefault(key, []).append(
            {"HostIp": p.host_ip, "HostPort": str(p.host_port) if p.host_port else ""})
    if bindings:
        hc["PortBindings"] = bindings
        body["ExposedPorts"] = {k: {} for k in bindings}
    hc["PublishAllPorts"] = opts.publish_all


def _security(opts: CreateOptions) -> list[str]:
    out = []
    if opts.seccomp_profile:
        out.append(f"seccomp={opts.seccomp_profile}")
    if opts.no_new_privileges:
        out.append("no-new-privileges")
    return out


def create_body(opts: CreateOptions) -> dict[str, Any]:
    """``POST /containers/create``'s body (the name goes in the query)."""
    if opts.vm_kernel or opts.vm_initrd:
        raise ConfigError("--kernel/--initrd", "a guest kernel or initramfs of your own is a "
                          "file on this host: not available through a remote server")
    r = opts.resources
    hc: dict[str, Any] = {
        "NetworkMode": opts.network, "Privileged": opts.privileged,
        "ReadonlyRootfs": opts.read_only, "CapAdd": list(opts.cap_add),
        "CapDrop": list(opts.cap_drop), "SecurityOpt": _security(opts), "Init": opts.init,
        "Dns": list(opts.dns), "DnsSearch": list(opts.dns_search),
        "DnsOptions": list(opts.dns_options),
        "ExtraHosts": [f"{name}:{ip}" for name, ip in opts.add_hosts],
        "Memory": r.memory, "MemorySwap": r.memory_swap, "NanoCpus": r.nano_cpus,
        "CpuShares": r.cpu_shares, "CpusetCpus": r.cpuset_cpus,
        "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in r.ulimits],
        "Devices": [{"PathOnHost": d.host_path, "PathInContainer": d.container_path,
                     "CgroupPermissions": d.permissions} for d in opts.devices],
        "RestartPolicy": {"Name": opts.restart.name,
                          "MaximumRetryCount": opts.restart.maximum_retry_count},
        "AutoRemove": opts.auto_remove, "Runtime": opts.runtime,
        "LogConfig": {"Type": "", "Config": dict(opts.log_opts)},
        "Isolation": "vm" if opts.isolation == "vm" else "",
    }
    if r.pids_limit:
        hc["PidsLimit"] = r.pids_limit
    body: dict[str, Any] = {
        "Image": opts.image, "Hostname": opts.hostname, "User": opts.user,
        "WorkingDir": opts.workdir, "Env": list(opts.env), "Labels": dict(opts.labels),
        "Tty": opts.tty, "OpenStdin": opts.open_stdin, "AttachStdin": opts.open_stdin,
        "StdinOnce": opts.stdin_once,
        "AttachStdout": True, "AttachStderr": True, "StopSignal": opts.stop_signal,
        "HostConfig": hc,
    }
    if opts.command is not None:
        body["Cmd"] = list(opts.command)
    if opts.entrypoint is not None:
        body["Entrypoint"] = list(opts.entrypoint)
    if opts.stop_timeout is not None:
        body["StopTimeout"] = opts.stop_timeout
    if opts.healthcheck is not None:
        h = opts.healthcheck
        body["Healthcheck"] = {"Test": list(h.test), "Interval": h.interval_ns,
                               "Timeout": h.timeout_ns, "StartPeriod": h.start_period_ns,
                               "Retries": h.retries}
    _mounts(opts, hc)
    _ports(opts, body, hc)
    if opts.network_aliases:
        body["NetworkingConfig"] = {"EndpointsConfig": {
            opts.network: {"Aliases": list(opts.network_aliases)}}}
    return body
