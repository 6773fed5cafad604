"""The remaining container verbs: ``inspect``, ``stats``, ``top``, ``port``, ``rename``,
``diff``, ``update``, ``cp``, ``events``, ``attach``, and ``system info`` / ``system prune``,
with Docker's flags and output. Printing only; the work is in the engine."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from isobox.cli.context import CliContext
from isobox.cli.formats import print_objects, render_template
from isobox.cli.main import cli
from isobox.errors import ConfigError, ConflictError, IsoboxError, NotFoundError

if TYPE_CHECKING:
    from isobox.engine.stats import StatsSummary

pass_ctx = click.make_pass_decorator(CliContext)


def _container_group() -> click.Group:
    group = cli.commands.get("container")
    if isinstance(group, click.Group):
        return group

    @cli.group(name="container")
    def container() -> None:
        """Manage containers."""

    return container


container_group = _container_group()


# ------------------------------------------------------------------------ inspect

def _inspect(obj: CliContext, names: tuple[str, ...], fmt: str, size: bool, kind: str) -> None:
    from isobox.engine.inspect import inspect_container
    from isobox.images.inspect import inspect_image

    engine = obj.engine
    inspect_objects(names, fmt, kind,
                    lambda name: inspect_container(engine, engine.get(name), size=size),
                    lambda name: inspect_image(obj.store.resolve(name)))


def inspect_objects(names: tuple[str, ...], fmt: str, kind: str,
                    container: Callable[[str], Any], image: Callable[[str], Any]) -> None:
    """``inspect`` (``kind`` "") / ``container inspect``: each name as a container, else as
    an image; the documents printed together, exit 1 if any name was unknown."""
    found: list[Any] = []
    failed = False
    for name in names:
        if kind in ("", "container"):
            try:
                found.append(container(name))
                continue
            except NotFoundError:
                if kind == "container":
                    click.echo(f"isobox: error: No such container: {name}", err=True)
                    failed = True
                    continue
        try:
            found.append(image(name))
        except NotFoundError:
            click.echo(f"isobox: error: No such object: {name}", err=True)
            failed = True
    print_objects(found, fmt)
    if failed:
        raise click.exceptions.Exit(1)


_INSPECT_OPTS = [
    click.option("-f", "--format", "fmt", default="", help="Go template or json."),
    click.option("-s", "--size", is_flag=True, help="Display total file sizes."),
]


F = TypeVar("F", bound=Callable[..., Any])


def _with(opts: list[Any]) -> Callable[[F], F]:
    def deco(fn: F) -> F:
        for o in reversed(opts):
            fn = o(fn)
        return fn
    return deco


@cli.command("inspect")
@_with(_INSPECT_OPTS)
@click.option("--type", "kind", type=click.Choice(["container", "image"]), default=None)
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def inspect_cmd(obj: CliContext, fmt: str, size: bool, kind: str | None,
                names: tuple[str, ...]) -> None:
    """Return low-level information on containers or images."""
    _inspect(obj, names, fmt, size, kind or "")


@container_group.command("inspect")
@_with(_INSPECT_OPTS)
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def container_inspect(obj: CliContext, fmt: str, size: bool, names: tuple[str, ...]) -> None:
    """Display detailed information on one or more containers."""
    _inspect(obj, names, fmt, size, "container")


# ------------------------------------------------------------------------ stats

def bytes_binary(n: float) -> str:
    """go-units BytesSize: ``1.234MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.4g}{unit}"
        n /= 1024
    return f"{n}"


def bytes_decimal(n: float) -> str:
    """go-units HumanSizeWithPrecision(n, 3): ``1.23kB``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}"
        n /= 1000
    return f"{n}"


def _stats_row(s: StatsSummary) -> dict[str, str]:
    return {"ID": s.id[:12], "Container": s.id[:12], "Name": s.name,
            "CPUPerc": f"{s.cpu_percent:.2f}%",
            "MemUsage": f"{bytes_binary(s.mem_usage)} / {bytes_binary(s.mem_limit)}",
            "MemPerc": f"{s.mem_percent:.2f}%",
            "NetIO": f"{bytes_decimal(s.net_rx)} / {bytes_decimal(s.net_tx)}",
            "BlockIO": f"{bytes_decimal(s.block_read)} / {bytes_decimal(s.block_write)}",
            "PIDs": str(s.pids)}


_STATS_COLS = [("CONTAINER ID", "ID"), ("NAME", "Name"), ("CPU %", "CPUPerc"),
               ("MEM USAGE / LIMIT", "MemUsage"), ("MEM %", "MemPerc"), ("NET I/O", "NetIO"),
               ("BLOCK I/O", "BlockIO"), ("PIDS", "PIDs")]


def _print_stats(rows: list[dict[str, str]], fmt: str) -> None:
    from isobox.cli.output import print_table

    if fmt in ("json", "{{json .}}"):
        for r in rows:
            click.echo(json.dumps(r))
        return
    if fmt and fmt != "table":
        for r in rows:
            click.echo(render_template(fmt, r))
        return
    print_table([h for h, _ in _STATS_COLS], [[r[k] for _, k in _STATS_COLS] for r in rows])


@cli.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers (default "
              "shows just running).")
@click.option("--no-stream", is_flag=True, help="Print one result and exit.")
@click.option("--format", "fmt", default="", help="table, json or a Go template.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@click.argument("containers", nargs=-1)
@pass_ctx
def stats(obj: CliContext, all_: bool, no_stream: bool, fmt: str, no_trunc: bool,
          containers: tuple[str, ...]) -> None:
    """Display a live stream of container resource usage statistics."""
    from isobox.engine import stats as st

    engine = obj.engine
    if containers:
        rows = [engine.get(c) for c in containers]
    else:
        rows = [r for r in engine.list()
                if all_ or engine.effective_status(r) in st.LIVE]
    previous: dict[str, dict[str, Any]] = {r.id: st.sample(engine, r) for r in rows}
    while True:
        time.sleep(0.5 if no_stream else 1.0)
        out = []
        for r in rows:
            try:
                r = engine.get(r.id)
            except NotFoundError:
                continue
            data = st.container_stats(engine, r, previous=previous[r.id])
            previous[r.id] = data
            line = _stats_row(st.summarize(data))
            if no_trunc:
                line["ID"] = line["Container"] = r.id
            out.append(line)
        if not no_stream and sys.stdout.isatty():
            sys.stdout.write("\033[2J\033[H")
        _print_stats(out, fmt)
        sys.stdout.flush()
        if no_stream:
            return


# ------------------------------------------------------------------------ top, port, diff

@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("container")
@click.argument("ps_args", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def top(obj: CliContext, container: str, ps_args: tuple[str, ...]) -> None:
    """Display the running processes of a container."""
    from isobox.cli.output import print_table
    from isobox.engine.top import top_rows

    titles, rows = top_rows(obj.engine, container, ps_args)
    width = len(titles)
    print_table(titles, [r + [""] * (width - len(r)) for r in rows])


def port_lines(row: Any, port: str = "") -> list[str]:
    want_port, _, want_proto = port.partition("/")
    lines = []
    for p in (row.network or {}).get("ports") or []:
        proto = str(p.get("protocol") or "tcp")
        if want_port and (str(p.get("container_port")) != want_port or
                          proto != (want_proto or "tcp")):
            continue
        host = f"{p.get('host_ip') or '0.0.0.0'}:{p.get('host_port')}"
        lines.append(host if want_port else f"{p.get('container_port')}/{proto} -> {host}")
    return lines


@cli.command()
@click.argument("container")
@click.argument("private_port", required=False, default="")
@pass_ctx
def port(obj: CliContext, container: str, private_port: str) -> None:
    """List port mappings or a specific mapping for the container."""
    row = obj.engine.get(container)
    lines = port_lines(row, private_port)
    if private_port and not lines:
        proto = private_port if "/" in private_port else f"{private_port}/tcp"
        raise NotFoundError(f"No public port '{proto}' published for {row.name}")
    for line in lines:
        click.echo(line)


@cli.command()
@click.argument("old")
@click.argument("new")
@pass_ctx
def rename(obj: CliContext, old: str, new: str) -> None:
    """Rename a container."""
    from isobox.engine.update import rename_container

    rename_container(obj.engine, old, new)


@cli.command()
@click.argument("container")
@pass_ctx
def diff(obj: CliContext, container: str) -> None:
    """Inspect changes to files or directories on a container's filesystem."""
    from isobox.engine.changes import container_changes

    engine = obj.engine
    for kind, path in container_changes(engine, engine.get(container)):
        click.echo(f"{kind} {path}")


# ------------------------------------------------------------------------ update

@cli.command()
@click.option("-m", "--memory", default=None, help="Memory limit.")
@click.option("--memory-swap", default=None, help="Memory plus swap; -1 for unlimited swap.")
@click.option("--cpus", default=None, help="Number of CPUs.")
@click.option("-c", "--cpu-shares", type=int, default=None, help="CPU shares.")
@click.option("--cpuset-cpus", default=None, help="CPUs in which to allow execution.")
@click.option("--pids-limit", type=int, default=None, help="Pids limit (-1 for unlimited).")
@click.option("--restart", default=None, help="Restart policy.")
@click.argument("containers", nargs=-1, required=True)
@pass_ctx
def update(obj: CliContext, memory: str | None, memory_swap: str | None, cpus: str | None,
           cpu_shares: int | None, cpuset_cpus: str | None, pids_limit: int | None,
           restart: str | None, containers: tuple[str, ...]) -> None:
    """Update configuration of one or more containers."""
    from isobox.engine import parse
    from isobox.engine.update import ResourceUpdate, update_container

    change = ResourceUpdate(
        memory=parse.parse_bytes(memory) if memory is not None else None,
        memory_swap=parse.parse_memory_swap(memory_swap) if memory_swap is not None else None,
        nano_cpus=parse.parse_cpus(cpus) if cpus is not None else None,
        cpu_shares=cpu_shares, cpuset_cpus=cpuset_cpus, pids_limit=pids_limit,
        restart=parse.parse_restart(restart) if restart is not None else None)
    engine = obj.engine
    failed = False
    for ref in containers:
        try:
            update_container(engine, ref, change)
        except IsoboxError as e:
            click.echo(f"isobox: error: {e}", err=True)
            failed = True
            continue
        click.echo(ref)
    if failed:
        raise click.exceptions.Exit(1)


# ------------------------------------------------------------------------ cp

def split_cp_arg(arg: str) -> tuple[str, str]:
    """``CONTAINER:PATH`` → (container, path); a local path → ("", path) (Docker's rule:
    a path starting with / or . is local even if it contains a colon)."""
    if arg.startswith(("/", ".")) or ":" not in arg:
        return "", arg
    container, _, path = arg.partition(":")
    return container, path


@cli.command()
@click.option("-a", "--archive", is_flag=True, help="Archive mode (copy all uid/gid "
              "information).")
@click.option("-L", "--follow-link", is_flag=True, help="Always follow symbol link in "
              "SRC_PATH.")
@click.argument("src")
@click.argument("dest")
@pass_ctx
def cp(obj: CliContext, archive: bool, follow_link: bool, src: str, dest: str) -> None:
    """Copy files/folders between a container and the local filesystem.

    Use '-' as the source to read a tar archive from stdin and extract it to a directory
    destination in a container; use '-' as the destination to stream a tar archive of a
    container source to stdout."""
    from isobox.engine import copy

    src_c, src_path = split_cp_arg(src)
    dest_c, dest_path = split_cp_arg(dest)
    if src_c and dest_c:
        raise ConfigError("cp", "copying between containers is not supported")
    if not src_c and not dest_c:
        raise ConfigError("cp", "must specify at least one container source")
    engine = obj.engine
    if src_c:
        if not src_path:
            raise ConfigError("cp", "source path cannot be empty")
        if dest_path == "-":
            copy.copy_from_container(engine, src_c, src_path, sys.stdout.buffer,
                                     follow=follow_link)
            sys.stdout.buffer.flush()
        else:
            copy.copy_out(engine, src_c, src_path, dest_path, follow=follow_link,
                          archive=archive)
        return
    if not dest_path:
        raise ConfigError("cp", "destination path cannot be empty")
    if src_path == "-":
        copy.copy_to_container(engine, dest_c, dest_path, sys.stdin.buffer)
    else:
        copy.copy_in(engine, dest_c, src_path, dest_path, follow=follow_link,
                     archive=archive)


# ------------------------------------------------------------------------ events

@cli.command()
@click.option("--since", default="", help="Show all events created since timestamp.")
@click.option("--until", default="", help="Stream events until this timestamp.")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output (key=value).")
@click.option("--format", "fmt", default="", help="json or a Go template.")
@pass_ctx
def events(obj: CliContext, since: str, until: str, filters: tuple[str, ...], fmt: str) -> None:
    """Get real time events from the engine."""
    from isobox.engine import events as ev

    now = time.time()
    stream = ev.stream_events(obj.engine, since=ev.parse_time(since, now) if since else None,
                              until=ev.parse_time(until, now) if until else None,
                              filters=ev.parse_filters(filters))
    try:
        for e in stream:
            if fmt in ("json", "{{json .}}"):
                click.echo(json.dumps(ev.event_message(e)))
            elif fmt:
                click.echo(render_template(fmt, ev.event_message(e)))
            else:
                click.echo(ev.event_line(e))
            sys.stdout.flush()
    except BrokenPipeError:
        return


# ------------------------------------------------------------------------ attach

@cli.command()
@click.option("--no-stdin", is_flag=True, help="Do not attach STDIN.")
@click.option("--sig-proxy/--no-sig-proxy", default=True, help="Proxy all received signals "
              "to the process.")
@click.argument("container")
@pass_ctx
def attach(obj: CliContext, no_stdin: bool, sig_proxy: bool, container: str) -> None:
    """Attach local standard input, output, and error streams to a running container."""
    from isobox.cli.attached import attach_and_wait
    from isobox.engine.attach import AttachSession

    engine = obj.engine
    row = engine.get(container)
    status = engine.effective_status(row)
    if status == "paused":
        raise ConflictError("You cannot attach to a paused container, unpause it first")
    if status != "running":
        raise ConflictError("You cannot attach to a stopped container, start it first")
    session = AttachSession.to_container(engine, row)
    code = attach_and_wait(engine, row.id, session, tty=bool(row.options.get("tty")),
                           stdin=not no_stdin and bool(row.options.get("open_stdin")),
                           sig_proxy=sig_proxy, owns_marker=False)
    raise click.exceptions.Exit(code)


# ------------------------------------------------------------------------ system

def _system_group() -> click.Group:
    from isobox.cli.main import system

    return system


system_group = _system_group()


def _info_text(info: dict[str, Any]) -> list[str]:
    ib = info["Isobox"]
    cg = ib["Cgroups"]

    def cap(c: dict[str, Any]) -> str:
        if c["usable"]:
            return f"yes{' (' + c['version'] + ')' if c['version'] else ''}"
        return f"no: {c['reason']}"

    lines = [
        f"Containers: {info['Containers']}",
        f" Running: {info['ContainersRunning']}",
        f" Paused: {info['ContainersPaused']}",
        f" Stopped: {info['ContainersStopped']}",
        f"Images: {info['Images']}",
        f"Server Version: {info['ServerVersion']}",
        f"Storage Driver: {info['Driver']}",
        f"Logging Driver: {info['LoggingDriver']}",
        f"Cgroup Driver: {info['CgroupDriver']}",
        f"Cgroup Version: {info['CgroupVersion']} ({cg['layout']})",
        " Controllers: " + " ".join(f"{k}({v})" for k, v in cg["controllers"].items()),
        "Runtimes: " + " ".join(info["Runtimes"]),
        f"Default Runtime: {info['DefaultRuntime']}",
        f"Monitor (conmon): {cap(ib['Conmon'])}",
        f"KVM: {cap(ib['KVM'])}",
        f"VM Accelerator: {ib['VMAccelerator']['Name'] or 'none'} "
        f"({ib['VMAccelerator']['Reason']})",
        f"CRIU: {cap(ib['CRIU'])}",
        f"Kernel Version: {info['KernelVersion']}",
        f"Operating System: {info['OperatingSystem']}",
        f"Architecture: {info['Architecture']}",
        f"CPUs: {info['NCPU']}",
        f"Total Memory: {bytes_binary(info['MemTotal'])}",
        f"Name: {info['Name']}",
        f"Isobox Root Dir: {info['DockerRootDir']}",
        f"Run Dir: {ib['RunDir']}",
    ]
    return lines + list(info["Warnings"])


@system_group.command("info")
@click.option("-f", "--format", "fmt", default="", help="json or a Go template.")
@pass_ctx
def system_info(obj: CliContext, fmt: str) -> None:
    """Display system-wide information."""
    from isobox.engine.info import system_info as info_of

    info = info_of(obj.engine)
    if fmt in ("json", "{{json .}}"):
        click.echo(json.dumps(info, indent=4))
    elif fmt:
        click.echo(render_template(fmt, info))
    else:
        for line in _info_text(info):
            click.echo(line)


@cli.command("info")
@click.option("-f", "--format", "fmt", default="", help="json or a Go template.")
@click.pass_context
def info_alias(ctx: click.Context, fmt: str) -> None:
    """Display system-wide information."""
    ctx.invoke(system_info, fmt=fmt)


@system_group.command("prune")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove all unused images, not just "
              "dangling ones.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt (isobox never prompts).")
@click.option("--volumes", is_flag=True, help="Prune anonymous volumes.")
@pass_ctx
def system_prune(obj: CliContext, all_: bool, force: bool, volumes: bool) -> None:
    """Remove unused data."""
    from isobox.cli.output import human_size
    from isobox.engine.prune import prune_system

    report = prune_system(obj.engine, all_images=all_, volumes=volumes)
    for title, items, prefix in (("Deleted Containers:", report.containers, ""),
                                 ("Deleted Networks:", report.networks, ""),
                                 ("Deleted Volumes:", report.volumes, ""),
                                 ("Deleted Images:", report.images, "deleted: ")):
        if items:
            click.echo(title)
            for item in items:
                click.echo(prefix + item)
            click.echo()
    for err in report.errors:
        click.echo(f"isobox: error: {err}", err=True)
    click.echo(f"Total reclaimed space: {human_size(report.space_reclaimed)}")
    if report.errors:
        raise click.exceptions.Exit(1)


# ------------------------------------------------------------------------ healthcheck run

class HealthcheckError(click.ClickException):
    """Podman's ``healthcheck run`` exits 125 when it cannot run the check at all."""

    exit_code = 125

    def show(self, file: Any = None) -> None:
        click.echo(f"isobox: error: {self.message}", err=True)


@cli.group(name="healthcheck")
def healthcheck_group() -> None:
    """Manage health checks on containers."""


@healthcheck_group.command("run")
@click.argument("container")
@pass_ctx
def healthcheck_run(obj: CliContext, container: str) -> None:
    """Run the container's healthcheck now: exit 0 when it passes, 1 (printing the status)
    when it fails, 125 when it cannot run."""
    from isobox.engine.health import check_now

    try:
        result, status = check_now(obj.engine, container)
    except IsoboxError as e:
        raise HealthcheckError(str(e)) from None
    if result.exit_code != 0:
        click.echo(status)
        raise click.exceptions.Exit(1)
