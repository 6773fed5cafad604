"""Entry point of ``isobox``: a click group whose subcommands live one module per topic."""

from __future__ import annotations

import os
import sys

import click

from isobox import __version__
from isobox.cli.context import CliContext
from isobox.errors import IsoboxError

# Modules that register commands on the group; each holds one topic's commands.
COMMAND_MODULES = (
    "isobox.cli.image_cmds",
    "isobox.cli.registry_cmds",
    "isobox.cli.archive_cmds",
    "isobox.cli.build_cmds",
    "isobox.cli.container_cmds",
    "isobox.cli.container_extra_cmds",
    "isobox.cli.network_cmds",
    "isobox.cli.volume_cmds",
    "isobox.cli.vm_cmds",
    "isobox.cli.snapshot_cmds",
)


# Which module defines each command, so one invocation imports only what it runs (importing
# every command module costs tens of ms on each call). A command missing here, or a group
# whose subcommands several modules add (image, system), makes all modules load; a test
# keeps the table in line with what the modules register.
COMMAND_TABLE: dict[str, str] = {
    **dict.fromkeys(("run", "create", "start", "stop", "restart", "kill", "rm", "wait", "pause",
                     "unpause", "logs", "exec", "ps"), "isobox.cli.container_cmds"),
    **dict.fromkeys(("attach", "container", "cp", "diff", "events", "healthcheck", "info",
                     "inspect", "port", "rename", "stats", "top", "update"),
                    "isobox.cli.container_extra_cmds"),
    **dict.fromkeys(("images", "rmi", "tag"), "isobox.cli.image_cmds"),
    **dict.fromkeys(("login", "logout", "pull", "push"), "isobox.cli.registry_cmds"),
    **dict.fromkeys(("export", "import", "load", "save"), "isobox.cli.archive_cmds"),
    **dict.fromkeys(("build", "commit"), "isobox.cli.build_cmds"),
    "network": "isobox.cli.network_cmds", "volume": "isobox.cli.volume_cmds",
    "vm": "isobox.cli.vm_cmds", "snapshot": "isobox.cli.snapshot_cmds",
    "version": "isobox.cli.main", "serve": "isobox.cli.main",
}


class LazyGroup(click.Group):
    """Loads the module of the command being run, or every module when listing or unsure."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_TABLE.get(cmd_name)
        if module is None:  # unknown, or a group several modules add subcommands to
            _register()
        elif cmd_name not in self.commands:
            import importlib

            importlib.import_module(module)
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None and ctx.params.get("host"):
            from isobox.cli.remote import remote_view

            return remote_view(cmd, cmd_name)  # remote callbacks, or a refusal (exit 125)
        return cmd

    def list_commands(self, ctx: click.Context) -> list[str]:
        _register()
        return super().list_commands(ctx)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", message="isobox version %(version)s")
@click.option("--root", envvar="ISOBOX_ROOT", default="/var/lib/isobox", show_default=True,
              help="Where isobox keeps images, layers and state.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="warning", show_default=True)
@click.option("-H", "--host", envvar="ISOBOX_HOST", default="",
              help="Talk to a remote `isobox serve` (unix:///PATH or tcp://HOST:PORT) instead "
              "of the local engine.")
@click.option("--tls-cert", envvar="ISOBOX_TLS_CERT", default="",
              help="Client certificate for a tcp:// --host.")
@click.option("--tls-key", envvar="ISOBOX_TLS_KEY", default="", help="Its private key.")
@click.option("--tls-ca", envvar="ISOBOX_TLS_CA", default="",
              help="CA that signed the server's certificate.")
@click.pass_context
def cli(ctx: click.Context, root: str, log_level: str, host: str, tls_cert: str, tls_key: str,
        tls_ca: str) -> None:
    """Run isolated workloads as containers or virtual machines."""
    if log_level != "warning":  # logging costs ~10 ms to import; the default needs none of it
        import logging

        logging.basicConfig(level=log_level.upper(),
                            format="isobox: %(levelname)s: %(message)s")
    obj = CliContext(os.path.abspath(root), host=host, tls=(tls_cert, tls_key, tls_ca))
    ctx.obj = obj
    ctx.call_on_close(obj.close)


@cli.group()
def system() -> None:
    """Manage isobox itself."""


@cli.command()
def version() -> None:
    """Show the isobox version."""
    click.echo(f"isobox version {__version__}")


@cli.command()
@click.option("--socket", "socket_path", default="/run/isobox/isobox.sock", show_default=True,
              help="Unix socket to listen on (mode 0660, group --group).")
@click.option("--group", default="isobox", show_default=True,
              help="Group owning the socket (created if missing).")
@click.option("--tcp", metavar="ADDR", help="Also listen on TCP (HOST:PORT), only with mutual "
              "TLS: needs --tls-cert, --tls-key and --tls-ca.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), help="Server certificate (PEM).")
@click.option("--tls-key", type=click.Path(dir_okay=False), help="Server private key (PEM).")
@click.option("--tls-ca", type=click.Path(dir_okay=False),
              help="CA that signs the client certificates (PEM).")
@click.option("--allow-privileged", is_flag=True,
              help="Let API clients create containers beyond the default confinement "
              "(Privileged, CapAdd ALL/SYS_ADMIN/…, seccomp=unconfined, Devices); logged.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=60.0, show_default=True,
              metavar="SECONDS", help="Drop a connection whose request head takes longer, or "
              "that sits idle between requests that long (0: never).")
@click.pass_obj
def serve(obj: CliContext, socket_path: str, group: str, tcp: str | None,
          tls_cert: str | None, tls_key: str | None, tls_ca: str | None,
          allow_privileged: bool, idle_timeout: float) -> None:
    """Serve the Docker-Engine-compatible API (docker CLI, docker-py) on a unix socket, and
    on TCP with mutual TLS."""
    import logging

    from isobox.api.server import serve as run_server
    from isobox.api.tls import tls_listen

    if tcp is None and (tls_cert or tls_key or tls_ca):
        raise click.UsageError("--tls-cert, --tls-key and --tls-ca go with --tcp")
    listen = tls_listen(tcp, tls_cert, tls_key, tls_ca) if tcp is not None else None
    # INFO unless --log-level configured logging already (then basicConfig does nothing)
    logging.basicConfig(level=logging.INFO, format="isobox serve: %(levelname)s: %(message)s")
    run_server(obj.root, socket_path, group, tcp=listen, allow_privileged=allow_privileged,
               idle_timeout=idle_timeout)


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise


def main(argv: list[str] | None = None) -> int:
    try:
        # Without standalone mode click returns a command's ``Exit`` code instead of raising.
        rv = cli.main(args=argv, prog_name="isobox", standalone_mode=False)
    except IsoboxError as e:
        click.echo(f"isobox: error: {e}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("isobox: aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return 125 if e.exit_code == 2 else e.exit_code
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except KeyboardInterrupt:
        click.echo("isobox: interrupted", err=True)
        return 130
    except OSError as e:
        click.echo(f"isobox: error: {e}", err=True)
        return 1
    return rv if isinstance(rv, int) else 0


def entry() -> int:
    """The ``isobox`` command: :func:`main`, then leave without the interpreter's finalization
    (tearing down the ~400 modules of a call took 13-20 ms here, on every command) once
    nothing can need it: exit handlers run and standard streams flushed here, and only when
    no other non-daemon thread is alive, and no profiler or tracer (cProfile, coverage) is
    waiting to write its results at exit; otherwise a normal exit."""
    import threading

    code = main()
    if sys.getprofile() is not None or sys.gettrace() is not None or any(
            t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        return code
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # the descriptor was closed when we started
            continue
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: Python's own exit status for it
            code = code or 120
    os._exit(code)


if __name__ == "__main__":
    sys.exit(entry())
