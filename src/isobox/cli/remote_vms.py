"""Remote ``isobox vm …`` and ``isobox snapshot …`` (``--host``) on the native endpoints,
printing what cli/vm_cmds.py and cli/snapshot_cmds.py print."""

from __future__ import annotations

from typing import Any

import click

from isobox.cli.context import CliContext
from isobox.cli.output import for_each, print_json
from isobox.cli.remote import RemoteUnsupported, remote


def _each(refs: tuple[str, ...], fn: Any) -> None:
    if for_each(refs, fn):
        raise click.exceptions.Exit(1)


# system VMs ---------------------------------------------------------------------------------
@remote("vm create")
def vm_create(obj: CliContext, name: str, image: str, disk: str, cpus: int, memory: str,
              disk_size: str, network: str, publish: tuple[str, ...]) -> None:
    """``--disk`` names a file on the server's host."""
    from isobox.engine.parse import parse_bytes, parse_ports

    parse_ports(publish)  # the same refusal as locally, before any request
    click.echo(obj.client.vm_create(
        name, image=image, disk=disk, cpus=cpus,
        memory=parse_bytes(memory, "--memory") if memory else 0,
        disk_size=parse_bytes(disk_size, "--disk-size") if disk_size else 0,
        network=network, ports=publish))


@remote("vm start")
def vm_start(obj: CliContext, names: tuple[str, ...]) -> None:
    _each(names, obj.client.vm_start)


@remote("vm stop")
def vm_stop(obj: CliContext, names: tuple[str, ...], timeout: int | None) -> None:
    _each(names, lambda n: obj.client.vm_stop(n, timeout))


@remote("vm restart")
def vm_restart(obj: CliContext, names: tuple[str, ...], timeout: int | None) -> None:
    _each(names, lambda n: obj.client.vm_restart(n, timeout))


@remote("vm kill")
def vm_kill(obj: CliContext, names: tuple[str, ...]) -> None:
    _each(names, obj.client.vm_kill)


@remote("vm rm")
def vm_rm(obj: CliContext, names: tuple[str, ...], force: bool) -> None:
    _each(names, lambda n: obj.client.vm_remove(n, force=force))


@remote("vm ls")
def vm_ls(obj: CliContext, quiet: bool) -> None:
    from isobox.cli.vm_cmds import print_vm_table

    print_vm_table(obj.client.vms(), quiet)


@remote("vm inspect")
def vm_inspect(obj: CliContext, names: tuple[str, ...]) -> None:
    print_json([obj.client.vm_inspect(n) for n in names])


@remote("vm exec")
def vm_exec(obj: CliContext, detach: bool, interactive: bool, tty: bool, env: tuple[str, ...],
            user: str, workdir: str, name: str, command: tuple[str, ...]) -> None:
    import sys

    if detach or interactive or tty:
        raise RemoteUnsupported("`isobox vm exec -d/-i/-t`")
    result = obj.client.vm_exec(name, list(command), env=list(env), user=user,
                                workdir=workdir)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(result.stderr)
    sys.stderr.buffer.flush()
    raise click.exceptions.Exit(result.exit_code)


@remote("vm resize")
def vm_resize(obj: CliContext, name: str, memory: str, cpus: int) -> None:
    from isobox.engine.parse import parse_bytes

    for line in obj.client.vm_resize(name, cpus=cpus, memory=parse_bytes(
            memory, "--memory") if memory else 0):
        click.echo(line)


@remote("vm save")
def vm_save(obj: CliContext, name: str, file: str) -> None:
    """FILE is a path on the server's host."""
    if not file.startswith("/"):
        raise RemoteUnsupported("a relative FILE with --host (give the absolute path on the "
                                "server's host)")
    result = obj.client.vm_save(name, file)
    click.echo(f"saved {name} to {result.path} ({result.size // (1 << 20)} MiB, "
               f"{result.seconds:.1f} s)")


@remote("vm restore")
def vm_restore(obj: CliContext, file: str) -> None:
    if not file.startswith("/"):
        raise RemoteUnsupported("a relative FILE with --host (give the absolute path on the "
                                "server's host)")
    click.echo(obj.client.vm_restore(file))


# snapshots ----------------------------------------------------------------------------------
@remote("snapshot create")
def snapshot_create(obj: CliContext, memory: bool, instance: str, name: str) -> None:
    from isobox.api.client_errors import Unavailable
    from isobox.cli.snapshot_cmds import SnapshotUnavailable

    try:
        obj.client.snapshot_create(instance, name, memory=memory)
    except Unavailable as e:
        raise SnapshotUnavailable(str(e)) from None
    click.echo(name)


@remote("snapshot ls")
def snapshot_ls(obj: CliContext, fmt: str, quiet: bool, instance: str) -> None:
    from isobox.cli.snapshot_cmds import print_snapshots

    print_snapshots(obj.client.snapshots(instance), fmt, quiet)


@remote("snapshot restore")
def snapshot_restore(obj: CliContext, instance: str, name: str) -> None:
    obj.client.snapshot_restore(instance, name)
    click.echo(name)


@remote("snapshot rm")
def snapshot_rm(obj: CliContext, instance: str, names: tuple[str, ...]) -> None:
    _each(names, lambda n: obj.client.snapshot_remove(instance, n))

