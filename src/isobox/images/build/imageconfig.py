"""Apply Containerfile instructions to an image config, as BuildKit does.

The config is the OCI/Docker image JSON (``architecture``, ``os``, ``config`` with
``Env``/``Cmd``/…, ``rootfs``, ``history``); functions return new dicts and never touch the
argument. History entries match BuildKit's: ``created_by`` such as ``RUN /bin/sh -c echo hi
# buildkit``, ``comment`` ``buildkit.dockerfile.v0`` and ``empty_layer`` for metadata-only steps.
RUN/COPY/ADD (and WORKDIR other than ``/``, which BuildKit makes with a mkdir) get entries
without ``empty_layer``: the builder makes those layers (and may mark an empty diff empty).
"""

from __future__ import annotations

import copy
import posixpath
from collections.abc import Iterable
from typing import Any

from isobox.images.build.containerfile import (
    DEFAULT_PATH,
    DEFAULT_SHELL,
    Instruction,
    run_command_string,
)

HISTORY_COMMENT = "buildkit.dockerfile.v0"
_HEALTH_KEYS = (("interval", "Interval"), ("timeout", "Timeout"),
                ("start-period", "StartPeriod"), ("start-interval", "StartInterval"))

Config = dict[str, Any]


def new_scratch_config(platform: str) -> Config:
    """The config of ``FROM scratch`` for ``os/arch[/variant]``: PATH set, WorkingDir ``/``."""
    os_, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    cfg: Config = {"architecture": arch, "os": os_}
    if variant:
        cfg["variant"] = variant
    cfg["config"] = {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/", "OnBuild": None}
    cfg["rootfs"] = {"type": "layers", "diff_ids": []}
    cfg["history"] = []
    return cfg


def prepare_base(config: Config) -> Config:
    """A base image's config made ready for a stage: PATH added when missing (not Windows),
    ``OnBuild`` cleared, ``created`` dropped."""
    new = copy.deepcopy(config)
    new.pop("created", None)
    inner = new.setdefault("config", {})
    env = inner.get("Env") or []
    if new.get("os") != "windows" and not any(e.partition("=")[0] == "PATH" for e in env):
        inner["Env"] = [*env, f"PATH={DEFAULT_PATH}"]
    inner["OnBuild"] = None
    new.setdefault("history", [])
    return new


def go_quote_list(items: Iterable[str]) -> str:
    """Go's ``%q`` of a ``[]string``: ``["a" "b"]``."""
    return "[" + " ".join(_go_quote(s) for s in items) + "]"


def _go_quote(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\a\b\f\n\r\t\v":
            out.append("\\" + "abfnrtv"["\a\b\f\n\r\t\v".index(ch)])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out) + '"'


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String``: ``0s``, ``500ms``, ``1.5s``, ``1m30s``, ``1h0m0s``."""
    if ns == 0:
        return "0s"
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("µs", 10**3), ("ns", 1)):
            if ns >= size:
                return _frac(ns, size) + unit
    hours, rem = divmod(ns, 3600 * 10**9)
    minutes, rem = divmod(rem, 60 * 10**9)
    text = _frac(rem, 10**9) + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    return f"{minutes}m{text}" if minutes else text


def _frac(value: int, size: int) -> str:
    whole, part = divmod(value, size)
    if not part:
        return str(whole)
    digits = f"{part:0{len(str(size)) - 1}d}".rstrip("0")
    return f"{whole}.{digits}"


def _history(created: str, created_by: str, *, layer: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"created": created, "created_by": created_by,
                             "comment": HISTORY_COMMENT}
    if not layer:
        entry["empty_layer"] = True
    return entry


def _shell(inner: Config) -> list[str]:
    return list(inner.get("Shell") or DEFAULT_SHELL)


def add_env(env: list[str], key: str, value: str) -> list[str]:
    """Set ``key`` in a ``K=V`` list, in place of an earlier value, else at the end."""
    out = list(env)
    for i, item in enumerate(out):
        if item.partition("=")[0] == key:
            out[i] = f"{key}={value}"
            return out
    out.append(f"{key}={value}")
    return out


def normalize_workdir(current: str, path: str) -> str:
    """``WORKDIR``: relative paths join the current one; the result is cleaned."""
    return posixpath.normpath(posixpath.join(current or "/", path)).replace("//", "/")


def _health(instr: Instruction) -> tuple[dict[str, Any], str]:
    test = list(instr.args)
    hc: dict[str, Any] = {"Test": test}
    durations = {k: int(instr.flags.get(f, "0")) for f, k in _HEALTH_KEYS}
    for key, ns in durations.items():
        if ns:
            hc[key] = ns
    retries = int(instr.flags.get("retries", "0"))
    if retries:
        hc["Retries"] = retries
    text = ("{Test:[" + " ".join(test) + "]"
            + "".join(f" {k}:{go_duration(v)}" for k, v in durations.items())
            + f" Retries:{retries}}}")
    return hc, text


def _apply_meta(cfg: Config, instr: Instruction, cmd_set: bool) -> str:
    """Metadata-only instructions: update ``cfg`` in place, return ``created_by``."""
    inner: Config = cfg["config"]
    kind, args = instr.kind, instr.args
    if kind == "ENV":
        for k, v in instr.pairs():
            inner["Env"] = add_env(inner.get("Env") or [], k, v or "")
        return "ENV " + " ".join(args)
    if kind == "LABEL":
        labels = dict(inner.get("Labels") or {})
        labels.update((k, v or "") for k, v in instr.pairs())
        inner["Labels"] = labels
        return "LABEL " + " ".join(args)
    if kind == "ARG":
        return "ARG " + " ".join(args)
    if kind in ("CMD", "ENTRYPOINT"):
        argv = instr.command(_shell(inner))
        if kind == "CMD":
            inner["Cmd"] = argv
            inner["ArgsEscaped"] = True
        else:
            inner["Entrypoint"] = argv
            if not cmd_set:
                inner["Cmd"] = None
        return f"{kind} {go_quote_list(argv)}"
    if kind == "USER":
        inner["User"] = args[0]
    elif kind == "STOPSIGNAL":
        inner["StopSignal"] = args[0]
    elif kind == "MAINTAINER":
        cfg["author"] = args[0]
    elif kind == "SHELL":
        inner["Shell"] = list(args)
        return f"SHELL [{' '.join(args)}]"
    elif kind == "VOLUME":
        inner["Volumes"] = {**(inner.get("Volumes") or {}), **{v: {} for v in args}}
        return f"VOLUME [{' '.join(args)}]"
    elif kind == "EXPOSE":
        inner["ExposedPorts"] = {**(inner.get("ExposedPorts") or {}), **{p: {} for p in args}}
        return "EXPOSE map[" + " ".join(f"{p}:{{}}" for p in sorted(set(args))) + "]"
    elif kind == "HEALTHCHECK":
        inner["Healthcheck"], text = _health(instr)
        return "HEALTHCHECK " + text
    else:
        raise ValueError(f"{kind} is not a metadata instruction")
    return f"{kind} {args[0]}"


def apply_instruction(config: Config, instr: Instruction, *, created: str,
                      cmd_set: bool = False) -> tuple[Config, dict[str, Any]]:
    """Return the new config and the history entry ``instr`` adds.

    ``cmd_set`` says whether CMD was set earlier in the current stage: ENTRYPOINT clears an
    inherited Cmd but keeps one from this stage (BuildKit's rule). The history entry is not
    appended to the returned config; the builder appends it along with the layer it makes.
    """
    cfg = copy.deepcopy(config)
    inner: Config = cfg.setdefault("config", {})
    if instr.kind == "RUN":
        argv = instr.command(_shell(inner))
        text = "RUN " + run_command_string(argv, instr.run_args) + " # buildkit"
        return cfg, _history(created, text, layer=True)
    if instr.kind in ("COPY", "ADD"):
        return cfg, _history(created, f"{instr.kind} {' '.join(instr.args)} # buildkit",
                             layer=True)
    if instr.kind == "WORKDIR":
        wd = normalize_workdir(inner.get("WorkingDir") or "/", instr.args[0])
        inner["WorkingDir"] = wd
        return cfg, _history(created, f"WORKDIR {wd}", layer=wd != "/")
    text = _apply_meta(cfg, instr, cmd_set)
    return cfg, _history(created, text, layer=False)


def apply_stage(config: Config, instructions: Iterable[Instruction], *,
                created: str) -> tuple[Config, list[dict[str, Any]]]:
    """Apply a stage's instructions in order (tracking CMD for ENTRYPOINT), appending
    each history entry to ``config["history"]``; also returns the new entries."""
    cfg, entries, cmd_set = copy.deepcopy(config), [], False
    for instr in instructions:
        cfg, entry = apply_instruction(cfg, instr, created=created, cmd_set=cmd_set)
        cmd_set = cmd_set or instr.kind == "CMD"
        cfg.setdefault("history", []).append(entry)
        entries.append(entry)
    return cfg, entries
