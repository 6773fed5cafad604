"""The flags of ``isobox run`` and ``isobox create`` (Docker's names), and their translation
into :class:`isobox.engine.options.CreateOptions` — parsing only; the checks that need the
host or the store happen in the engine."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from isobox.engine.options import CreateOptions, Resources

F = TypeVar("F", bound=Callable[..., Any])

INT64 = click.IntRange(-(1 << 63), (1 << 63) - 1)  # Docker's numbers are Go int64s


def _multi(*names: str, help: str) -> Callable[[F], F]:
    return click.option(*names, multiple=True, metavar="TEXT", help=help)


CREATE_FLAGS: list[Callable[[F], F]] = [
    click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open."),
    click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY."),
    click.option("--name", default="", help="Assign a name to the container."),
    _multi("-e", "--env", help="Set environment variables."),
    _multi("--env-file", help="Read a file of environment variables."),
    _multi("-v", "--volume", help="Bind mount a volume."),
    _multi("--mount", help="Attach a filesystem mount to the container."),
    _multi("--tmpfs", help="Mount a tmpfs directory."),
    _multi("-p", "--publish", help="Publish a container's port to the host."),
    click.option("-P", "--publish-all", is_flag=True, help="Publish all exposed ports."),
    click.option("--network", "--net", "network", default="bridge", show_default=True,
                 help="Connect a container to a network."),
    _multi("--network-alias", help="Network-scoped alias."),
    click.option("-w", "--workdir", default="", help="Working directory inside the container."),
    click.option("-u", "--user", default="",
                 help="Username or UID (format: <name|uid>[:<group|gid>])."),
    click.option("--entrypoint", default=None, help="Overwrite the image's ENTRYPOINT."),
    click.option("-h", "--hostname", default="", help="Container host name."),
    _multi("--add-host", help="Add a custom host-to-IP mapping (host:ip)."),
    _multi("--dns", help="Set custom DNS servers."),
    _multi("--dns-search", help="Set custom DNS search domains."),
    _multi("--dns-option", help="Set DNS options."),
    click.option("-m", "--memory", default="", help="Memory limit."),
    click.option("--memory-swap", default="", help="Swap limit equal to memory plus swap: -1 "
                 "to enable unlimited swap."),
    click.option("--cpus", default=None, help="Number of CPUs."),
    click.option("-c", "--cpu-shares", type=INT64, default=0,
                 help="CPU shares (relative weight)."),
    click.option("--cpuset-cpus", default="",
                 help="CPUs in which to allow execution (0-3, 0,1)."),
    click.option("--pids-limit", type=INT64, default=0,
                 help="Tune container pids limit (-1 for unlimited)."),
    _multi("--ulimit", help="Ulimit options."),
    click.option("--read-only", is_flag=True,
                 help="Mount the container's root filesystem as read only."),
    _multi("--cap-add", help="Add Linux capabilities."),
    _multi("--cap-drop", help="Drop Linux capabilities."),
    _multi("--security-opt", help="Security options."),
    click.option("--privileged", is_flag=True, help="Give extended privileges to this container."),
    _multi("--device", help="Add a host device to the container."),
    click.option("--init", is_flag=True, help="Run an init inside the container that forwards "
                 "signals and reaps processes."),
    click.option("--restart", default="no", show_default=True, help="Restart policy to apply "
                 "when a container exits."),
    click.option("--rm", "auto_remove", is_flag=True, help="Automatically remove the container "
                 "when it exits."),
    click.option("--stop-signal", default="", help="Signal to stop the container."),
    click.option("--stop-timeout", type=INT64, default=None, help="Timeout (in seconds) to stop a "
                 "container."),
    _multi("-l", "--label", help="Set meta data on a container."),
    click.option("--health-cmd", default="", help="Command to run to check health."),
    click.option("--health-interval", default="", help="Time between running the check."),
    click.option("--health-timeout", default="", help="Maximum time to allow one check to run."),
    click.option("--health-retries", type=INT64, default=0, help="Consecutive failures needed to "
                 "report unhealthy."),
    click.option("--health-start-period", default="", help="Start period for the container to "
                 "initialize."),
    click.option("--no-healthcheck", is_flag=True,
                 help="Disable any container-specified HEALTHCHECK."),
    click.option("--runtime", default="", help="Runtime to use for this container (any "
                 "runc-compatible runtime)."),
    click.option("--isolation", default="container", show_default=True,
                 help="Isolation technology: container, or vm (a QEMU micro-VM)."),
    click.option("--kernel", "vm_kernel", default="", help="With --isolation vm: the guest "
                 "kernel (a vmlinux or bzImage; default: Debian's)."),
    click.option("--initrd", "vm_initrd", default="", help="With --isolation vm: an "
                 "initramfs of your own instead of isobox's."),
    _multi("--log-opt", help="Log driver options (max-size, max-file)."),
    click.option("--pull", type=click.Choice(["missing", "always", "never"]), default="missing",
                 show_default=True, help="Pull image before running."),
    click.argument("image"),
    click.argument("command", nargs=-1, type=click.UNPROCESSED),
]


def create_flags(fn: F) -> F:
    for deco in reversed(CREATE_FLAGS):
        fn = deco(fn)
    return fn


def build_options(kw: dict[str, Any]) -> CreateOptions:
    """The parsed flags as engine input; raises ConfigError naming the flag."""
    from isobox.engine import mountspec, parse

    env = [*[line for f in kw["env_file"] for line in parse.parse_env_file(f)],
           *parse.resolve_env(kw["env"])]
    mounts = [*(mountspec.parse_volume(v) for v in kw["volume"]),
              *(mountspec.parse_mount(m) for m in kw["mount"]),
              *(mountspec.parse_tmpfs(t) for t in kw["tmpfs"])]
    seccomp, nnp = parse.parse_security_opts(kw["security_opt"])
    memory = parse.parse_bytes(kw["memory"], "--memory") if kw["memory"] else 0
    resources = Resources(
        memory=memory,
        memory_swap=parse.parse_memory_swap(kw["memory_swap"]) if kw["memory_swap"] else 0,
        nano_cpus=parse.parse_cpus(kw["cpus"]) if kw["cpus"] is not None else 0,
        cpu_shares=kw["cpu_shares"], cpuset_cpus=kw["cpuset_cpus"],
        pids_limit=kw["pids_limit"],
        ulimits=parse.parse_ulimits(kw["ulimit"]))
    health = parse.parse_healthcheck(kw["health_cmd"], kw["health_interval"],
                                     kw["health_timeout"], kw["health_retries"],
                                     kw["health_start_period"], kw["no_healthcheck"])
    entrypoint: tuple[str, ...] | None = None
    if kw["entrypoint"] is not None:
        entrypoint = (kw["entrypoint"],) if kw["entrypoint"] else ()
    log_opts: dict[str, str] = {}
    for item in kw["log_opt"]:
        key, sep, value = item.partition("=")
        if not sep:
            from isobox.errors import ConfigError

            raise ConfigError("--log-opt", f"invalid log opt '{item}': expected key=value")
        log_opts[key] = value
    if log_opts:
        from isobox.engine.logs import parse_log_opts

        parse_log_opts(log_opts)
    if kw["stop_signal"]:
        parse.parse_signal(kw["stop_signal"])
    return CreateOptions(
        image=kw["image"], command=tuple(kw["command"]) or None, entrypoint=entrypoint,
        name=kw["name"], hostname=parse.parse_hostname(kw["hostname"]), user=kw["user"],
        workdir=kw["workdir"],
        env=tuple(env), labels=parse.parse_labels(kw["label"]), tty=kw["tty"],
        # Docker's StdinOnce: set by -i, except for `run -d -i`
        open_stdin=kw["interactive"], stdin_once=kw["interactive"] and not kw.get("detach"),
        mounts=tuple(mounts),
        ports=parse.parse_ports(kw["publish"]), publish_all=kw["publish_all"],
        network=kw["network"], network_aliases=tuple(kw["network_alias"]),
        add_hosts=tuple(parse.parse_add_host(h) for h in kw["add_host"]),
        dns=tuple(parse.parse_dns(d) for d in kw["dns"]), dns_search=tuple(kw["dns_search"]),
        dns_options=tuple(kw["dns_option"]), resources=resources, read_only=kw["read_only"],
        cap_add=tuple(kw["cap_add"]), cap_drop=tuple(kw["cap_drop"]), seccomp_profile=seccomp,
        no_new_privileges=nnp, privileged=kw["privileged"],
        devices=tuple(parse.parse_device(d) for d in kw["device"]), init=kw["init"],
        restart=parse.parse_restart(kw["restart"]), stop_signal=kw["stop_signal"],
        stop_timeout=kw["stop_timeout"], healthcheck=health, runtime=kw["runtime"],
        auto_remove=kw["auto_remove"], log_opts=log_opts, isolation=kw["isolation"],
        vm_kernel=kw["vm_kernel"], vm_initrd=kw["vm_initrd"])
