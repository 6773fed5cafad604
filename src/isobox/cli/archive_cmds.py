"""Offline images: ``load``, ``save``, ``import``, ``export`` and ``image bootstrap`` (also
``image load``/``image save``/``image import`` like Docker's ``docker image …`` aliases)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import BinaryIO, cast

import click

from isobox.atomicfile import atomic_file
from isobox.cli.context import CliContext
from isobox.cli.image_cmds import image
from isobox.cli.main import cli
from isobox.errors import ConfigError

pass_ctx = click.make_pass_decorator(CliContext)


@contextmanager
def _output(path: str | None, what: str) -> Iterator[BinaryIO]:
    """``-o FILE`` (written to a temporary name, renamed when complete) or stdout."""
    if path is None or path == "-":
        if sys.stdout.isatty():
            raise ConfigError(what, "cowardly refusing to write to a terminal: use -o FILE or "
                                    "redirect the output")
        out = sys.stdout.buffer
        yield cast(BinaryIO, out)
        out.flush()
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError("--output", f"{path}: no such directory: {parent}")
    if os.path.isdir(path):
        raise ConfigError("--output", f"{path}: is a directory")
    with atomic_file(path, 0o644) as f:
        yield f


@contextmanager
def _input(path: str | None, what: str) -> Iterator[BinaryIO]:
    if path is None or path == "-":
        if sys.stdin.isatty():
            raise ConfigError(what, "requested load from stdin, but stdin is a terminal")
        yield cast(BinaryIO, sys.stdin.buffer)
        return
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise ConfigError(what, f"{path}: no such file") from None
    with f:
        yield cast(BinaryIO, f)


# load ------------------------------------------------------------------------------------------
def _load(obj: CliContext, input_: str | None, quiet: bool) -> None:
    from isobox.images.archive import load_archive

    with _input(input_, "load") as stream:
        loaded = load_archive(obj.store, stream)
    for item in loaded:
        if item.refs:
            for name in item.names:
                click.echo(f"Loaded image: {name}")
        else:
            click.echo(f"Loaded image ID: {item.record.id}")
    del quiet  # nothing else is printed: no progress bars yet


def _load_options(f: Callable[..., None]) -> Callable[..., None]:
    f = click.option("-q", "--quiet", is_flag=True, help="Suppress progress output.")(f)
    f = click.option("-i", "--input", "input_", metavar="FILE",
                     help="Read from a tar archive file instead of stdin.")(f)
    return pass_ctx(f)


@cli.command("load")
@_load_options
def load_cmd(obj: CliContext, input_: str | None, quiet: bool) -> None:
    """Load images from a docker-archive or OCI archive (possibly compressed)."""
    _load(obj, input_, quiet)


@image.command("load")
@_load_options
def image_load(obj: CliContext, input_: str | None, quiet: bool) -> None:
    """Load images from a docker-archive or OCI archive (possibly compressed)."""
    _load(obj, input_, quiet)


# save ------------------------------------------------------------------------------------------
def _save(obj: CliContext, output: str | None, fmt: str, names: tuple[str, ...]) -> None:
    from isobox.images.archive import save_images

    if fmt == "oci-dir":
        if not output:
            raise ConfigError("save", "--format oci-dir needs -o DIRECTORY")
        save_images(obj.store, list(names), os.path.abspath(output), fmt)
        return
    with _output(output, "save") as out:
        save_images(obj.store, list(names), out, fmt)


def _save_options(f: Callable[..., None]) -> Callable[..., None]:
    f = click.argument("names", nargs=-1, required=True, metavar="IMAGE...")(f)
    f = click.option("--format", "fmt", default="docker-archive", show_default=True,
                     type=click.Choice(["docker-archive", "oci-archive", "oci-dir"]))(f)
    f = click.option("-o", "--output", metavar="FILE",
                     help="Write to a file (a directory for oci-dir) instead of stdout.")(f)
    return pass_ctx(f)


@cli.command("save")
@_save_options
def save_cmd(obj: CliContext, output: str | None, fmt: str, names: tuple[str, ...]) -> None:
    """Save images to an archive (docker-archive by default)."""
    _save(obj, output, fmt, names)


@image.command("save")
@_save_options
def image_save(obj: CliContext, output: str | None, fmt: str, names: tuple[str, ...]) -> None:
    """Save images to an archive (docker-archive by default)."""
    _save(obj, output, fmt, names)


# import / export -------------------------------------------------------------------------------
def _import(obj: CliContext, changes: tuple[str, ...], message: str | None, file: str,
            name: str | None) -> None:
    from isobox.images.reference import parse_reference
    from isobox.images.rootfs_import import import_rootfs

    refs = [parse_reference(name, what="repository")] if name else []
    with _input(file, "import") as stream:
        record = import_rootfs(obj.store, stream, refs, changes=changes, message=message)
    click.echo(record.id)


def _import_options(f: Callable[..., None]) -> Callable[..., None]:
    f = click.argument("name", required=False, metavar="[REPOSITORY[:TAG]]")(f)
    f = click.argument("file", metavar="FILE|-")(f)
    f = click.option("-m", "--message", help="Commit message for the imported image.")(f)
    f = click.option("-c", "--change", "changes", multiple=True,
                     help="Apply a Dockerfile instruction (CMD, ENV, …) to the image.")(f)
    return pass_ctx(f)


@cli.command("import")
@_import_options
def import_cmd(obj: CliContext, changes: tuple[str, ...], message: str | None, file: str,
               name: str | None) -> None:
    """Create an image from a root filesystem tarball (gzip/xz/bzip2/zstd or plain)."""
    _import(obj, changes, message, file, name)


@image.command("import")
@_import_options
def image_import(obj: CliContext, changes: tuple[str, ...], message: str | None, file: str,
                 name: str | None) -> None:
    """Create an image from a root filesystem tarball (gzip/xz/bzip2/zstd or plain)."""
    _import(obj, changes, message, file, name)


@cli.command("export")
@click.option("-o", "--output", metavar="FILE", help="Write to a file instead of stdout.")
@click.argument("container")
@pass_ctx
def export_cmd(obj: CliContext, output: str | None, container: str) -> None:
    """Export a container's filesystem as a tar archive (a container name, ID or ID prefix,
    or a snapshot ID)."""
    from isobox.engine.copy import export_snapshot_id
    from isobox.errors import NotFoundError
    from isobox.images.rootfs_import import export_snapshot

    try:  # checked before anything is written to the output
        snapshot = export_snapshot_id(obj.engine, container)
    except NotFoundError:  # a snapshot of its own (`snapshot create`)?
        snapshot = container
        try:
            obj.snapshots.get(snapshot)
        except NotFoundError:
            raise NotFoundError(f"No such container: {container}") from None
    with _output(output, "export") as out:
        export_snapshot(obj.store, snapshot, out)


# bootstrap -------------------------------------------------------------------------------------
@image.command("bootstrap")
@click.argument("what", metavar="busybox|debian:SUITE")
@click.option("-t", "--tag", help="Name the image (default: busybox:latest, debian:SUITE).")
@click.option("--mirror", envvar="ISOBOX_DEBIAN_MIRROR",
              help="Debian mirror for debootstrap [env ISOBOX_DEBIAN_MIRROR; default "
                   "http://deb.debian.org/debian].")
@pass_ctx
def image_bootstrap(obj: CliContext, what: str, tag: str | None, mirror: str | None) -> None:
    """Build a base image offline from host packages (busybox-static, debootstrap)."""
    from isobox.images import bootstrap

    if what in ("busybox", "busybox:latest"):
        record = bootstrap.bootstrap_busybox(obj.store, tag or "busybox:latest")
    elif what.startswith("debian:") or what == "debian":
        suite = what.partition(":")[2] or "bookworm"
        click.echo(f"Running debootstrap --variant=minbase {suite} …", err=True)
        record = bootstrap.bootstrap_debian(obj.store, suite, tag, mirror)
    else:
        raise ConfigError("bootstrap", f"unknown base {what!r}: expected busybox or "
                                       f"debian:SUITE (e.g. debian:bookworm)")
    from isobox.images.reference import parse_reference

    for ref in record.tags:
        click.echo(f"Tagged {parse_reference(ref).familiar}")
    click.echo(record.id)
