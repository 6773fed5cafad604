"""``isobox run``, ``create`` and the container verbs (start, stop, kill, rm, restart, wait,
ps, logs, exec, pause, unpause), with Docker's flags and exit codes."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from isobox.cli.context import CliContext
from isobox.cli.main import cli
from isobox.cli.output import for_each
from isobox.cli.run_flags import build_options, create_flags
from isobox.errors import IsoboxError, NotFoundError, command_failure_status

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.engine.options import CreateOptions
    from isobox.images.store import ImageRecord

pass_ctx = click.make_pass_decorator(CliContext)
RUN_SETTINGS = {"help_option_names": ["--help"], "allow_interspersed_args": False}

# Docker's exit codes for `run` failing before the command runs.
EXIT_ENGINE_ERROR = 125


class RunError(click.ClickException):
    """An error of `run`/`create` itself: Docker exits 125 for those."""

    exit_code = EXIT_ENGINE_ERROR

    def show(self, file: Any = None) -> None:
        click.echo(f"isobox: error: {self.message}", err=True)

    @classmethod
    def of_start(cls, message: str) -> RunError:
        """A failed start, with the docker CLI's status: 127 when the command was not found,
        126 when it could not be run, 125 otherwise (docker's runStartContainerErr)."""
        status = command_failure_status(message)
        if status == 127:
            return _CommandNotFound(message)
        if status == 126:
            return _CommandNotRunnable(message)
        return cls(message)


class _CommandNotFound(RunError):
    exit_code = 127


class _CommandNotRunnable(RunError):
    exit_code = 126


def _image_for(obj: CliContext, opts: CreateOptions, pull: str) -> ImageRecord:
    store = obj.store
    if pull != "always":
        try:
            return store.resolve(opts.image)
        except NotFoundError:
            if pull == "never":
                raise NotFoundError(f"No such image: {opts.image}") from None
    click.echo(f"Unable to find image '{opts.image}' locally", err=True) if pull != "always" \
        else None
    from isobox.images.registry.pull import pull_image

    try:
        pull_image(store, opts.image)
    except IsoboxError as e:
        raise NotFoundError(f"pulling {opts.image}: {e}") from None
    return store.resolve(opts.image)


def _create(obj: CliContext, kw: dict[str, Any]) -> tuple[Engine, str, CreateOptions]:
    from isobox.engine.create import create_container

    try:
        opts = build_options(kw)
        engine = obj.engine
        image = _image_for(obj, opts, kw["pull"])
        row = create_container(engine, opts, image=image,
                               warn=lambda text: click.echo(f"WARNING: {text}", err=True))
    except IsoboxError as e:
        raise RunError(str(e)) from None
    return engine, row.id, opts


@cli.command(context_settings=RUN_SETTINGS)
@create_flags
@pass_ctx
def create(obj: CliContext, /, **kw: Any) -> None:
    """Create a new container."""
    _engine, cid, _opts = _create(obj, kw)
    click.echo(cid)


@cli.command(context_settings=RUN_SETTINGS)
@click.option("-d", "--detach", is_flag=True, help="Run in the background, print the ID.")
@click.option("--sig-proxy/--no-sig-proxy", default=True, help="Proxy received signals to the "
              "process.")
@create_flags
@pass_ctx
def run(obj: CliContext, /, detach: bool, sig_proxy: bool, **kw: Any) -> None:
    """Create and run a new container from an image."""
    from isobox.engine.start import start_container

    engine, cid, opts = _create(obj, {**kw, "detach": detach})
    if detach:
        try:
            start_container(engine, cid)
        except IsoboxError as e:
            _discard_failed(engine, cid, opts)
            raise RunError.of_start(str(e)) from None
        click.echo(cid)
        return
    from isobox.cli.attached import run_attached

    code = run_attached(engine, cid, opts, sig_proxy=sig_proxy)
    raise click.exceptions.Exit(code)


def exec_env(env: tuple[str, ...], env_files: tuple[str, ...]) -> list[str]:
    """``exec``'s ``--env-file`` lines, then ``-e`` (which wins), as ``run``'s."""
    from isobox.engine.parse import parse_env_file

    return [*[line for f in env_files for line in parse_env_file(f)], *env]


def _discard_failed(engine: Engine, cid: str, opts: CreateOptions) -> None:
    """`run --rm` whose start failed leaves nothing; a plain `run` keeps the created
    container (Docker does the same)."""
    if not opts.auto_remove:
        return
    from isobox.engine.remove import remove_container

    try:
        remove_container(engine, cid, force=True, volumes=True)
    except IsoboxError:
        pass


@cli.command()
@click.option("-a", "--attach", is_flag=True, help="Attach STDOUT/STDERR and forward signals.")
@click.option("-i", "--interactive", is_flag=True, help="Attach container's STDIN.")
@click.argument("containers", nargs=-1, required=True)
@pass_ctx
def start(obj: CliContext, attach: bool, interactive: bool, containers: tuple[str, ...]) -> None:
    """Start one or more stopped containers."""
    from isobox.engine.start import start_container

    engine = obj.engine
    if attach or interactive:
        if len(containers) != 1:
            raise click.UsageError("you cannot start and attach multiple containers at once")
        from isobox.cli.attached import start_attached

        raise click.exceptions.Exit(start_attached(engine, containers[0], interactive))
    failed = for_each(containers, lambda c: start_container(engine, c), echo=True)
    if failed:
        raise click.exceptions.Exit(1)


@cli.command()
@click.option("-t", "--time", "timeout", type=int, default=None,
              help="Seconds to wait before killing the container.")
@click.option("-s", "--signal", default="", help="Signal to send to the container.")
@click.argument("containers", nargs=-1, required=True)
@pass_ctx
def stop(obj: CliContext, timeout: int | None, signal: str, containers: tuple[str, ...]) -> None:
    """Stop one or more running containers."""
    from isobox.engine.stop import stop_container

    engine = obj.engine
    if for_each(containers, lambda c: stop_container(engine, c, timeout, signal)):
        raise click.exceptions.Exit(1)


@cli.command()
@click.option("-t", "--time", "timeout", type=int, default=None,
              help="Seconds to wait before killing the container.")
@click.argument("containers", nargs=-1, required=True)
@pass_ctx
def restart(obj: CliContext, timeout: int | None, containers: tuple[str, ...]) -> None:
    """Restart one or more containers."""
    from isobox.engine.stop import restart_container

    engine = obj.engine
    if for_each(containers, lambda c: restart_container(engine, c, timeout)):
        raise click.exceptions.Exit(1)


@cli.command()
@click.option("-s", "--signal", default="KILL", show_default=True, help="Signal to send.")
@click.argument("containers", nargs=-1, required=True)
@pass_ctx
def kill(obj: CliContext, signal: str, containers: tuple[str, ...]) -> None:
    """Kill one or more running containers."""
    from isobox.engine.stop import kill_container

    engine = obj.engine
    if for_each(containers, lambda c: kill_container(engine, c, signal)):
        raise click.exceptions.Exit(1)


@cli.command()
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container.")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes too.")
@click.argument("containers", nargs=-1, required=True)
@pass_ctx
def rm(obj: CliContext, force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove one or more containers."""
    from isobox.engine.remove import remove_container

    engine = obj.engine
    def gone(ref: str) -> bool:  # not another NotFoundError, such as a deleted --runtime
        try:
            engine.get(ref)
        except NotFoundError:
            return True
        return False

    if for_each(containers, lambda c: remove_container(engine, c, force=force, volumes=volumes),
                missing_ok=gone if force else None):
        raise click.exceptions.Exit(1)


@cli.command()
@click.option("--condition", type=click.Choice(["not-running", "next-exit", "removed"]),
              default="not-running", show_default=True)
@click.argument("containers", nargs=-1, required=True)
@pass_ctx
def wait(obj: CliContext, condition: str, containers: tuple[str, ...]) -> None:
    """Block until containers stop, then print their exit codes."""
    from isobox.engine.stop import wait_container

    engine = obj.engine
    failed = False
    for ref in containers:
        try:
            click.echo(wait_container(engine, ref, condition))
        except IsoboxError as e:
            click.echo(f"isobox: error: {e}", err=True)
            failed = True
    if failed:
        raise click.exceptions.Exit(1)


@cli.command()
@click.argument("containers", nargs=-1, required=True)
@pass_ctx
def pause(obj: CliContext, containers: tuple[str, ...]) -> None:
    """Pause all processes within one or more containers."""
    from isobox.engine.stop import pause_container

    engine = obj.engine
    if for_each(containers, lambda c: pause_container(engine, c)):
        raise click.exceptions.Exit(1)


@cli.command()
@click.argument("containers", nargs=-1, required=True)
@pass_ctx
def unpause(obj: CliContext, containers: tuple[str, ...]) -> None:
    """Unpause all processes within one or more containers."""
    from isobox.engine.stop import unpause_container

    engine = obj.engine
    if for_each(containers, lambda c: unpause_container(engine, c)):
        raise click.exceptions.Exit(1)


@cli.command()
@click.option("-f", "--follow", is_flag=True, help="Follow log output.")
@click.option("-n", "--tail", default="all", help="Number of lines to show from the end.")
@click.option("--since", default="", help="Show logs since timestamp or relative (42m).")
@click.option("--until", default="", help="Show logs before a timestamp or relative.")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.argument("container")
@pass_ctx
def logs(obj: CliContext, follow: bool, tail: str, since: str, until: str, timestamps: bool,
         container: str) -> None:
    """Fetch the logs of a container."""
    import time

    from isobox.engine import logs as logmod

    engine = obj.engine
    row = engine.get(container)
    now = time.time()
    records = logmod.container_logs(
        engine, row.id, follow=follow, tail=logmod.parse_tail(tail),
        since=logmod.parse_since(since, now) if since else None,
        until=logmod.parse_since(until, now) if until else None)
    out = sys.stdout.buffer
    err = sys.stderr.buffer
    try:
        for rec in records:
            stream = err if rec.stream == "stderr" else out
            stream.write(logmod.format_record(rec, timestamps))
            if follow:
                stream.flush()
    except BrokenPipeError:
        return


@cli.command(name="exec", context_settings=RUN_SETTINGS)
@click.option("-d", "--detach", is_flag=True, help="Detached mode: run in the background.")
@click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY.")
@click.option("-e", "--env", multiple=True, help="Set environment variables.")
@click.option("--env-file", multiple=True, help="Read in a file of environment variables.")
@click.option("-u", "--user", default="", help="Username or UID.")
@click.option("-w", "--workdir", default="", help="Working directory inside the container.")
@click.option("--privileged", is_flag=True, help="Refused: an exec never has more privilege "
              "than its container.")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
def exec_(obj: CliContext, detach: bool, interactive: bool, tty: bool, env: tuple[str, ...],
          env_file: tuple[str, ...], user: str, workdir: str, privileged: bool,
          container: str, command: tuple[str, ...]) -> None:
    """Execute a command in a running container."""
    from isobox.engine.execute import ExecRequest, ExecStartError, exec_in_container

    req = ExecRequest(args=list(command), detach=detach, interactive=interactive, tty=tty,
                      env=exec_env(env, env_file), user=user, workdir=workdir,
                      privileged=privileged)
    try:
        code = exec_in_container(obj.engine, container, req)
    except ExecStartError as e:
        click.echo(f"isobox: error: {e}", err=True)
        raise click.exceptions.Exit(e.status) from None
    raise click.exceptions.Exit(code)


@cli.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Show all containers.")
@click.option("-q", "--quiet", is_flag=True, help="Only display container IDs.")
@click.option("-f", "--filter", "filters", multiple=True, help="Filter output (key=value).")
@click.option("--format", "fmt", default="", help="table, json or a Go template.")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output.")
@click.option("-n", "--last", type=int, default=-1, help="Show n last created containers.")
@click.option("-l", "--latest", is_flag=True, help="Show the latest created container.")
@pass_ctx
def ps(obj: CliContext, all_: bool, quiet: bool, filters: tuple[str, ...], fmt: str,
       no_trunc: bool, last: int, latest: bool) -> None:
    """List containers."""
    from isobox.api.client_types import ContainerSummary, Port
    from isobox.cli.listings import filter_pairs, print_ps
    from isobox.engine.listing import command_args, list_containers, status_text

    engine = obj.engine
    rows = list_containers(engine, all_=all_, last=1 if latest else last,
                           filters=filter_pairs(filters))
    print_ps([ContainerSummary(
        id=r.id, name=r.name, image=r.image_ref, image_id=r.image_id,
        command=" ".join(command_args(engine, r)) if not quiet else "",
        created=int(r.created), state=engine.effective_status(r),
        status=status_text(engine, r) if not quiet else "",
        ports=tuple(Port(int(p["container_port"]), str(p["protocol"]),
                         int(p.get("host_port") or 0), str(p.get("host_ip") or ""))
                    for p in (r.network or {}).get("ports") or []),
        labels=dict(r.options.get("labels") or {}),
        network_mode=str(r.options.get("network") or ""),
        isolation="vm" if r.options.get("isolation") == "vm" else "container")
        for r in rows], quiet=quiet, fmt=fmt, no_trunc=no_trunc)


def _boot(obj: CliContext) -> None:
    from isobox.engine.boot import boot

    started, failed = boot(obj.engine)
    for name in started:
        click.echo(f"started {name}")
    for name, err in failed:
        click.echo(f"isobox: error: {name}: {err}", err=True)
    if failed:
        raise click.exceptions.Exit(1)


def _register_system_boot() -> None:
    from isobox.cli.main import system

    @system.command(name="boot")
    @pass_ctx
    def system_boot(obj: CliContext) -> None:
        """Reconcile containers after a host boot and restart them per policy."""
        _boot(obj)


_register_system_boot()
