"""What ``isobox ps`` prints, from :class:`~isobox.api.client_types.ContainerSummary` rows —
built from the local engine's records or from a remote server's ``GET /containers/json``, so
both print alike."""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence

import click

from isobox.api.client_types import ContainerSummary
from isobox.cli.output import human_ago, print_table
from isobox.errors import ConfigError


def command_display(text: str, trunc: bool) -> str:
    if trunc and len(text) > 20:
        text = text[:19] + "…"
    return f'"{text}"'


def ports_text(row: ContainerSummary) -> str:
    return ", ".join(f"{p.ip or '0.0.0.0'}:{p.public_port}->{p.private_port}/{p.type}"
                     for p in row.ports if p.public_port)


def filter_pairs(filters: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for f in filters:
        k, sep, v = f.partition("=")
        if not sep:
            raise ConfigError("--filter", f"bad format of filter (expected name=value): {f}")
        pairs.append((k, v))
    return pairs


def print_ps(rows: Sequence[ContainerSummary], *, quiet: bool, fmt: str, no_trunc: bool) -> None:
    if quiet:
        for r in rows:
            click.echo(r.id if no_trunc else r.id[:12])
        return
    if fmt == "json" or fmt == "{{json .}}":
        for r in rows:
            created = datetime.datetime.fromtimestamp(r.created, datetime.UTC)
            click.echo(json.dumps({
                "ID": r.id if no_trunc else r.id[:12], "Image": r.image,
                "Command": command_display(r.command, not no_trunc), "CreatedAt": str(created),
                "Status": r.status, "State": r.state, "Ports": ports_text(r), "Names": r.name,
                "Labels": ",".join(f"{k}={v}" for k, v in r.labels.items()),
                "Networks": r.network_mode, "Isolation": r.isolation}))
        return
    if fmt and fmt != "table":
        raise ConfigError("--format", f"unsupported format {fmt!r} (table or json)")
    table = []
    for r in rows:
        when = datetime.datetime.fromtimestamp(r.created, datetime.UTC).isoformat()
        table.append([r.id if no_trunc else r.id[:12], r.image,
                      command_display(r.command, not no_trunc), human_ago(when), r.status,
                      ports_text(r), r.name, r.isolation])
    print_table(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES",
                 "ISOLATION"], table)
