"""Parse a Containerfile/Dockerfile the way Docker's BuildKit frontend does.

Only the logic lives here: parser directives, continuation lines, comments, instruction
arguments, ``$VAR`` substitution, ARG/build-arg scoping and multi-stage targets. Heredocs,
``ONBUILD`` and ``RUN --mount/--network/--security`` are refused with an error naming the line.

Substitution needs the environment of the base image (``FROM golang`` then ``WORKDIR
$GOPATH``); pass it as ``base_env`` keyed by the expanded base name. A builder parses once
without it to learn the bases, resolves them, then parses again with their ``Env``.
"""

from __future__ import annotations

import json
import platform as _platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from isobox.errors import ConfigError

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PROXY_ARGS = frozenset({
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
})
KNOWN = frozenset({
    "FROM", "RUN", "CMD", "LABEL", "MAINTAINER", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
    "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
})
# Flags each instruction accepts; RUN's are recognised only to be refused clearly.
_FLAGS: dict[str, frozenset[str]] = {
    "FROM": frozenset({"platform"}),
    "COPY": frozenset({"from", "chown", "chmod", "link"}),
    "ADD": frozenset({"chown", "chmod", "link"}),
    "HEALTHCHECK": frozenset({"interval", "timeout", "start-period", "start-interval", "retries"}),
}
_UNSUPPORTED_RUN_FLAGS = frozenset({"mount", "network", "security", "device"})
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9\-_.]*$")
_HEREDOC = re.compile(r"<<-?\s*[\"']?[A-Za-z_][A-Za-z0-9_]*")
_NAME_START = re.compile(r"[A-Za-z_]")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_]")
_PORT = re.compile(r"^(\d+)(?:-(\d+))?(?:/([A-Za-z]+))?$")


@dataclass(frozen=True)
class Instruction:
    """One instruction after substitution. ``args`` by kind:

    ENV/LABEL ``K=V`` pairs; ARG ``K=V`` or ``K``; RUN/CMD/ENTRYPOINT/SHELL the exec list, or
    one shell string when ``json_form`` is false; COPY/ADD sources then destination; EXPOSE
    ``port/proto`` keys; VOLUME paths; HEALTHCHECK ``NONE``, ``CMD …`` or ``CMD-SHELL cmd``;
    WORKDIR/USER/STOPSIGNAL/MAINTAINER one string. ``run_args`` (RUN only) are the declared
    build args in effect as ``K=V``: part of RUN's environment and of its cache key.
    """

    kind: str
    args: tuple[str, ...]
    flags: dict[str, str]
    line: int
    original: str
    json_form: bool = False
    run_args: tuple[str, ...] = ()

    def pairs(self) -> list[tuple[str, str | None]]:
        """ENV/LABEL/ARG arguments as ``(key, value)``; value None for a bare ``ARG K``."""
        out: list[tuple[str, str | None]] = []
        for a in self.args:
            k, sep, v = a.partition("=")
            out.append((k, v if sep else None))
        return out

    def command(self, shell: Sequence[str] | None = None) -> list[str]:
        """RUN/CMD/ENTRYPOINT as argv: shell form is wrapped in ``shell`` (default sh -c)."""
        if self.json_form:
            return list(self.args)
        return [*(shell or DEFAULT_SHELL), " ".join(self.args)]

    def cache_key(self, shell: Sequence[str] | None = None) -> str:
        """A stable normalized text: equal keys mean the same step on the same parent."""
        if self.kind == "RUN":
            return "RUN " + run_command_string(self.command(shell), self.run_args)
        flags = "".join(f" --{k}={v}" for k, v in sorted(self.flags.items()))
        body = json.dumps(list(self.args)) if self.json_form else " ".join(self.args)
        return f"{self.kind}{flags} {body}"


def run_command_string(argv: Sequence[str], run_args: Sequence[str]) -> str:
    """BuildKit's RUN history text: ``|N K=V … argv`` with the build args in effect."""
    prefix = [f"|{len(run_args)}", *run_args] if run_args else []
    return " ".join([*prefix, *argv])


@dataclass
class Stage:
    """One ``FROM`` block. ``base`` is the expanded image name, or a stage name when
    ``base_stage`` is set; ``deps`` are the stage indices its ``COPY --from`` reads."""

    index: int
    name: str | None
    base: str
    platform: str | None
    instructions: list[Instruction] = field(default_factory=list)
    line: int = 0
    base_stage: int | None = None
    deps: set[int] = field(default_factory=set)
    env: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)


@dataclass
class Containerfile:
    """The parsed file: stages in order, global ARG values, proxy args for RUN."""

    path: str
    stages: list[Stage]
    global_args: dict[str, str]
    escape: str = "\\"
    proxy_args: dict[str, str] = field(default_factory=dict)
    unused_build_args: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- words


class _Lexer:
    """Docker's ``shell.Lex.ProcessWord``: quotes, escapes and ``$VAR`` forms."""

    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.s, self.i, self.env, self.esc = text, 0, env, escape

    def peek(self) -> str:
        return self.s[self.i] if self.i < len(self.s) else ""

    def next(self) -> str:
        ch = self.peek()
        self.i += 1
        return ch

    def word(self, stop: str = "") -> str:
        out: list[str] = []
        while self.i < len(self.s):
            ch = self.peek()
            if stop and ch == stop:
                self.i += 1
                return "".join(out)
            self.i += 1
            if ch == "'":
                out.append(self.single_quote())
            elif ch == '"':
                out.append(self.double_quote())
            elif ch == "$":
                out.append(self.dollar())
            elif ch == self.esc:
                out.append(self.next())
            else:
                out.append(ch)
        if stop:
            raise ValueError(f"missing '{stop}'")
        return "".join(out)

    def single_quote(self) -> str:
        end = self.s.find("'", self.i)
        if end < 0:
            raise ValueError("unexpected end of statement while looking for matching single-quote")
        text, self.i = self.s[self.i:end], end + 1
        return text

    def double_quote(self) -> str:
        out: list[str] = []
        while True:
            ch = self.next()
            if ch == "":
                raise ValueError(
                    "unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                return "".join(out)
            if ch == "$":
                out.append(self.dollar())
            elif ch == self.esc:
                nxt = self.peek()
                if nxt in ('"', "$", self.esc) and nxt:
                    out.append(self.next())
                elif nxt:
                    out.append(ch)
            else:
                out.append(ch)

    def name(self) -> str:
        if self.peek().isdigit():
            return self.next()
        start = self.i
        while self.peek() and _NAME_CHAR.match(self.peek()):
            self.i += 1
        return self.s[start:self.i]

    def dollar(self) -> str:
        ch = self.peek()
        if ch == "{":
            self.i += 1
            return self.braced()
        if not ch or not (_NAME_START.match(ch) or ch.isdigit()):
            return "$"
        return self.env.get(self.name(), "")

    def braced(self) -> str:
        name = self.name()
        if not name:
            raise ValueError("bad substitution")
        op = self.next()
        if op == "}":
            return self.env.get(name, "")
        colon = op == ":"
        if colon:
            op = self.next()
        if op not in ("-", "+", "?"):
            raise ValueError(f"unsupported modifier ({op}) in substitution")
        word = self.word(stop="}")
        value = self.env.get(name)
        present = value is not None and (value != "" or not colon)
        if op == "-":
            return value if present and value is not None else word
        if op == "+":
            return word if present else ""
        if not present:
            raise ValueError(f"{name}: {word or 'is not allowed to be empty'}")
        return value or ""


def expand(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Substitute ``$VAR``/``${VAR…}`` and remove quotes and escapes, as Docker does."""
    return _Lexer(word, env, escape).word()


def parse_words(rest: str, escape: str = "\\") -> list[str]:
    """Split on blanks outside quotes; quotes and escapes stay in the words (``parseWords``)."""
    words: list[str] = []
    word, quote, blank_ok, in_word, i = "", "", False, False, 0
    while i < len(rest):
        ch = rest[i]
        if quote:
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'" and i + 1 < len(rest):
                word += ch
                i += 1
                ch = rest[i]
            word += ch
        elif ch.isspace():
            if in_word and (blank_ok or word):
                words.append(word)
            word, blank_ok, in_word = "", False, False
        else:
            in_word = True
            if ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == escape:
                if i + 1 == len(rest):
                    break
                word += ch
                i += 1
                ch = rest[i]
            word += ch
        i += 1
    if in_word and (blank_ok or word):
        words.append(word)
    return words


# --------------------------------------------------------------------------- lines


@dataclass
class _Line:
    """One logical line: the instruction text joined from its physical lines."""

    number: int
    text: str


def _directives(lines: list[str], where: str) -> tuple[str, int]:
    """Read the parser directives at the top: the escape token and the first other line."""
    escape, seen = "\\", set()
    for n, raw in enumerate(lines):
        m = _DIRECTIVE.match(raw.strip() if n else raw.lstrip("\ufeff").strip())
        if not m:
            return escape, n
        key, value = m.group(1).lower(), m.group(2)
        if key in seen:
            raise ConfigError(f"{where}:{n + 1}", f"only one {key} parser directive can be used")
        seen.add(key)
        if key == "escape":
            if value not in ("\\", "`"):
                raise ConfigError(f"{where}:{n + 1}", f"invalid escape token '{value}' does "
                                  "not match ` or \\")
            escape = value
    return escape, len(lines)


def _is_comment(raw: str) -> bool:
    return raw.lstrip().startswith("#")


def _continued(line: str, escape: str) -> tuple[str, bool]:
    stripped = line.rstrip(" \t")
    if stripped.endswith(escape):
        return stripped[:-1], True
    return line, False


def logical_lines(text: str, escape: str, start: int) -> list[_Line]:
    """Join continuation lines; drop comments and empty lines inside continuations."""
    lines = text.replace("\r\n", "\n").split("\n")
    out: list[_Line] = []
    i = start
    while i < len(lines):
        raw = lines[i].lstrip("\ufeff") if i == 0 else lines[i]
        i += 1
        if _is_comment(raw) or not raw.strip():
            continue
        number = i
        line, more = _continued(raw.lstrip(), escape)
        while more and i < len(lines):
            raw = lines[i]
            i += 1
            if _is_comment(raw) or not raw.strip():
                continue
            part, more = _continued(raw, escape)
            line += part
        if line.strip():
            out.append(_Line(number, line))
    return out


def _split_flags(rest: str) -> tuple[dict[str, str], str]:
    """Leading ``--name[=value]`` words (outer quotes removed) and the remaining text."""
    flags: dict[str, str] = {}
    while True:
        rest = rest.lstrip()
        if not rest.startswith("--"):
            return flags, rest
        token = rest.split(None, 1)[0]
        rest = rest[len(token):]
        if token == "--":
            return flags, rest
        key, sep, value = token[2:].partition("=")
        if len(value) > 1 and value[0] in "'\"" and value[-1] == value[0]:
            value = value[1:-1]
        flags[key.lower()] = value if sep else "true"


# --------------------------------------------------------------------------- parser


@dataclass
class _Ctx:
    """Parsing state shared by the instruction handlers."""

    where: str
    escape: str
    build_args: Mapping[str, str]
    global_args: dict[str, str]
    declared: set[str]
    base_env: Mapping[str, Mapping[str, str]]


def _error(where: str, message: str) -> ConfigError:
    return ConfigError(where, message)


def _expand(ctx: _Ctx, word: str, env: Mapping[str, str]) -> str:
    try:
        return expand(word, env, ctx.escape)
    except ValueError as e:
        raise _error(ctx.where, str(e)) from None


def _maybe_json(rest: str) -> list[str] | None:
    """The JSON-array form of an argument, or None for shell form."""
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _check_flags(ctx: _Ctx, kind: str, flags: Mapping[str, str]) -> None:
    allowed = _FLAGS.get(kind, frozenset())
    for key in flags:
        if kind == "RUN" and key in _UNSUPPORTED_RUN_FLAGS:
            raise _error(ctx.where, f"RUN --{key} is not supported by isobox build")
        if key not in allowed:
            raise _error(ctx.where, f"unknown flag: --{key} for {kind}")


def _kv_words(ctx: _Ctx, kind: str, rest: str) -> list[tuple[str, str]]:
    """ENV/LABEL arguments: ``K=V …`` or the legacy ``K V`` (raw, before expansion)."""
    words = parse_words(rest, ctx.escape)
    if not words:
        raise _error(ctx.where, f"{kind} requires at least one argument")
    if "=" not in words[0]:
        parts = rest.split(None, 1)
        if len(parts) < 2:
            raise _error(ctx.where, f"{kind} must have two arguments")
        return [(parts[0], parts[1])]
    out = []
    for w in words:
        if "=" not in w:
            raise _error(ctx.where, f"Syntax error - can't find = in {w!r}. "
                         "Must be of the form: name=value")
        k, _, v = w.partition("=")
        if not k:
            raise _error(ctx.where, f"{kind} names can not be blank")
        out.append((k, v))
    return out


def _port_keys(ctx: _Ctx, spec: str) -> list[str]:
    m = _PORT.match(spec)
    if not m:
        raise _error(ctx.where, f"invalid containerPort: {spec}")
    first, last = int(m.group(1)), int(m.group(2) or m.group(1))
    proto = (m.group(3) or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise _error(ctx.where, f"invalid proto: {proto}")
    if not 0 < first <= last <= 65535:
        raise _error(ctx.where, f"invalid range specified for containerPort: {spec}")
    return [f"{p}/{proto}" for p in range(first, last + 1)]


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_NS = {"ns": 1, "us": 1000, "µs": 1000, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
            "h": 3600 * 10**9}


def parse_duration(text: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds (``1m30s``, ``500ms``, ``0``)."""
    if text == "0":
        return 0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_NS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"time: invalid duration {text!r}")
    return round(total)


def _health_flags(ctx: _Ctx, flags: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in flags.items():
        if key == "retries":
            if not value.lstrip("-").isdigit() or int(value) < 0:
                raise _error(ctx.where, f"--retries must be a non-negative integer: {value}")
            out[key] = str(int(value))
            continue
        try:
            ns = parse_duration(value)
        except ValueError as e:
            raise _error(ctx.where, f"--{key}: {e}") from None
        if 0 < ns < 10**6:
            raise _error(ctx.where, f"--{key} cannot be less than 1ms")
        out[key] = str(ns)
    return out


def _healthcheck(ctx: _Ctx, flags: dict[str, str], rest: str) -> tuple[tuple[str, ...], bool]:
    head, _, tail = rest.partition(" ")
    kind = head.upper()
    if kind == "NONE":
        if tail.strip() or flags:
            raise _error(ctx.where, "HEALTHCHECK NONE takes no arguments")
        return ("NONE",), False
    if kind != "CMD":
        raise _error(ctx.where, f'unknown type "{head}" in HEALTHCHECK (try CMD)')
    tail = tail.strip()
    if not tail:
        raise _error(ctx.where, "missing command after HEALTHCHECK CMD")
    exec_form = _maybe_json(tail)
    if exec_form is not None:
        return ("CMD", *exec_form), True
    return ("CMD-SHELL", tail), False


class _StageBuilder:
    """Turns the logical lines of one stage into instructions, tracking env and ARGs."""

    def __init__(self, ctx: _Ctx, stage: Stage, stages: list[Stage]) -> None:
        self.ctx, self.stage, self.all_stages = ctx, stage, stages

    def set_arg(self, key: str, value: str) -> None:
        self.stage.env[key] = value
        self.stage.args[key] = value

    def add(self, kind: str, flags: dict[str, str], rest: str, line: _Line) -> None:
        ctx, env = self.ctx, self.stage.env
        args: tuple[str, ...]
        json_form, run_args = False, tuple[str, ...]()
        if kind in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
            exec_form = _maybe_json(rest)
            if kind == "SHELL" and exec_form is None:
                raise _error(ctx.where, "SHELL requires the arguments to be in JSON form")
            if not rest and kind == "RUN":
                raise _error(ctx.where, "RUN requires at least one argument")
            json_form = exec_form is not None
            args = tuple(exec_form) if exec_form is not None else (rest,)
            if kind == "RUN":
                if exec_form is None and _HEREDOC.search(rest):
                    raise _error(ctx.where, "heredocs are not supported in RUN")
                run_args = tuple(f"{k}={env.get(k, v)}" for k, v in self.stage.args.items())
        elif kind in ("COPY", "ADD"):
            args, flags = self.copy_args(kind, flags, rest)
            json_form = _maybe_json(rest) is not None
        elif kind in ("ENV", "LABEL"):
            pairs = [(_expand(ctx, k, env), _expand(ctx, v, env))
                     for k, v in _kv_words(ctx, kind, rest)]
            args = tuple(f"{k}={v}" for k, v in pairs)
            if kind == "ENV":
                env.update(pairs)
        elif kind == "ARG":
            args = self.arg(rest)
        elif kind == "EXPOSE":
            words = [w for t in rest.split() for w in _expand(ctx, t, env).split()]
            if not words:
                raise _error(ctx.where, "EXPOSE requires at least one argument")
            args = tuple(k for w in words for k in _port_keys(ctx, w))
        elif kind == "VOLUME":
            exec_form = _maybe_json(rest)
            raw = exec_form if exec_form is not None else rest.split()
            args = tuple(_expand(ctx, v, env) for v in raw)
            if not args or any(not a.strip() for a in args):
                raise _error(ctx.where, "VOLUME specified can not be an empty string")
        elif kind == "HEALTHCHECK":
            flags = _health_flags(ctx, flags)
            args, json_form = _healthcheck(ctx, flags, rest)
        else:  # WORKDIR USER STOPSIGNAL MAINTAINER
            args = (self.single(kind, rest),)
        self.stage.instructions.append(Instruction(
            kind, args, flags, line.number, line.text.strip(), json_form, run_args))

    def single(self, kind: str, rest: str) -> str:
        if not rest:
            raise _error(self.ctx.where, f"{kind} requires exactly one argument")
        if kind == "MAINTAINER":
            return rest
        value = _expand(self.ctx, rest, self.stage.env)
        if kind == "STOPSIGNAL":
            _check_signal(self.ctx, value)
        if not value:
            raise _error(self.ctx.where, f"{kind} requires a non-empty argument")
        return value

    def copy_args(self, kind: str, flags: dict[str, str],
                  rest: str) -> tuple[tuple[str, ...], dict[str, str]]:
        ctx, env = self.ctx, self.stage.env
        if _HEREDOC.search(rest):
            raise _error(ctx.where, f"heredocs are not supported in {kind}")
        exec_form = _maybe_json(rest)
        raw = exec_form if exec_form is not None else rest.split()
        if len(raw) < 2:
            raise _error(ctx.where, f"{kind} requires at least two arguments, "
                         "but only one was provided. Destination could not be determined")
        args = tuple(_expand(ctx, w, env) for w in raw)
        out = dict(flags)
        for key in ("chown", "chmod"):
            if key in out:
                out[key] = _expand(ctx, out[key], env)
        if "from" in out:
            self.copy_from(out["from"])
        return args, out

    def copy_from(self, source: str) -> None:
        ctx = self.ctx
        if _expand(ctx, source, {}) != source:
            raise _error(ctx.where, "variable expansion is not supported for --from, define a "
                         "new stage with FROM using ARG from global scope as a workaround")
        target = _stage_lookup(self, source)
        if target is not None:
            self.stage.deps.add(target)

    def arg(self, rest: str) -> tuple[str, ...]:
        ctx = self.ctx
        words = parse_words(rest, ctx.escape)
        if not words:
            raise _error(ctx.where, "ARG requires at least one argument")
        out: list[str] = []
        for w in words:
            key, sep, raw = w.partition("=")
            if not key:
                raise _error(ctx.where, f"ARG names can not be blank: {w}")
            ctx.declared.add(key)
            value: str | None
            if key in ctx.build_args:
                value = ctx.build_args[key]
            elif sep:
                value = _expand(ctx, raw, self.stage.env)
            else:
                value = ctx.global_args.get(key)
            if value is not None:
                self.set_arg(key, value)
            out.append(f"{key}={value}" if value is not None else key)
        return tuple(out)


_SIGNALS = frozenset({
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
    "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
    "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
})
_RT_SIGNAL = re.compile(r"^RTM(?:IN|AX)(?:[+-]\d+)?$")


def _check_signal(ctx: _Ctx, value: str) -> None:
    """``STOPSIGNAL``: a number 1-64 or a name, with or without ``SIG``."""
    if value.isdigit():
        if 0 < int(value) <= 64:
            return
    else:
        name = value.upper().removeprefix("SIG")
        if name in _SIGNALS or _RT_SIGNAL.match(name):
            return
    raise _error(ctx.where, f"invalid signal: {value}")


def _stage_lookup(builder: _StageBuilder, source: str) -> int | None:
    """The stage index ``COPY --from`` names, or None for an image reference."""
    stages = builder.all_stages
    current = builder.stage.index
    if source.isdigit():
        index = int(source)
        if index >= current:
            raise _error(builder.ctx.where, f"invalid from flag value {source}: refers to "
                         "current or future build stage")
        return index
    for st in stages:
        if st.name == source.lower():
            if st.index >= current:
                raise _error(builder.ctx.where, f'cannot copy from stage "{source}", it needs '
                             f'to be defined before current stage "{builder.stage.name or ""}"')
            return st.index
    return None


def default_platform() -> str:
    """``linux/<arch>`` of this machine, as BuildKit names it."""
    machine = _platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "armv7l": "arm/v7", "ppc64le": "ppc64le", "s390x": "s390x",
            "riscv64": "riscv64"}.get(machine, machine)
    return f"linux/{arch}"


def platform_args(target: str, build: str) -> dict[str, str]:
    """The automatic ``TARGET*``/``BUILD*`` platform args."""
    out: dict[str, str] = {}
    for prefix, value in (("BUILD", build), ("TARGET", target)):
        os_, _, rest = value.partition("/")
        arch, _, variant = rest.partition("/")
        out.update({f"{prefix}PLATFORM": value, f"{prefix}OS": os_,
                    f"{prefix}ARCH": arch, f"{prefix}VARIANT": variant})
    return out


def _split_instruction(line: _Line, where: str) -> tuple[str, dict[str, str], str]:
    parts = line.text.strip().split(None, 1)
    kind = parts[0].upper()
    rest = parts[1] if len(parts) > 1 else ""
    if kind not in KNOWN:
        raise ConfigError(where, f"unknown instruction: {kind}")
    flags, rest = _split_flags(rest)
    return kind, flags, rest.strip()


def _global_arg(ctx: _Ctx, rest: str, env: dict[str, str]) -> None:
    """``ARG`` before the first ``FROM``: usable in ``FROM`` and inherited by stages."""
    words = parse_words(rest, ctx.escape)
    if not words:
        raise _error(ctx.where, "ARG requires at least one argument")
    for w in words:
        key, sep, raw = w.partition("=")
        ctx.declared.add(key)
        if key in ctx.build_args:
            ctx.global_args[key] = env[key] = ctx.build_args[key]
        elif sep:
            ctx.global_args[key] = env[key] = _expand(ctx, raw, env)


def _new_stage(ctx: _Ctx, flags: dict[str, str], rest: str, line: _Line,
               stages: list[Stage], env: Mapping[str, str]) -> Stage:
    words = rest.split()
    if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
        raise _error(ctx.where, "FROM requires either one or three arguments")
    name = words[2].lower() if len(words) == 3 else None
    if name is not None:
        if not _STAGE_NAME.match(name):
            raise _error(ctx.where, f"invalid name for build stage: {words[2]!r}, name can't "
                         "start with a number or contain symbols")
        if any(s.name == name for s in stages):
            raise _error(ctx.where, f"duplicate stage name {name!r}")
    base = _expand(ctx, words[0], env)
    if not base:
        raise _error(ctx.where, f"base name ({words[0]}) should not be blank")
    plat = _expand(ctx, flags["platform"], env) if "platform" in flags else None
    stage = Stage(len(stages), name, base, plat or None, line=line.number)
    parent = next((s for s in stages if s.name == base.lower()), None)
    if parent is not None:
        stage.base_stage = parent.index
        stage.env = dict(parent.env)
        stage.args = dict(parent.args)
    else:
        stage.env = dict(ctx.base_env.get(base, {}))
        stage.env.setdefault("PATH", DEFAULT_PATH)
    return stage


def parse_containerfile(text: str, *, build_args: Mapping[str, str],
                        path: str = "Containerfile", platform: str | None = None,
                        base_env: Mapping[str, Mapping[str, str]] | None = None,
                        ) -> Containerfile:
    """Parse ``text``; errors are ``ConfigError("<path>:<line>", message)``."""
    raw_lines = text.replace("\r\n", "\n").split("\n")
    escape, start = _directives(raw_lines, path)
    target = platform or default_platform()
    ctx = _Ctx(path, escape, build_args, {}, set(), base_env or {})
    meta_env = platform_args(target, default_platform())
    ctx.global_args.update(meta_env)
    stages: list[Stage] = []
    builder: _StageBuilder | None = None
    for line in logical_lines(text, escape, start):
        ctx.where = f"{path}:{line.number}"
        kind, flags, rest = _split_instruction(line, ctx.where)
        if kind == "ONBUILD":
            raise _error(ctx.where, "ONBUILD is not supported by isobox build")
        _check_flags(ctx, kind, flags)
        if kind == "FROM":
            stage = _new_stage(ctx, flags, rest, line, stages, meta_env)
            stages.append(stage)
            builder = _StageBuilder(ctx, stage, stages)
        elif builder is None:
            if kind != "ARG":
                raise _error(ctx.where, "no build stage in current context")
            _global_arg(ctx, rest, meta_env)
        else:
            builder.add(kind, flags, rest, line)
    if not stages:
        raise ConfigError(path, "file with no instructions" if not text.strip()
                          else "no build stage in current context")
    _resolve_deps(stages, path)
    proxy = {k: v for k, v in build_args.items() if k in PROXY_ARGS}
    unused = sorted(k for k in build_args if k not in ctx.declared and k not in PROXY_ARGS)
    return Containerfile(path, stages, ctx.global_args, escape, proxy, unused)


def _resolve_deps(stages: list[Stage], path: str) -> None:
    """Re-check ``COPY --from`` names now that every stage name is known."""
    names = {s.name: s.index for s in stages if s.name}
    for st in stages:
        for ins in st.instructions:
            src = ins.flags.get("from")
            if src and not src.isdigit() and names.get(src.lower(), -1) >= st.index:
                raise ConfigError(f"{path}:{ins.line}", f'cannot copy from stage "{src}", it '
                                  f'needs to be defined before current stage "{st.name or ""}"')


def stages_for_target(cf: Containerfile, target: str | None) -> list[Stage]:
    """The stages ``--target`` needs (all reachable via FROM and COPY --from), in order."""
    if target is None:
        chosen = cf.stages[-1]
    else:
        found = [s for s in cf.stages if s.name == target.lower()]
        if not found:
            raise ConfigError(cf.path, f'target stage "{target}" could not be found')
        chosen = found[0]
    needed: set[int] = set()
    todo = [chosen.index]
    while todo:
        i = todo.pop()
        if i in needed:
            continue
        needed.add(i)
        st = cf.stages[i]
        if st.base_stage is not None:
            todo.append(st.base_stage)
        todo.extend(st.deps)
    return [s for s in cf.stages if s.index in needed]
