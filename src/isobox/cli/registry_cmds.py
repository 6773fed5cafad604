"""``isobox pull``, ``push``, ``login`` and ``logout``.

Registry options (podman's names): ``--tls-verify=false`` (HTTPS without verification, or
plain HTTP), ``--insecure-registry HOST`` (repeatable; also ``ISOBOX_INSECURE_REGISTRIES``,
comma separated), ``--ca-cert FILE`` / ``--cert-dir DIR`` for a private CA (default
``/etc/isobox/certs.d/<host>/``), ``--authfile`` (default ``<root>/auth.json``). Loopback
registries (``localhost``, ``127.0.0.0/8``, ``::1``) are insecure by default, like Docker.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import click

from isobox.cli.context import CliContext
from isobox.cli.main import cli
from isobox.errors import ConfigError

pass_ctx = click.make_pass_decorator(CliContext)


def _registry_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--tls-verify", type=click.BOOL, default=None, is_flag=False,
                     flag_value=True, metavar="BOOL",
                     help="Require HTTPS with a verified certificate (false: allow plain HTTP "
                          "and unverified HTTPS)."),
        click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST",
                     help="Allow plain HTTP / unverified HTTPS for HOST (repeatable)."),
        click.option("--ca-cert", type=click.Path(dir_okay=False), default=None,
                     help="Extra CA certificate (PEM) to trust for the registry."),
        click.option("--cert-dir", type=click.Path(file_okay=False), default=None,
                     help="Directory with *.crt CAs and client.cert/client.key "
                          "(default /etc/isobox/certs.d/<host>)."),
        click.option("--authfile", default=None, metavar="FILE",
                     help="Credentials file (default <root>/auth.json)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _options(obj: CliContext, kw: dict[str, Any]) -> Any:
    from isobox.images.registry.client import RegistryOptions

    return RegistryOptions(
        insecure_registries=tuple(kw.pop("insecure")), tls_verify=kw.pop("tls_verify"),
        ca_cert=kw.pop("ca_cert"), cert_dir=kw.pop("cert_dir"),
        auth_file=kw.pop("authfile") or os.path.join(obj.root, "auth.json"))


class _Bars:
    """Per-layer progress bars with rich on a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.progress: Any = None
        self.tasks: dict[str, Any] = {}
        self.lock = threading.Lock()
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     DownloadColumn(), TransferSpeedColumn(),
                                     console=Console(stderr=True), transient=False)

    def __enter__(self) -> _Bars:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()

    def __call__(self, digest: str, status: str, done: int, total: int) -> None:
        if not self.progress:
            return
        with self.lock:
            task = self.tasks.get(digest)
            label = f"{digest[7:19]}: {status}"
            if task is None:
                self.tasks[digest] = self.progress.add_task(label, total=total, completed=done)
            else:
                self.progress.update(task, description=label, completed=done)


@cli.command()
@click.option("--platform", default=None, help="os/arch[/variant] of a multi-platform image.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image ID.")
@_registry_options
@click.argument("reference")
@pass_ctx
def pull(obj: CliContext, /, platform: str | None, quiet: bool, reference: str,
         **kw: Any) -> None:
    """Pull an image from a registry."""
    from isobox.images.reference import parse_reference
    from isobox.images.registry.pull import pull_image
    from isobox.oci.image import Platform

    options = _options(obj, kw)
    ref = parse_reference(reference)
    plat = Platform.parse(platform) if platform else None
    if not quiet:
        click.echo(f"{ref.tag or ref.digest}: Pulling from {ref.repository}"
                   if ref.registry != "docker.io" else
                   f"{ref.tag or ref.digest}: Pulling from {ref.familiar.split(':')[0]}")
    from isobox.errors import NotFoundError

    try:
        before: str | None = obj.store.resolve_id(str(ref))
    except NotFoundError:
        before = None
    with _Bars(not quiet and sys.stderr.isatty()) as bars:
        rec = pull_image(obj.store, ref, options=options, platform=plat, progress=bars)
    if quiet:
        click.echo(rec.id)
        return
    digest = next((r.partition("@")[2] for r in rec.repo_digests
                   if r.startswith(ref.name + "@")), rec.manifest_digest)
    click.echo(f"Digest: {digest}")
    status = "Image is up to date" if before == rec.id else "Downloaded newer image"
    click.echo(f"Status: {status} for {ref.familiar}")
    click.echo(str(ref))


@cli.command()
@click.option("-q", "--quiet", is_flag=True, help="Print only the pushed digest.")
@_registry_options
@click.argument("source")
@click.argument("destination", required=False)
@pass_ctx
def push(obj: CliContext, /, quiet: bool, source: str, destination: str | None,
         **kw: Any) -> None:
    """Push an image to a registry (SOURCE [DESTINATION], like podman)."""
    from isobox.images.registry.push import push_image

    options = _options(obj, kw)
    with _Bars(not quiet and sys.stderr.isatty()) as bars:
        result = push_image(obj.store, source, destination, options=options, progress=bars)
    if quiet:
        click.echo(result.digest)
        return
    click.echo(f"The push refers to repository [{result.reference.name}]")
    click.echo(f"{result.reference.tag}: digest: {result.digest} size: {result.size}")


@cli.command()
@click.option("-u", "--username", default=None)
@click.option("-p", "--password", default=None)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@_registry_options
@click.argument("server")
@pass_ctx
def login(obj: CliContext, /, username: str | None, password: str | None, password_stdin: bool,
          server: str, **kw: Any) -> None:
    """Log in to a registry (credentials are checked, then stored)."""
    from isobox.images.registry.auth import login as do_login

    options = _options(obj, kw)
    if password_stdin:
        if password is not None:
            raise ConfigError("login", "--password and --password-stdin are mutually exclusive")
        if not username:
            raise ConfigError("login", "--password-stdin needs --username")
        password = sys.stdin.readline().rstrip("\r\n")
    if username is None:
        username = click.prompt("Username")
    if password is None:
        if password_stdin or not sys.stdin.isatty():
            raise ConfigError("login", "no password given (use -p or --password-stdin)")
        password = click.prompt("Password", hide_input=True)
    elif not password_stdin:
        click.echo("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
                   err=True)
    host = do_login(server, username, password or "", options)
    click.echo(f"Login Succeeded ({host})")


@cli.command()
@click.option("--authfile", default=None, metavar="FILE",
              help="Credentials file (default <root>/auth.json).")
@click.argument("server")
@pass_ctx
def logout(obj: CliContext, authfile: str | None, server: str) -> None:
    """Remove stored credentials for a registry."""
    from isobox.images.registry.auth import logout as do_logout
    from isobox.images.registry.client import RegistryOptions

    host = do_logout(server, RegistryOptions(
        auth_file=authfile or os.path.join(obj.root, "auth.json")))
    click.echo(f"Removing login credentials for {host}")
