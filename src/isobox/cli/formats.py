"""Docker's ``--format`` for the CLI: the subset of Go templates that scripts use, and the
forms of a listing's format (``ls``/``ps``): ``table``, ``json``, ``table TEMPLATE`` (a header
row, then a row per object, columns at ``\\t``) and ``TEMPLATE`` (a line per object)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from isobox.cli.gotemplate import Methods, Template, go_json, go_value, parse, pieces, render
from isobox.cli.output import print_json, print_table


def go_time(unix: float) -> str:
    """A time as Go's ``time.Time`` prints it (``2024-01-02 03:04:05 +0000 UTC``)."""
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S +0000 UTC")


def render_template(fmt: str, obj: Any, methods: Methods | None = None) -> str:
    """``fmt`` (Go's text/template, the part scripts use: :mod:`isobox.cli.gotemplate`)
    over ``obj``, a JSON document; ``methods`` such as a listing's ``{{.Label "k"}}``."""
    return render(parse(fmt), obj, methods)


def _header(fmt: str, headers: Mapping[str, str]) -> str:
    """A ``table`` template's header row: each action titled as Docker titles the column of
    the first field it names (``{{.ID}}``: CONTAINER ID), an unknown field in capitals."""
    out = []
    for is_action, text in pieces(fmt):
        field = next((w for w in text.split() if w.startswith(".")), ".") if is_action else ""
        name = field[1:].split(".")[0]
        out.append(headers.get(name, name.upper()) if is_action else text)
    return "".join(out)


def inspect_each(names: Sequence[str], fetch: Callable[[str], Any], fmt: str) -> None:
    """``volume inspect A B``: the documents found are printed, an error said for each name
    not found, and the command exits 1 if any was not (as docker's)."""
    from isobox.errors import NotFoundError

    found = []
    failed = False
    for name in names:
        try:
            found.append(fetch(name))
        except NotFoundError as e:
            click.echo(f"isobox: error: {e}", err=True)
            failed = True
    print_objects(found, fmt)
    if failed:
        raise click.exceptions.Exit(1)


def print_objects(objs: list[Any], fmt: str) -> None:
    """``inspect``'s output: the documents as one JSON array, or each as ``--format`` says."""
    if not fmt:
        print_json(objs)
        return
    tree = None if fmt == "json" else parse(fmt)
    for obj in objs:
        click.echo(go_json(obj) if tree is None else render(tree, obj))


class Listing:
    """The rows of an ``ls`` command, each a dict with Docker's field names (what ``--format
    json`` prints), the column title of each field, the fields of the default table, and
    each row's labels (for ``{{.Label "key"}}``)."""

    def __init__(self, headers: Mapping[str, str], default: Sequence[str]) -> None:
        self.headers, self.default = headers, default
        self.rows: list[dict[str, Any]] = []
        self.labels: list[Mapping[str, str]] = []

    def add(self, row: dict[str, Any], labels: Mapping[str, str] | None = None) -> None:
        self.rows.append(row)
        self.labels.append(labels or {})

    def print(self, fmt: str) -> None:
        fmt = fmt.strip() if fmt.strip() in ("", "table", "json") else fmt
        if fmt in ("json", "{{json .}}"):
            for row in self.rows:
                click.echo(go_json(row))
            return
        if fmt in ("", "table"):
            print_table([self.headers[f] for f in self.default],
                        [[go_value(row[f]) for f in self.default] for row in self.rows])
            return
        tree = parse(fmt.removeprefix("table"))
        lines = [self._render(tree, i) for i in range(len(self.rows))]
        if not fmt.startswith("table"):
            for line in lines:
                click.echo(line)
            return
        header = _header(fmt.removeprefix("table").lstrip(" "), self.headers)
        cells = [line.lstrip(" ").split("\t") for line in lines]
        width = max([header.count("\t") + 1, *(len(c) for c in cells)])
        print_table(_pad(header.split("\t"), width), [_pad(c, width) for c in cells])

    def _render(self, tree: Template, i: int) -> str:
        labels = self.labels[i]
        return render(tree, self.rows[i], {"Label": lambda k: labels.get(k, "")})


def _pad(cells: list[str], width: int) -> list[str]:
    return cells + [""] * (width - len(cells))
