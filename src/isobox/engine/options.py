"""What a user asks of a container, parsed and checked: the engine's input.

The CLI (``isobox run``/``create``) and the API (Docker's ``HostConfig``) both produce a
:class:`CreateOptions`; the engine turns it into an OCI bundle, a network attachment and a
record in the state store. Everything here is plain data (JSON-serialisable through
:func:`dataclasses.asdict`) so the record can be stored and shown by ``inspect``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MountSpec:
    """One mount of ``-v``, ``--mount`` or ``--tmpfs``.

    ``type`` is ``bind`` (``source`` an absolute host path), ``volume`` (``source`` a volume
    name, or "" for an anonymous volume) or ``tmpfs`` (no source)."""

    type: str
    target: str
    source: str = ""
    read_only: bool = False
    options: tuple[str, ...] = ()        # bind propagation, tmpfs size=/mode=, "z", …
    volume_nocopy: bool = False          # --mount volume-nocopy: skip copy-up from the image


@dataclass(frozen=True)
class PortSpec:
    """One ``-p``: ``[host_ip:][host_port:]container_port[/proto]``; host_port 0 = pick one."""

    container_port: int
    protocol: str = "tcp"                # tcp | udp
    host_ip: str = ""                    # "" = every host address (0.0.0.0)
    host_port: int = 0


@dataclass(frozen=True)
class Ulimit:
    """One ``--ulimit NAME=SOFT[:HARD]``."""

    name: str                            # Docker's short name: nofile, nproc, core, …
    soft: int
    hard: int


@dataclass(frozen=True)
class DeviceSpec:
    """One ``--device HOST[:CONTAINER[:PERMISSIONS]]``."""

    host_path: str
    container_path: str
    permissions: str = "rwm"


@dataclass(frozen=True)
class RestartPolicy:
    """``--restart``: the policy and, for on-failure, its retry limit."""

    name: str = "no"                     # no | on-failure | always | unless-stopped
    maximum_retry_count: int = 0


@dataclass(frozen=True)
class HealthConfig:
    """A healthcheck as Docker stores it: the test and its durations in nanoseconds."""

    test: tuple[str, ...]                # ("CMD-SHELL", "…") / ("CMD", …) / ("NONE",)
    interval_ns: int = 0
    timeout_ns: int = 0
    start_period_ns: int = 0
    retries: int = 0


@dataclass(frozen=True)
class Resources:
    """The limits of ``run``/``create``/``update`` (0 or empty: not set)."""

    memory: int = 0                      # bytes, 0 = unlimited
    memory_swap: int = 0                 # bytes of memory+swap; -1 unlimited; 0 = default
    nano_cpus: int = 0                   # --cpus 0.5 → 500_000_000
    cpu_shares: int = 0
    cpuset_cpus: str = ""
    pids_limit: int = 0                  # 0 = unlimited
    ulimits: tuple[Ulimit, ...] = ()


@dataclass(frozen=True)
class CreateOptions:
    """Everything ``run``/``create`` (CLI or API) asks for one container, already parsed."""

    image: str
    command: tuple[str, ...] | None = None        # None: the image's Cmd
    entrypoint: tuple[str, ...] | None = None     # None: the image's; () resets it
    name: str = ""
    hostname: str = ""
    user: str = ""
    workdir: str = ""
    env: tuple[str, ...] = ()                     # KEY=VALUE, already merged with --env-file
    labels: dict[str, str] = field(default_factory=dict)
    tty: bool = False
    open_stdin: bool = False
    # Docker's StdinOnce: the stdin closes when the first attached client leaves (`run -i`,
    # `create -i`); with `run -d -i` it stays open for the next attach.
    stdin_once: bool = False
    mounts: tuple[MountSpec, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    publish_all: bool = False
    network: str = "bridge"                       # bridge | none | host | <network name>
    network_aliases: tuple[str, ...] = ()
    add_hosts: tuple[tuple[str, str], ...] = ()   # (hostname, ip)
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    resources: Resources = field(default_factory=Resources)
    read_only: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    seccomp_profile: str = ""                     # "" default, "unconfined", or a file's path
    no_new_privileges: bool = False
    privileged: bool = False
    devices: tuple[DeviceSpec, ...] = ()
    init: bool = False
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop_signal: str = ""                         # "" = the image's StopSignal, else SIGTERM
    stop_timeout: int | None = None               # seconds; None = 10
    healthcheck: HealthConfig | None = None
    runtime: str = ""                             # "" = isobox-runtime
    auto_remove: bool = False
    log_opts: dict[str, str] = field(default_factory=dict)   # max-size, max-file
    isolation: str = "container"                  # "container" or "vm"
    vm_kernel: str = ""                           # --kernel: a guest kernel of the user's
    vm_initrd: str = ""                           # --initrd: an initramfs of the user's
