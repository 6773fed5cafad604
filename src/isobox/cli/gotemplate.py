"""The part of Go's text/template that ``--format`` scripts written for Docker use, over the
JSON documents the CLI prints: ``{{.A.B}}``, ``$`` and ``$var``, pipelines (``{{.X | json}}``),
``{{range}}`` (with ``$k, $v :=`` and ``{{else}}``), ``{{if}}``/``{{else if}}``/``{{else}}``,
``{{with}}``, and the functions of Go (``len index print printf println eq ne lt le gt ge
and or not``) and of Docker (``json join split title lower upper truncate pad``).

Values print as Go prints them: ``<nil>``, ``true``, ``[a b]``, ``map[k:v]``; a missing key
of a nested object prints ``<no value>`` (Docker's maps), a missing top-level field is an
error (a typo of one of Docker's struct fields).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from isobox.errors import ConfigError

Methods = Mapping[str, Callable[..., Any]]


class TemplateError(ConfigError):
    def __init__(self, message: str) -> None:
        super().__init__("--format", f"template: {message}")


NO_VALUE = object()  # a missing map key: prints "<no value>"


def go_value(v: Any) -> str:
    """A value printed as Go's text/template prints it."""
    if v is NO_VALUE:
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) < 1e21 else repr(v)
    if isinstance(v, list | tuple):
        return "[" + " ".join(go_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{go_value(v[k])}" for k in sorted(v)) + "]"
    return str(v)


def go_json(v: Any) -> str:
    """Go's json.Marshal: compact, with <, > and & escaped."""
    text = json.dumps(None if v is NO_VALUE else v, separators=(",", ":"),
                      ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def truthy(v: Any) -> bool:
    """Go's template truth: false, 0, nil and empty strings, lists and maps are false."""
    return not (v is None or v is NO_VALUE or v is False
                or (isinstance(v, int | float) and v == 0)
                or (isinstance(v, str | list | tuple | dict) and len(v) == 0))


# -- parsing --------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|`[^`]*`|\||:=|,|\(|\)|[^\s|,()]+)')


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or not m.group(1):
            raise TemplateError(f"bad action {{{{{text}}}}}")
        out.append(m.group(1))
        pos = m.end()
    return out


@dataclass
class _Node:
    kind: str                     # text | action | if | range | with
    text: str = ""
    pipe: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)        # range $k, $v :=
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _unescape(text: str) -> str:
    """``\\n`` and ``\\t`` typed in a shell, outside actions (the docker CLI's listings)."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def pieces(fmt: str) -> list[tuple[bool, str]]:
    out: list[tuple[bool, str]] = []
    rest = fmt
    while rest:
        start = rest.find("{{")
        if start < 0:
            out.append((False, _unescape(rest)))
            break
        end = rest.find("}}", start)
        if end < 0:
            raise TemplateError("unclosed action")
        text = rest[:start]
        inner = rest[start + 2:end]
        if inner.startswith("-"):
            text, inner = text.rstrip(), inner[1:]
        after = rest[end + 2:]
        if inner.endswith("-"):
            inner, after = inner[:-1], after.lstrip()
        out.append((False, _unescape(text)))
        out.append((True, inner.strip()))
        rest = after
    return out


_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`|-?\d+(?:\.\d*)?|\.|(?:\$\w*)?(?:\.\w+)+|\$\w*'
                   r'|[|,()]|:=|true|false|nil')


def _checked(words: list[str], methods: Sequence[str] = ()) -> list[str]:
    """Go's parse-time checks: every word a literal, field, variable or known function."""
    for w in words:
        if not _WORD.fullmatch(w) and w not in FUNCS:
            if w.startswith(('"', "`")):
                raise TemplateError(f"unterminated quoted string {w}")
            raise TemplateError(f'function "{w}" not defined')
    return words


class _Parser:
    def __init__(self, fmt: str) -> None:
        self.pieces = pieces(fmt)
        self.pos = 0

    def parse(self) -> list[_Node]:
        nodes, end = self._block()
        if end is not None:
            raise TemplateError(f"unexpected {{{{{end}}}}}")
        return nodes

    def _block(self) -> tuple[list[_Node], str | None]:
        """Nodes up to an ``end`` or ``else`` (returned) or the end of the template."""
        nodes: list[_Node] = []
        while self.pos < len(self.pieces):
            is_action, text = self.pieces[self.pos]
            self.pos += 1
            if not is_action:
                if text:
                    nodes.append(_Node("text", text=text))
                continue
            words = _tokens(text) if text else []
            if not words or words[0].startswith("/*"):
                continue
            head = words[0]
            if head == "end" or head == "else":
                return nodes, text
            if head in ("if", "range", "with"):
                nodes.append(self._control(head, words[1:]))
            else:
                nodes.append(_Node("action", pipe=_checked(words)))
        return nodes, None

    def _control(self, kind: str, words: list[str]) -> _Node:
        node = _Node(kind)
        if kind == "range" and ":=" in words:
            i = words.index(":=")
            node.names = [w for w in words[:i] if w != ","]
            words = words[i + 1:]
        if not words:
            raise TemplateError(f"missing value for {kind}")
        node.pipe = _checked(words)
        node.body, end = self._block()
        if end is None:
            raise TemplateError(f"unexpected EOF: {{{{{kind}}}}} without {{{{end}}}}")
        if end.split()[0] == "else":
            rest = end.split()[1:]
            if rest and rest[0] in ("if", "with") and kind == rest[0]:
                node.orelse = [self._control(kind, _tokens(" ".join(rest[1:])))]
                return node
            node.orelse, end = self._block()
            if end is None or end != "end":
                raise TemplateError(f"{{{{{kind}}}}} without {{{{end}}}}")
        return node


# -- evaluation -----------------------------------------------------------------------------

def _printf(fmt: str, *args: Any) -> str:
    """Go's printf for the verbs scripts use: %s %d %v %q %f %x and widths."""
    it = iter(args)

    def one(m: re.Match[str]) -> str:
        flags, verb = m.group(1), m.group(2)
        if verb == "%":
            return "%"
        v = next(it, None)
        if verb == "v" or verb == "s":
            return ("%" + flags + "s") % go_value(v)
        if verb == "q":
            return ("%" + flags + "s") % json.dumps(go_value(v))
        return ("%" + flags + verb) % v
    return re.sub(r"%([-+# 0-9.]*)([sdvqfxX%])", one, fmt)


def _index(v: Any, *keys: Any) -> Any:
    for k in keys:
        if v is None or (isinstance(v, dict) and k not in v):
            return ""  # Go: the zero value of a missing key (Docker's maps are of strings)
        try:
            v = v[int(k)] if isinstance(v, list | tuple) else v[k]
        except (KeyError, IndexError, TypeError, ValueError):
            raise TemplateError(f"index of {k}: not found") from None
    return v


def _cmp(op: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def f(a: Any, *bs: Any) -> bool:
        try:
            return any(op(a, b) for b in bs) if op is _eq else op(a, bs[0])
        except TypeError:
            raise TemplateError("incompatible types for comparison") from None
    return f


def _eq(a: Any, b: Any) -> bool:
    return bool(a == b)


def _and(*xs: Any) -> Any:
    for x in xs:
        if not truthy(x):
            return x
    return xs[-1]


def _or(*xs: Any) -> Any:
    for x in xs:
        if truthy(x):
            return x
    return xs[-1]


FUNCS: dict[str, Callable[..., Any]] = {
    "json": go_json,
    "join": lambda xs, sep: sep.join(go_value(x) for x in (xs or [])),
    "split": lambda s, sep: str(s).split(sep),
    "title": lambda s: str(s).title(),
    "lower": lambda s: go_value(s).lower(),
    "upper": lambda s: go_value(s).upper(),
    "truncate": lambda s, n: str(s)[:int(n)],
    "pad": lambda s, before, after: " " * int(before) + str(s) + " " * int(after),
    "len": lambda x: len(x),
    "index": _index,
    "print": lambda *xs: "".join(go_value(x) for x in xs),
    "println": lambda *xs: " ".join(go_value(x) for x in xs) + "\n",
    "printf": _printf,
    "eq": _cmp(_eq),
    "ne": _cmp(lambda a, b: a != b),
    "lt": _cmp(lambda a, b: a < b),
    "le": _cmp(lambda a, b: a <= b),
    "gt": _cmp(lambda a, b: a > b),
    "ge": _cmp(lambda a, b: a >= b),
    "and": _and,
    "or": _or,
    "not": lambda x: not truthy(x),
}


class _Scope:
    def __init__(self, root: Any, methods: Methods) -> None:
        self.vars: dict[str, Any] = {"$": root}
        self.methods = methods

    def field(self, base: Any, path: str, top: bool) -> Any:
        cur = base
        for i, part in enumerate(p for p in path.split(".") if p):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            elif isinstance(cur, dict) and not (top and i == 0):
                return NO_VALUE  # a map without that key
            elif cur is None or cur is NO_VALUE:
                return NO_VALUE if cur is NO_VALUE else None
            else:
                raise TemplateError(f"can't evaluate field {part} in .{path}")
        return cur

    def arg(self, word: str, dot: Any) -> Any:
        if word.startswith('"'):
            try:
                return json.loads(word, strict=False)
            except ValueError:
                raise TemplateError(f"bad quoted string {word}") from None
        if word.startswith("`"):
            return word[1:-1]
        if word in ("true", "false"):
            return word == "true"
        if word == "nil":
            return None
        if re.fullmatch(r"-?\d+", word):
            return int(word)
        if re.fullmatch(r"-?\d+\.\d*", word):
            return float(word)
        if word == ".":
            return dot
        if word.startswith("."):
            return self.field(dot, word[1:], dot is self.vars["$"])
        if word.startswith("$"):
            name, _, path = word.partition(".")
            if name not in self.vars:
                raise TemplateError(f'undefined variable "{name}"')
            value = self.vars[name]
            return self.field(value, path, False) if path else value
        raise TemplateError(f'function "{word}" not defined')

    def pipeline(self, words: Sequence[str], dot: Any) -> Any:
        commands: list[list[str]] = [[]]
        for w in words:
            if w == "|":
                commands.append([])
            else:
                commands[-1].append(w)
        value: Any = NO_VALUE
        for i, cmd in enumerate(commands):
            if not cmd:
                raise TemplateError("missing command in pipeline")
            piped = [value] if i else []
            value = self.command(cmd, dot, piped)
        return value

    def command(self, cmd: list[str], dot: Any, piped: list[Any]) -> Any:
        head, rest = cmd[0], [w for w in cmd[1:] if w not in "()"]
        if head in FUNCS:
            args = [self.arg(w, dot) for w in rest] + piped
            try:
                return FUNCS[head](*args)
            except TemplateError:
                raise
            except Exception:  # a wrong count or type of arguments: Go's error, not ours
                raise TemplateError(f"error calling {head}: bad arguments") from None
        if head.startswith(".") and head[1:] in self.methods:
            try:
                return self.methods[head[1:]](*[self.arg(w, dot) for w in rest], *piped)
            except TemplateError:
                raise
            except Exception:
                raise TemplateError(f"error calling {head}: bad arguments") from None
        if rest or piped:
            raise TemplateError(f"can't give arguments to {head}")
        return self.arg(head, dot)


def _run(nodes: list[_Node], scope: _Scope, dot: Any, out: list[str]) -> None:
    for node in nodes:
        if node.kind == "text":
            out.append(node.text)
        elif node.kind == "action":
            if len(node.pipe) >= 3 and node.pipe[0].startswith("$") and node.pipe[1] == ":=":
                scope.vars[node.pipe[0]] = scope.pipeline(node.pipe[2:], dot)
                continue
            out.append(go_value(scope.pipeline(node.pipe, dot)))
        elif node.kind in ("if", "with"):
            value = scope.pipeline(node.pipe, dot)
            if truthy(value):
                _run(node.body, scope, value if node.kind == "with" else dot, out)
            else:
                _run(node.orelse, scope, dot, out)
        else:  # range
            value = scope.pipeline(node.pipe, dot)
            items: list[tuple[Any, Any]]
            if isinstance(value, dict):
                items = [(k, value[k]) for k in sorted(value)]
            elif isinstance(value, list | tuple):
                items = list(enumerate(value))
            elif value is None or value is NO_VALUE:
                items = []
            else:
                raise TemplateError(f"range can't iterate over {go_value(value)}")
            if not items:
                _run(node.orelse, scope, dot, out)
            for key, elem in items:
                if len(node.names) == 1:
                    scope.vars[node.names[0]] = elem
                elif len(node.names) == 2:
                    scope.vars[node.names[0]], scope.vars[node.names[1]] = key, elem
                _run(node.body, scope, elem, out)


Template = list[_Node]


def parse(fmt: str) -> Template:
    """The template's tree; TemplateError for a syntax error (checked before any object is
    rendered, so a bad template fails even when there is nothing to list)."""
    return _Parser(fmt).parse()


def render(tree: Template, obj: Any, methods: Methods | None = None) -> str:
    out: list[str] = []
    _run(tree, _Scope(obj, methods or {}), obj, out)
    return "".join(out)
