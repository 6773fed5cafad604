"""``isobox build`` and ``isobox commit``."""

from __future__ import annotations

import sys

import click

from isobox.cli.context import CliContext
from isobox.cli.main import cli
from isobox.errors import ConfigError

pass_ctx = click.make_pass_decorator(CliContext)


def _echo(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _build_args(items: tuple[str, ...]) -> dict[str, str]:
    import os

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key:
            raise ConfigError("--build-arg", f"invalid build arg {item!r} (expected KEY=VALUE)")
        if sep:
            out[key] = value
        elif key in os.environ:  # docker: `--build-arg K` takes K from the environment
            out[key] = os.environ[key]
    return out


@cli.command()
@click.option("-t", "--tag", "tags", multiple=True, metavar="NAME[:TAG]",
              help="Name (and tag) for the image; repeatable.")
@click.option("-f", "--file", "containerfile", metavar="FILE",
              help="The Containerfile (default: CONTEXT/Containerfile or Dockerfile).")
@click.option("--build-arg", "build_args", multiple=True, metavar="K=V",
              help="Set a build-time variable; repeatable.")
@click.option("--target", metavar="STAGE", help="Build this stage (and what it needs) only.")
@click.option("--no-cache", is_flag=True, help="Do not use the build cache.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image ID.")
@click.option("--platform", metavar="OS/ARCH", help="Target platform (default: this host).")
@click.argument("context_dir", metavar="CONTEXT")
@pass_ctx
def build(obj: CliContext, tags: tuple[str, ...], containerfile: str | None,
          build_args: tuple[str, ...], target: str | None, no_cache: bool, quiet: bool,
          platform: str | None, context_dir: str) -> None:
    """Build an image from a Containerfile."""
    from isobox.engine.build_hook import RuntimeStepRunner
    from isobox.images.build.builder import Builder, BuildOptions

    opts = BuildOptions(context_dir, containerfile, list(tags), _build_args(build_args),
                        target, no_cache, quiet, platform)
    builder = Builder(obj.store, RuntimeStepRunner(obj.store.root),
                      out=(lambda _line: None) if quiet else _echo)
    result = builder.build(opts)
    _echo(result.image.id if quiet else result.image.id[7:])


@cli.command()
@click.option("-c", "--change", "changes", multiple=True, metavar="INSTRUCTION",
              help="Apply a Containerfile instruction (CMD, ENV, …) to the config.")
@click.option("-m", "--message", help="Commit message.")
@click.option("-a", "--author", help='Author (e.g. "Jane <jane@example.com>").')
@click.argument("snapshot_id", metavar="CONTAINER|SNAPSHOT")
@click.argument("name", required=False, metavar="[NAME[:TAG]]")
@pass_ctx
def commit(obj: CliContext, changes: tuple[str, ...], message: str | None,
           author: str | None, snapshot_id: str, name: str | None) -> None:
    """Create an image from a container's (or a snapshot's) changes."""
    import os

    from isobox.engine.image_commit import commit_container
    from isobox.engine.layout import Layout
    from isobox.errors import NotFoundError
    from isobox.images.build.builder import commit_snapshot
    from isobox.images.reference import parse_reference

    refs = [parse_reference(name, what="image name")] if name else []
    try:
        if not os.path.exists(Layout.for_root(obj.root).db_path):
            raise NotFoundError("no containers here")  # a bare image store: make no run dir
        obj.engine.get(snapshot_id, reconcile=False)
    except NotFoundError:  # not a container: a snapshot of its own (isobox snapshot …)
        rec = commit_snapshot(obj.store, snapshot_id, refs, changes=list(changes),
                              message=message, author=author)
    else:
        rec = commit_container(obj.engine, snapshot_id, refs, changes=list(changes),
                               message=message, author=author)
    _echo(rec.id)
