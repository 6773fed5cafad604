"""``start``: mount the root, join the networks, let the monitor create the container, then
start it. Every step undoes the earlier ones when a later one fails."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from isobox.engine import etcfiles
from isobox.engine.monitor import MonitorRequest, exit_hook_command, spawn_monitor
from isobox.engine.state import ContainerRow
from isobox.errors import ConflictError, IsoboxError

if TYPE_CHECKING:
    from isobox.engine.attach import AttachSession
    from isobox.engine.engine import Engine

STARTABLE = ("created", "exited", "restarting")


def start_container(engine: Engine, ref: str, *, attach: bool = False,
                    attached_pid: int = 0) -> AttachSession | None:
    """Start ``ref``; with ``attach`` return a session connected before the process runs (no
    output is lost). ``attached_pid`` names a CLI that will handle the exit itself."""
    cid = engine.get(ref).id
    with engine.locked(cid) as row:
        if row.status == "running":
            if attach:
                from isobox.engine.attach import AttachSession

                return AttachSession.to_container(engine, row)
            return None
        if row.status not in STARTABLE:
            what = {"paused": "cannot start a paused container, try unpause instead",
                    "creating": "the container is still being created",
                    "removing": "the container is being removed",
                    "dead": "the container is dead (its creation was interrupted); remove it"}
            raise ConflictError(f"cannot start container {row.name}: "
                                f"{what.get(row.status, row.status)}")
        return start_locked(engine, row, attach=attach, attached_pid=attached_pid)


def start_locked(engine: Engine, row: ContainerRow, *, attach: bool = False,
                 attached_pid: int = 0, once: bool = False) -> AttachSession | None:
    """``once``: the bundle carries annotations for this start only (a VM started from a
    snapshot or a state file); any other start first drops such leftovers of a crash."""
    from isobox.engine.exits import teardown

    cid = row.id
    if not once and row.options.get("isolation") == "vm":
        from isobox.engine.snapshot_vm import clear_once_annotations

        clear_once_annotations(engine, row)
    opts = row.options
    lay = engine.layout
    rt = engine.runtime(row)
    snap = engine.snapshots.get(cid)
    engine.snapshots.mount(snap)
    _clear_previous_run(engine, row)
    session: AttachSession | None = None
    try:
        network = setup_network(engine, row)
        engine.db.update(cid, network=network)
        row.network = network
        log_size, log_files = _log_opts(opts)
        if log_files > 1:
            from isobox.engine.logs import rotate_generations

            rotate_generations(lay.log_path(cid), log_files)
        persist = lay.persist_dir(cid)
        os.makedirs(persist, mode=0o700, exist_ok=True)
        marker = os.path.join(persist, "attached")
        if attached_pid:
            with open(marker, "w") as f:
                f.write(str(attached_pid))
        pid, monitor_pid = spawn_monitor(MonitorRequest(
            cid=cid, name=row.name, runtime=rt.path, runtime_args=rt.global_args,
            bundle=lay.container_dir(cid), pidfile=lay.pidfile(cid),
            conmon_pidfile=lay.conmon_pidfile(cid), log_path=lay.log_path(cid),
            exit_dir=lay.exits_dir, persist_dir=persist,
            exit_command=exit_hook_command(lay.root, lay.run_dir, cid, marker),
            log_size_max=log_size, log_max_file=log_files, terminal=bool(opts.get("tty")),
            stdin=bool(opts.get("open_stdin")),
            leave_stdin_open=not opts.get("stdin_once")))
        try:
            if attach:
                from isobox.engine.attach import AttachSession

                session = AttachSession.to_container(engine, row)
            rt.start(cid)
        except BaseException:
            if attached_pid:  # this CLI tears down itself: the exit hook need not wait for it
                try:
                    os.unlink(marker)
                except FileNotFoundError:
                    pass
            rt.kill(cid, "KILL", all_=True)
            _wait_gone(monitor_pid, 5.0)
            rt.delete(cid, force=True)
            raise
    except BaseException:
        if session is not None:
            session.close()
        teardown(engine, row)
        raise
    engine.db.update(cid, status="running", pid=pid, monitor_pid=monitor_pid,
                     started_at=time.time(), finished_at=0, exit_code=0, oom_killed=0,
                     manually_stopped=0, epoch=lay.epoch(), error="")
    engine.event(row, "start")
    if row.healthcheck_configured:
        from isobox.engine.health import start_checker  # health checks: the per-container loop

        start_checker(engine, engine.reload(cid))
    return session


def _clear_previous_run(engine: Engine, row: ContainerRow) -> None:
    lay = engine.layout
    for path in (lay.exit_file(row.id), os.path.join(lay.persist_dir(row.id), "exit"),
                 os.path.join(lay.persist_dir(row.id), "oom"),
                 os.path.join(lay.persist_dir(row.id), "attached")):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    engine.runtime(row).delete(row.id, force=True)
    if os.path.lexists(lay.netns_path(row.id)):
        # a start whose CLI was killed after making the namespace, maybe before recording
        # it: release what the network holds for this container, then the namespace
        from isobox.engine.exits import teardown_network

        held: dict[str, Any] = {ep.network: {} for ep in engine.networks.endpoints(row.id)}
        recorded = (row.network or {}).get("endpoints") or {}
        teardown_network(engine, row.id, {"mode": row.options.get("network") or "bridge",
                                          "endpoints": {**held, **recorded}})


def setup_network(engine: Engine, row: ContainerRow) -> dict[str, Any]:
    """Join the container's networks; returns what ``inspect`` shows as NetworkSettings.
    Any mode but host and none has a namespace of its own (the bundle names it), even when
    ``network disconnect`` left it on no network: then it has only ``lo``."""
    from isobox.engine.networking import endpoint_configs

    opts = row.options
    mode = str(opts.get("network") or "bridge")
    if mode in ("host", "none"):
        return {"mode": mode}
    from isobox.network.netns import create_netns

    nm = engine.networks
    path = engine.layout.netns_path(row.id)
    create_netns(path)
    result: dict[str, Any] = {"mode": mode, "netns": path, "endpoints": {}}
    try:
        first = None
        for name, aliases in endpoint_configs(opts).items():
            ep = nm.connect(name, row.id, path, name=row.name, aliases=aliases)
            result["endpoints"][name] = endpoint_dict(ep)
            first = first or ep
        ports = _port_mappings(opts)
        if ports and first is not None:
            published = nm.publish(row.id, first, ports)
            result["ports"] = [{"container_port": p.container_port, "protocol": p.protocol,
                                "host_ip": p.host_ip, "host_port": p.host_port}
                               for p in published]
        write_hosts(engine, row, str(opts.get("hostname_resolved") or row.id[:12]))
        for peer in nm.peers(row.id):
            refresh_hosts(engine, peer)
    except BaseException:
        from isobox.engine.exits import teardown_network

        teardown_network(engine, row.id, result)
        raise
    return result


def endpoint_dict(ep: Any) -> dict[str, Any]:
    return {"ip": ep.ip, "prefixlen": ep.prefixlen, "gateway": ep.gateway, "mac": ep.mac,
            "ifname": ep.ifname, "host_ifname": ep.host_ifname, "network": ep.network}


def _port_mappings(opts: dict[str, Any]) -> list[Any]:
    from isobox.network.models import PortMapping

    ports = [PortMapping(container_port=int(p["container_port"]),
                         protocol=str(p.get("protocol") or "tcp"),
                         host_ip=str(p.get("host_ip") or ""),
                         host_port=int(p.get("host_port") or 0))
             for p in opts.get("ports") or []]
    if opts.get("publish_all"):
        have = {(p.container_port, p.protocol) for p in ports}
        exposed = (opts.get("image_config") or {}).get("ExposedPorts") or {}
        for key in exposed:
            port, _, proto = str(key).partition("/")
            if port.isdigit() and (int(port), proto or "tcp") not in have:
                ports.append(PortMapping(container_port=int(port), protocol=proto or "tcp",
                                         host_ip="", host_port=0))
    return ports


def write_hosts(engine: Engine, row: ContainerRow, hostname: str) -> None:
    """The /etc/hosts of a container with a namespace of its own, from the endpoints it has
    now: its own addresses carry its hostname, name and aliases (podman writes its own
    name; Docker's DNS answers for them), then its peers' on user-defined networks."""
    from isobox.engine.networking import PREDEFINED, endpoint_configs

    order = list(endpoint_configs(row.options))  # the order joined: the first is primary
    own = sorted(engine.networks.endpoints(row.id),
                 key=lambda ep: order.index(ep.network) if ep.network in order else len(order))
    own_ips = {ep.ip for ep in own}
    names_of: dict[str, list[str]] = {}  # own address -> its names
    listed: set[str] = {hostname}
    for ep in own:
        names = [] if ep.network in PREDEFINED else [ep.name, *ep.aliases, row.id[:12]]
        fresh = [n for n in dict.fromkeys(names) if n and n not in listed]
        listed.update(fresh)
        names_of.setdefault(ep.ip, []).extend(fresh)
    entries: list[tuple[str, list[str]]] = []
    seen = set(own_ips)
    for ep in own:
        if ep.network in PREDEFINED:
            continue
        for addr, names in engine.networks.hosts_entries(ep.network):
            if addr not in seen:
                seen.add(addr)
                entries.append((addr, list(names)))
    ip = own[0].ip if own else ""
    entries += [(addr, names) for addr, names in names_of.items() if addr != ip and names]
    add_hosts = [(str(h), str(a)) for h, a in row.options.get("add_hosts") or []]
    etcfiles.write_in_place(
        os.path.join(engine.layout.container_dir(row.id), "hosts"),
        etcfiles.hosts_text(hostname=hostname, ip=ip, names=names_of.get(ip, ()),
                            add_hosts=add_hosts, peers=entries))


def refresh_hosts(engine: Engine, cid: str) -> None:
    """Rewrite a running container's /etc/hosts after it or a peer joined or left a
    network."""
    row = engine.db.get(cid)
    if row is None or row.status != "running":
        return
    if str(row.options.get("network") or "bridge") in ("host", "none"):
        return
    try:
        write_hosts(engine, row, str(row.options.get("hostname_resolved") or cid[:12]))
        if row.options.get("isolation") == "vm":  # a guest has its own copy: push it
            engine.runtime(row).run("sync-files", cid, check=False, timeout=20)
    except (OSError, IsoboxError):
        pass


def _log_opts(opts: dict[str, Any]) -> tuple[int, int]:
    log_opts = opts.get("log_opts") or {}
    if not log_opts:
        return 0, 1
    from isobox.engine.logs import parse_log_opts

    return parse_log_opts(dict(log_opts))


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pid > 0 and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)
