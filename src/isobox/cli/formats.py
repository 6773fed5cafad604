"""Docker's ``--format`` for the CLI: the subset of Go templates that scripts use, and the
forms of a listing's format (``ls``/``ps``): ``table``, ``json``, ``table TEMPLATE`` (a header
row, then a row per object, columns at ``\\t``) and ``TEMPLATE`` (a line per object)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import click

from isobox.cli.output import print_json, print_table
from isobox.errors import ConfigError


def go_value(v: Any) -> str:
    """A value printed as Go's text/template prints it."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + " ".join(go_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_value(v[k])}" for k in sorted(v)) + "]"
    return str(v)


def go_time(unix: float) -> str:
    """A time as Go's ``time.Time`` prints it (``2024-01-02 03:04:05 +0000 UTC``)."""
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S +0000 UTC")


def _lookup(obj: Any, expr: str) -> Any:
    expr = expr.strip()
    if expr == ".":
        return obj
    if not expr.startswith("."):
        if expr.startswith('"') and expr.endswith('"'):
            return expr[1:-1]
        raise ConfigError("--format", f"template: unsupported expression {expr!r}")
    cur = obj
    for part in expr[1:].split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            raise ConfigError("--format", f'template: can\'t evaluate field {part} in {expr}')
    return cur


def _action(obj: Any, text: str, methods: Mapping[str, Callable[[str], str]]) -> str:
    words = text.split()
    if not words:
        return ""
    if words[0] == "json" and len(words) == 2:
        return json.dumps(_lookup(obj, words[1]))
    if words[0] == "index" and len(words) >= 3:
        cur = _lookup(obj, words[1])
        for key in words[2:]:
            k: Any = key.strip('"')
            if isinstance(cur, list):
                k = int(k)
            try:
                cur = cur[k]
            except (KeyError, IndexError, TypeError):
                raise ConfigError("--format", f"template: index of {key}: not found") from None
        return go_value(cur)
    if words[0] in ("upper", "lower") and len(words) == 2:
        s = go_value(_lookup(obj, words[1]))
        return s.upper() if words[0] == "upper" else s.lower()
    if len(words) == 2 and words[0][1:] in methods and words[1].startswith('"'):
        return methods[words[0][1:]](words[1].strip('"'))  # {{.Label "key"}}
    if len(words) == 1:
        return go_value(_lookup(obj, words[0]))
    raise ConfigError("--format", f"template: unsupported action {{{{{text}}}}}")


def _parts(fmt: str) -> list[tuple[bool, str]]:
    """The template cut into (is an action, text), ``\\n`` and ``\\t`` unescaped."""
    out: list[tuple[bool, str]] = []
    rest = fmt.replace("\\n", "\n").replace("\\t", "\t")
    while rest:
        start = rest.find("{{")
        if start < 0:
            out.append((False, rest))
            break
        end = rest.find("}}", start)
        if end < 0:
            raise ConfigError("--format", "template: unclosed action")
        out.append((False, rest[:start]))
        out.append((True, rest[start + 2:end].strip().lstrip("-").rstrip("-")))
        rest = rest[end + 2:]
    return out


def check_template(fmt: str, methods: Sequence[str] = ()) -> None:
    """The template's syntax, checked before any object is rendered (so a bad template fails
    even when nothing would be listed): closed actions of the supported forms."""
    for is_action, text in _parts(fmt):
        words = text.split()
        if not is_action or not words:
            continue
        name = words[0]
        if ((len(words) == 1 and (name == "." or name.startswith(".") or name.startswith('"')))
                or (name in ("json", "upper", "lower") and len(words) == 2)
                or (name == "index" and len(words) >= 3)
                or (len(words) == 2 and name[1:] in methods and words[1].startswith('"'))):
            continue
        raise ConfigError("--format", f"template: unsupported action {{{{{text}}}}}")


def render_template(fmt: str, obj: Any,
                    methods: Mapping[str, Callable[[str], str]] | None = None) -> str:
    """The subset of Go templates scripts use: ``{{.A.B}}``, ``{{json .A}}``,
    ``{{index .A "k"}}``, ``{{upper .A}}``, and a listing's methods such as
    ``{{.Label "k"}}``; text outside actions is copied."""
    return "".join(_action(obj, text, methods or {}) if is_action else text
                   for is_action, text in _parts(fmt))


def _header(fmt: str, headers: Mapping[str, str]) -> str:
    """A ``table`` template's header row: each action titled as Docker titles the column of
    the first field it names (``{{.ID}}``: CONTAINER ID), an unknown field in capitals."""
    out = []
    for is_action, text in _parts(fmt):
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
    for obj in objs:
        click.echo(json.dumps(obj) if fmt == "json" else render_template(fmt, obj))


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
                click.echo(json.dumps(row))
            return
        if fmt in ("", "table"):
            print_table([self.headers[f] for f in self.default],
                        [[go_value(row[f]) for f in self.default] for row in self.rows])
            return
        check_template(fmt.removeprefix("table"), ("Label",))
        lines = [self._render(fmt.removeprefix("table"), i) for i in range(len(self.rows))]
        if not fmt.startswith("table"):
            for line in lines:
                click.echo(line)
            return
        header = _header(fmt.removeprefix("table").lstrip(" "), self.headers)
        cells = [line.lstrip(" ").split("\t") for line in lines]
        width = max([header.count("\t") + 1, *(len(c) for c in cells)])
        print_table(_pad(header.split("\t"), width), [_pad(c, width) for c in cells])

    def _render(self, fmt: str, i: int) -> str:
        labels = self.labels[i]
        return render_template(fmt, self.rows[i], {"Label": lambda k: labels.get(k, "")})


def _pad(cells: list[str], width: int) -> list[str]:
    return cells + [""] * (width - len(cells))
