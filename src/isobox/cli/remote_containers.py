"""Remote container commands (``--host``): run, create, the lifecycle verbs, ps, logs, exec,
inspect — through :mod:`isobox.api.client`, printing what the local commands print."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

from isobox.cli.context import CliContext
from isobox.cli.output import for_each
from isobox.cli.remote import RemoteUnsupported, remote
from isobox.errors import IsoboxError, NotFoundError

if TYPE_CHECKING:
    from isobox.api.client import Client
    from isobox.engine.options import CreateOptions


def _each(refs: tuple[str, ...], fn: Any, echo: bool = True, missing_ok: bool = False) -> None:
    if for_each(refs, fn, echo=echo, missing_ok=(lambda _ref: True) if missing_ok else None):
        raise click.exceptions.Exit(1)


def _create(obj: CliContext, kw: dict[str, Any]) -> tuple[Client, str, CreateOptions]:
    """As the local ``_create``: parse the flags, pull a missing image (as ``--pull`` says),
    create; errors of ``run``/``create`` itself exit 125."""
    from isobox.cli.container_cmds import RunError
    from isobox.cli.run_flags import build_options

    client = obj.client
    try:
        opts = build_options(kw)
        if kw["pull"] == "always":
            client.pull(opts.image)
        try:
            cid = client.create_from(opts)
        except NotFoundError as e:
            if kw["pull"] != "missing" or "No such image" not in str(e):
                raise
            click.echo(f"Unable to find image '{opts.image}' locally", err=True)
            try:
                client.pull(opts.image)
            except IsoboxError as pe:
                raise NotFoundError(f"pulling {opts.image}: {pe}") from None
            cid = client.create_from(opts)
    except IsoboxError as e:
        raise RunError(str(e)) from None
    return client, cid, opts


@remote("create")
def create(obj: CliContext, /, **kw: Any) -> None:
    _client, cid, _opts = _create(obj, kw)
    click.echo(cid)


@remote("run")
def run(obj: CliContext, /, detach: bool, sig_proxy: bool, **kw: Any) -> None:
    from isobox.cli.container_cmds import RunError

    if kw.get("interactive"):
        raise RemoteUnsupported("`isobox run -i` (stdin to a remote container)")
    client, cid, opts = _create(obj, kw)
    if detach:
        try:
            client.start(cid)
        except IsoboxError as e:
            if opts.auto_remove:
                try:
                    client.remove(cid, force=True, volumes=True)
                except IsoboxError:
                    pass
            raise RunError.of_start(str(e)) from None
        click.echo(cid)
        return
    try:
        att = client.start_attached(cid, tty=opts.tty, auto_remove=opts.auto_remove)
    except IsoboxError as e:
        raise RunError.of_start(str(e)) from None
    try:
        _copy_out(att.output())
        code = att.exit_code()
    finally:
        att.close()
    raise click.exceptions.Exit(code)


def _copy_out(chunks: Any, follow: bool = True) -> None:
    out, err = sys.stdout.buffer, sys.stderr.buffer
    try:
        for stream, data in chunks:
            target = err if stream == "stderr" else out
            target.write(data)
            if follow:
                target.flush()
    except BrokenPipeError:
        return
    out.flush()
    err.flush()


@remote("start")
def start(obj: CliContext, attach: bool, interactive: bool, containers: tuple[str, ...]
          ) -> None:
    if attach or interactive:
        raise RemoteUnsupported("`isobox start -a/-i`")
    _each(containers, obj.client.start)


@remote("stop")
def stop(obj: CliContext, timeout: int | None, signal: str, containers: tuple[str, ...]
         ) -> None:
    _each(containers, lambda c: obj.client.stop(c, timeout, signal))


@remote("restart")
def restart(obj: CliContext, timeout: int | None, containers: tuple[str, ...]) -> None:
    _each(containers, lambda c: obj.client.restart(c, timeout))


@remote("kill")
def kill(obj: CliContext, signal: str, containers: tuple[str, ...]) -> None:
    _each(containers, lambda c: obj.client.kill(c, signal))


@remote("rm")
def rm(obj: CliContext, force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    _each(containers, lambda c: obj.client.remove(c, force=force, volumes=volumes),
          missing_ok=force)


@remote("pause")
def pause(obj: CliContext, containers: tuple[str, ...]) -> None:
    _each(containers, obj.client.pause)


@remote("unpause")
def unpause(obj: CliContext, containers: tuple[str, ...]) -> None:
    _each(containers, obj.client.unpause)


@remote("wait")
def wait(obj: CliContext, condition: str, containers: tuple[str, ...]) -> None:
    failed = False
    for ref in containers:
        try:
            click.echo(obj.client.wait(ref, condition))
        except IsoboxError as e:
            click.echo(f"isobox: error: {e}", err=True)
            failed = True
    if failed:
        raise click.exceptions.Exit(1)


@remote("logs")
def logs(obj: CliContext, follow: bool, tail: str, since: str, until: str, timestamps: bool,
         container: str) -> None:
    from isobox.engine.logs import parse_since, parse_tail

    parse_tail(tail)  # the same refusal as locally, before any request
    now = time.time()
    chunks = obj.client.logs(container, follow=follow, tail=tail, timestamps=timestamps,
                             since=parse_since(since, now) if since else None,
                             until=parse_since(until, now) if until else None)
    _copy_out(((c.stream, c.data) for c in chunks), follow)


@remote("exec")
def exec_(obj: CliContext, detach: bool, interactive: bool, tty: bool, env: tuple[str, ...],
          env_file: tuple[str, ...], user: str, workdir: str, privileged: bool,
          container: str, command: tuple[str, ...]) -> None:
    from isobox.cli.container_cmds import exec_env
    from isobox.engine.parse import resolve_env

    if interactive or tty:
        raise RemoteUnsupported("`isobox exec -i/-t` (a terminal or stdin to a remote exec)")
    kw: dict[str, Any] = {"env": resolve_env(exec_env(env, env_file)), "user": user,
                          "workdir": workdir, "privileged": privileged}
    if detach:
        obj.client.exec_detached(container, list(command), **kw)
        raise click.exceptions.Exit(0)
    session = obj.client.exec_start(container, list(command), **kw)
    try:
        _copy_out(session.output())
        code = session.exit_code()
    finally:
        session.stream.close()
    raise click.exceptions.Exit(code)


@remote("ps")
def ps(obj: CliContext, all_: bool, quiet: bool, filters: tuple[str, ...], fmt: str,
       no_trunc: bool, last: int, latest: bool) -> None:
    from isobox.cli.listings import filter_pairs, print_ps

    grouped: dict[str, list[str]] = {}
    for k, v in filter_pairs(filters):
        grouped.setdefault(k, []).append(v)
    limit = 1 if latest else last  # -n N implies -a (as locally); -n 0 is no limit
    rows = obj.client.containers(all=all_, filters=grouped, limit=limit if limit > 0 else None)
    print_ps(rows, quiet=quiet, fmt=fmt, no_trunc=no_trunc)


def _inspect(obj: CliContext, names: tuple[str, ...], fmt: str, size: bool, kind: str) -> None:
    from isobox.cli.container_extra_cmds import inspect_objects

    inspect_objects(names, fmt, kind, lambda name: obj.client.instance_inspect(name, size=size),
                    obj.client.image_document)


@remote("inspect")
def inspect(obj: CliContext, fmt: str, size: bool, kind: str | None,
            names: tuple[str, ...]) -> None:
    _inspect(obj, names, fmt, size, kind or "")


@remote("container inspect")
def container_inspect(obj: CliContext, fmt: str, size: bool, names: tuple[str, ...]) -> None:
    _inspect(obj, names, fmt, size, "container")
