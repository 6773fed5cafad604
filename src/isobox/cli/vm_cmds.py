"""``isobox vm create/start/stop/restart/kill/rm/ls/inspect/console/exec/resize/save/restore``:
system VMs."""

from __future__ import annotations

import os
import select
import socket
import sys
from typing import TYPE_CHECKING

import click

from isobox.cli.context import CliContext
from isobox.cli.main import cli
from isobox.cli.output import for_each, print_json, print_table
from isobox.errors import ConflictError

if TYPE_CHECKING:
    from isobox.api.client_types import VMSummary

pass_ctx = click.make_pass_decorator(CliContext)
DETACH_KEY = b"\x1d"  # ctrl-]


@cli.group()
def vm() -> None:
    """Manage system VMs (full machines that boot their own init)."""


@vm.command("create")
@click.argument("name")
@click.option("--image", default="", help="Boot this image's root filesystem (qcow2 overlay).")
@click.option("--disk", default="", help="Boot this raw/qcow2 disk, used directly.")
@click.option("--cpus", default=1, type=int, show_default=True, help="Virtual CPUs.")
@click.option("--memory", "-m", default="", help="Guest memory (e.g. 1g; default 512m).")
@click.option("--disk-size", default="", help="Root disk size with --image (default 4g).")
@click.option("--network", default="bridge", show_default=True)
@click.option("--publish", "-p", multiple=True, help="Publish a guest port to the host.")
@pass_ctx
def create_cmd(ctx: CliContext, name: str, image: str, disk: str, cpus: int, memory: str,
               disk_size: str, network: str, publish: tuple[str, ...]) -> None:
    """Create a system VM NAME."""
    from isobox.engine.parse import parse_bytes, parse_ports
    from isobox.engine.system_vm import SystemVMOptions, create_system_vm

    row = create_system_vm(ctx.engine, SystemVMOptions(
        name=name, image=image, disk=disk, cpus=cpus,
        memory=parse_bytes(memory, "--memory") if memory else 0,
        disk_size=parse_bytes(disk_size, "--disk-size") if disk_size else 0,
        network=network, ports=parse_ports(publish)))
    click.echo(row.id)


def _each(refs: tuple[str, ...], fn: object) -> None:
    if for_each(refs, fn):  # type: ignore[arg-type]  # True: one failed
        raise click.exceptions.Exit(1)


@vm.command("start")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def start_cmd(ctx: CliContext, names: tuple[str, ...]) -> None:
    """Boot VMs (the console shows the boot; `vm console NAME`)."""
    from isobox.engine.system_vm import start_system_vm

    _each(names, lambda n: start_system_vm(ctx.engine, n))


@vm.command("stop")
@click.argument("names", nargs=-1, required=True)
@click.option("--time", "-t", "timeout", type=int, default=None,
              help="Seconds of shutdown before SIGKILL (default 90).")
@pass_ctx
def stop_cmd(ctx: CliContext, names: tuple[str, ...], timeout: int | None) -> None:
    """Shut VMs down (ACPI power button and the init's poweroff), SIGKILL after the timeout."""
    from isobox.engine.stop import stop_container
    from isobox.engine.system_vm import get_system_vm

    _each(names, lambda n: stop_container(ctx.engine, get_system_vm(ctx.engine, n).id,
                                          timeout))


@vm.command("restart")
@click.argument("names", nargs=-1, required=True)
@click.option("--time", "-t", "timeout", type=int, default=None)
@pass_ctx
def restart_cmd(ctx: CliContext, names: tuple[str, ...], timeout: int | None) -> None:
    """Shut VMs down and boot them again."""
    from isobox.engine.stop import stop_container
    from isobox.engine.system_vm import get_system_vm, start_system_vm

    def restart(n: str) -> None:
        row = get_system_vm(ctx.engine, n)
        if row.status in ("running", "paused"):
            stop_container(ctx.engine, row.id, timeout)
        start_system_vm(ctx.engine, row.id)

    _each(names, restart)


@vm.command("kill")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def kill_cmd(ctx: CliContext, names: tuple[str, ...]) -> None:
    """Kill VMs (QEMU gets SIGKILL: like pulling the plug)."""
    from isobox.engine.stop import kill_container
    from isobox.engine.system_vm import get_system_vm

    _each(names, lambda n: kill_container(ctx.engine, get_system_vm(ctx.engine, n).id))


@vm.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="Kill a running VM first.")
@pass_ctx
def rm_cmd(ctx: CliContext, names: tuple[str, ...], force: bool) -> None:
    """Remove VMs (a --disk file stays; an --image VM's overlay goes)."""
    from isobox.engine.remove import remove_container
    from isobox.engine.system_vm import get_system_vm

    _each(names, lambda n: remove_container(ctx.engine, get_system_vm(ctx.engine, n).id,
                                            force=force))


@vm.command("ls")
@click.option("--quiet", "-q", is_flag=True)
@pass_ctx
def ls_cmd(ctx: CliContext, quiet: bool) -> None:
    """List system VMs."""
    from isobox.api.client_types import VMSummary
    from isobox.engine.system_vm import list_system_vms, vm_summary

    print_vm_table([VMSummary.from_json(vm_summary(r)) for r in list_system_vms(ctx.engine)],
                   quiet)


def print_vm_table(vms: list[VMSummary], quiet: bool) -> None:
    """``vm ls`` output, local or remote (``--host``)."""
    if quiet:
        for v in vms:
            click.echo(v.id[:12])
        return
    print_table(["VM ID", "NAME", "STATE", "CPUS", "MEMORY", "IMAGE/DISK"], [
        [v.id[:12], v.name,
         f"saved ({v.saved_file})" if v.saved_file and v.state == "exited" else v.state,
         str(v.cpus), f"{v.memory >> 20}MiB", v.image or v.disk] for v in vms])


@vm.command("inspect")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def inspect_cmd(ctx: CliContext, names: tuple[str, ...]) -> None:
    """Show VMs' settings, disk, console and network as JSON."""
    from isobox.engine.system_vm import inspect_system_vm

    print_json([inspect_system_vm(ctx.engine, n) for n in names])


@vm.command("exec", context_settings={"ignore_unknown_options": True})
@click.option("--detach", "-d", is_flag=True, help="Run COMMAND in the background.")
@click.option("--interactive", "-i", is_flag=True)
@click.option("--tty", "-t", is_flag=True)
@click.option("--env", "-e", multiple=True)
@click.option("--user", "-u", default="")
@click.option("--workdir", "-w", default="")
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_ctx
def exec_cmd(ctx: CliContext, detach: bool, interactive: bool, tty: bool, env: tuple[str, ...],
             user: str, workdir: str, name: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in the booted VM through the guest agent; exits with its code."""
    from isobox.engine.execute import ExecRequest, exec_in_container
    from isobox.engine.system_vm import get_system_vm

    row = get_system_vm(ctx.engine, name)
    code = exec_in_container(ctx.engine, row.id, ExecRequest(
        args=list(command), detach=detach, interactive=interactive, tty=tty, env=list(env),
        user=user,
        workdir=workdir))
    raise click.exceptions.Exit(code)


@vm.command("resize")
@click.argument("name")
@click.option("--memory", "-m", default="", help="New guest memory (balloon when running).")
@click.option("--cpus", default=0, type=int, help="New vCPU count (at next boot).")
@pass_ctx
def resize_cmd(ctx: CliContext, name: str, memory: str, cpus: int) -> None:
    """Change a VM's memory or vCPUs; says what applies now and what at next boot."""
    from isobox.engine.parse import parse_bytes
    from isobox.engine.system_vm import resize_system_vm

    result = resize_system_vm(ctx.engine, name, cpus=cpus,
                              memory=parse_bytes(memory, "--memory") if memory else 0)
    for line in result.lines:
        click.echo(line)


@vm.command("save")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False))
@pass_ctx
def save_cmd(ctx: CliContext, name: str, file: str) -> None:
    """Suspend a running VM to FILE (memory and devices; the disk is kept with the VM)."""
    from isobox.engine.vm_save import save_vm

    result = save_vm(ctx.engine, name, file)
    click.echo(f"saved {name} to {result.path} ({result.size // (1 << 20)} MiB, "
               f"{result.seconds:.1f} s)")


@vm.command("restore")
@click.argument("file", type=click.Path(dir_okay=False))
@pass_ctx
def restore_cmd(ctx: CliContext, file: str) -> None:
    """Resume the VM FILE was saved from, where it was (its disk as it was then)."""
    from isobox.engine.vm_save import restore_vm

    row = restore_vm(ctx.engine, file)
    click.echo(row.name)


@vm.command("console")
@click.argument("name")
@pass_ctx
def console_cmd(ctx: CliContext, name: str) -> None:
    """Attach to the VM's serial console; ctrl-] detaches (the VM keeps running)."""
    from isobox.engine.system_vm import console_socket, get_system_vm

    row = get_system_vm(ctx.engine, name)
    if row.status != "running":
        raise ConflictError(f"VM {row.name} is not running ({row.status}): `isobox vm start "
                            f"{row.name}` first")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(console_socket(ctx.engine, row))
    except OSError as e:
        sock.close()
        raise ConflictError(f"cannot attach to the console of {row.name}: {e.strerror}"
                            ) from None
    tty = os.isatty(0)
    click.echo(f"Connected to {row.name}'s console (detach: ctrl-])", err=True)
    try:
        _relay(sock, tty)
    finally:
        sock.close()
    click.echo("\nDetached.", err=True)


def _relay(sock: socket.socket, tty: bool) -> None:
    """stdin → console until ctrl-] (or stdin's end when it is not a terminal, the console
    still read out until it closes); console → stdout until the VM powers off."""
    import termios
    import tty as ttymod

    saved = termios.tcgetattr(0) if tty else None
    if tty:
        ttymod.setraw(0)
    stdin_open = True
    out = sys.stdout.buffer
    try:
        while True:
            fds = [sock] + ([0] if stdin_open else [])
            ready, _, _ = select.select(fds, [], [])
            if sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                out.write(data)
                out.flush()
            if 0 in ready:
                data = os.read(0, 4096)
                if not data:
                    stdin_open = False
                    continue
                cut = data.find(DETACH_KEY)
                if cut >= 0:
                    if cut:
                        sock.sendall(data[:cut])
                    return
                sock.sendall(data)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
