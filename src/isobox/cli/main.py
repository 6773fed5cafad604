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
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        _register()
        return super().list_commands(ctx)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-v", "--version", message="isobox version %(version)s")
@click.option("--root", envvar="ISOBOX_ROOT", default="/var/lib/isobox", show_default=True,
              help="Where isobox keeps images, layers and state.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="warning", show_default=True)
@click.pass_context
def cli(ctx: click.Context, root: str, log_level: str) -> None:
    """Run isolated workloads as containers or virtual machines."""
    if log_level != "warning":  # logging costs ~10 ms to import; the default needs none of it
        import logging

        logging.basicConfig(level=log_level.upper(),
                            format="isobox: %(levelname)s: %(message)s")
    obj = CliContext(os.path.abspath(root))
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
@click.pass_obj
def serve(obj: CliContext, socket_path: str, group: str) -> None:
    """Serve the Docker-Engine-compatible API (docker CLI, docker-py) on a unix socket."""
    import logging

    from isobox.api.server import serve as run_server

    # INFO unless --log-level configured logging already (then basicConfig does nothing)
    logging.basicConfig(level=logging.INFO, format="isobox serve: %(levelname)s: %(message)s")
    run_server(obj.root, socket_path, group)


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


if __name__ == "__main__":
    sys.exit(main())
