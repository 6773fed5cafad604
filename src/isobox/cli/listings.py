"""What the listing commands print (``ps``, ``images``, ``network ls``, ``volume ls``), from
the API's summary types (:mod:`isobox.api.client_types`): built from the local engine's
records or from a remote server's answers, so both print alike. Each row carries Docker's
field names, so ``--format`` takes the templates written for Docker (``{{.Names}}``,
``table {{.ID}}\\t{{.Status}}``, ``{{.Label "k"}}``) and ``--format json`` prints what Docker's
does."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import click

from isobox.api.client_types import (
    ContainerSummary,
    ImageSummary,
    NetworkSummary,
    VolumeSummary,
)
from isobox.cli.formats import Listing, go_time
from isobox.cli.output import human_ago, human_size
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


def _ago(unix: float) -> str:
    return human_ago(datetime.datetime.fromtimestamp(unix, datetime.UTC).isoformat())


def _labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


PS_HEADERS = {"ID": "CONTAINER ID", "Image": "IMAGE", "Command": "COMMAND",
              "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS",
              "State": "STATE", "Status": "STATUS", "Names": "NAMES", "Labels": "LABELS",
              "Networks": "NETWORKS", "Isolation": "ISOLATION"}


def print_ps(rows: Sequence[ContainerSummary], *, quiet: bool, fmt: str, no_trunc: bool) -> None:
    if quiet:
        for r in rows:
            click.echo(r.id if no_trunc else r.id[:12])
        return
    listing = Listing(PS_HEADERS, ["ID", "Image", "Command", "RunningFor", "Status", "Ports",
                                   "Names", "Isolation"])
    for r in rows:
        listing.add({"ID": r.id if no_trunc else r.id[:12], "Image": r.image,
                     "Command": command_display(r.command, not no_trunc),
                     "CreatedAt": go_time(r.created), "RunningFor": _ago(r.created),
                     "Status": r.status, "State": r.state, "Ports": ports_text(r),
                     "Names": r.name, "Labels": _labels_text(r.labels),
                     "Networks": r.network_mode, "Isolation": r.isolation}, r.labels)
    listing.print(fmt)


IMAGE_HEADERS = {"ID": "IMAGE ID", "Repository": "REPOSITORY", "Tag": "TAG",
                 "Digest": "DIGEST", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT",
                 "Size": "SIZE", "VirtualSize": "VIRTUAL SIZE", "Containers": "CONTAINERS",
                 "SharedSize": "SHARED SIZE", "UniqueSize": "UNIQUE SIZE"}


def print_images(images: Sequence[ImageSummary], *, quiet: bool, fmt: str, digests: bool,
                 no_trunc: bool = False) -> None:
    """A row per tag (``<none>`` for an untagged image), as ``docker images``."""
    if quiet:
        for rid in dict.fromkeys(r.id if no_trunc else r.short_id for r in images):
            click.echo(rid)
        return
    listing = Listing(IMAGE_HEADERS, ["Repository", "Tag", *(["Digest"] if digests else []),
                                      "ID", "CreatedSince", "Size"])
    for r in images:
        digest = r.repo_digests[0].partition("@")[2] if r.repo_digests else "<none>"
        for name in r.repo_tags or ("<none>:<none>",):
            repo, _, tag = name.rpartition(":")
            listing.add({"Containers": "N/A", "CreatedAt": go_time(r.created),
                         "CreatedSince": _ago(r.created), "Digest": digest,
                         "ID": r.id if no_trunc else r.short_id, "Repository": repo,
                         "SharedSize": "N/A", "Size": human_size(r.size), "Tag": tag,
                         "UniqueSize": "N/A", "VirtualSize": human_size(r.size)}, r.labels)
    listing.print(fmt)


NETWORK_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE",
                   "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS",
                   "CreatedAt": "CREATED AT"}


def print_networks(nets: Sequence[NetworkSummary], *, quiet: bool, fmt: str,
                   no_trunc: bool) -> None:
    if quiet:
        for n in nets:
            click.echo(n.id if no_trunc else n.id[:12])
        return
    listing = Listing(NETWORK_HEADERS, ["ID", "Name", "Driver", "Scope"])
    for n in nets:
        listing.add({"ID": n.id if no_trunc else n.id[:12], "Name": n.name,
                     "Driver": n.driver, "Scope": n.scope, "IPv6": "false",
                     "Internal": "true" if n.internal else "false",
                     "Labels": _labels_text(n.labels), "CreatedAt": n.created}, n.labels)
    listing.print(fmt)


VOLUME_HEADERS = {"Name": "VOLUME NAME", "Driver": "DRIVER", "Mountpoint": "MOUNTPOINT",
                  "Labels": "LABELS", "Scope": "SCOPE", "CreatedAt": "CREATED AT"}


def print_volumes(vols: Sequence[VolumeSummary], *, quiet: bool, fmt: str) -> None:
    if quiet:
        for v in vols:
            click.echo(v.name)
        return
    listing = Listing(VOLUME_HEADERS, ["Driver", "Name"])
    for v in vols:
        listing.add({"Driver": v.driver, "Name": v.name, "Mountpoint": v.mountpoint,
                     "Labels": _labels_text(v.labels), "Scope": "local",
                     "CreatedAt": v.created_at}, v.labels)
    listing.print(fmt)
