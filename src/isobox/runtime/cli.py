"""``isobox-runtime``: the runc-compatible command line.

Flags follow runc (urfave/cli): ``--flag value``, ``--flag=value``, ``-flag value``, short
aliases, global flags before the command. A small table-driven parser replaces argparse,
whose import (with :mod:`re`) would cost more than the rest of a ``start`` call.
"""

from __future__ import annotations

import gc
import sys

from isobox import __version__
from isobox.errors import ConfigError, IsoboxError
from isobox.runtime.log import LOG

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# flag kinds: "str", "int", "bool", "list" (repeatable), "optbool" (bool that may take a value)
GLOBAL_FLAGS: dict[str, str] = {
    "root": "str", "log": "str", "log-format": "str", "debug": "bool",
    "systemd-cgroup": "bool", "rootless": "optbool", "criu": "str", "help": "bool",
    "h": "=help", "version": "bool", "v": "=version",
}
_CREATE = {"bundle": "str", "b": "=bundle", "console-socket": "str", "pid-file": "str",
           "no-pivot": "bool", "no-new-keyring": "bool", "preserve-fds": "int"}
COMMANDS: dict[str, tuple[dict[str, str], str, str]] = {
    # name: (flags, positional usage, summary)
    "create": (_CREATE, "ID", "create a container (its process waits for start)"),
    "start": ({}, "ID", "start the process of a created container"),
    "state": ({}, "ID", "print the state of a container as JSON"),
    "kill": ({"all": "bool", "a": "=all"}, "ID [SIGNAL]", "send a signal (default TERM)"),
    "delete": ({"force": "bool", "f": "=force"}, "ID", "delete a container"),
    "run": ({**_CREATE, "detach": "bool", "d": "=detach", "keep": "bool",
             "no-subreaper": "bool"}, "ID", "create and start a container"),
    "exec": ({"console-socket": "str", "cwd": "str", "env": "list", "e": "=env", "tty": "bool",
              "t": "=tty", "user": "str", "u": "=user", "additional-gids": "list",
              "g": "=additional-gids", "process": "str", "p": "=process", "detach": "bool",
              "d": "=detach", "pid-file": "str", "process-label": "str", "apparmor": "str",
              "no-new-privs": "bool", "cap": "list", "c": "=cap", "preserve-fds": "int",
              "cgroup": "list", "ignore-paused": "bool"},
             "ID [COMMAND [ARG...]]", "run a process in a container"),
    "list": ({"format": "str", "f": "=format", "quiet": "bool", "q": "=quiet"}, "",
             "list containers"),
    "ps": ({"format": "str", "f": "=format"}, "ID [PS-ARGS...]", "processes of a container"),
    "pause": ({}, "ID", "freeze every process of a container"),
    "resume": ({}, "ID", "thaw a paused container"),
    "update": ({"resources": "str", "r": "=resources", "memory": "str",
                "memory-reservation": "str", "memory-swap": "str", "kernel-memory": "str",
                "kernel-memory-tcp": "str", "cpu-quota": "str", "cpu-period": "str",
                "cpu-rt-period": "str", "cpu-rt-runtime": "str", "cpu-share": "str",
                "cpu-shares": "str", "cpuset-cpus": "str", "cpuset-mems": "str",
                "pids-limit": "str", "blkio-weight": "str", "l3-cache-schema": "str",
                "mem-bw-schema": "str"}, "ID", "change resource limits"),
    "events": ({"stats": "bool", "interval": "str"}, "ID", "stats and oom events"),
    "features": ({}, "", "print the runtime's features as JSON"),
    "spec": ({"bundle": "str", "b": "=bundle", "rootless": "bool"}, "",
             "write a default config.json"),
}


class UsageError(IsoboxError):
    pass


def parse_flags(args: list[str], table: dict[str, str], stop_at_positional: bool
                ) -> tuple[dict[str, Any], list[str]]:
    flags: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional.extend(args[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            if stop_at_positional:
                positional.extend(args[i:])
                break
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        kind = table.get(name)
        if kind is not None and kind.startswith("="):
            name = kind[1:]
            kind = table[name]
        if kind is None:
            raise UsageError(f"flag provided but not defined: -{name}")
        if kind in ("bool", "optbool"):
            if eq:
                flags[name] = value.lower() not in ("false", "0", "")
            elif kind == "optbool" and i < len(args) and args[i] in ("true", "false", "auto"):
                flags[name] = args[i] != "false"
                i += 1
            else:
                flags[name] = True
            continue
        if not eq:
            if i >= len(args):
                raise UsageError(f"flag needs an argument: -{name}")
            value = args[i]
            i += 1
        if kind == "int":
            try:
                flags[name] = int(value)
            except ValueError:
                raise UsageError(f"invalid value {value!r} for flag -{name}") from None
        elif kind == "list":
            flags.setdefault(name, []).append(value)
        else:
            flags[name] = value
    return flags, positional


def usage() -> str:
    lines = ["usage: isobox-runtime [global flags] COMMAND [flags] ARGS", "",
             "An OCI runtime (runc-compatible), part of isobox.", "", "Commands:"]
    lines += [f"  {n:<9} {u:<26} {s}" for n, (_, u, s) in COMMANDS.items()]
    lines += ["", "Global flags: --root DIR (default /run/isobox-runtime), --log FILE, "
              "--log-format text|json, --debug"]
    return "\n".join(lines) + "\n"


def need_id(cmd: str, pos: list[str], extra_ok: bool = False) -> str:
    if not pos:
        raise UsageError(f'"{cmd}" requires a container ID')
    if len(pos) > 1 and not extra_ok:
        raise UsageError(f'"{cmd}" takes one container ID, got {len(pos)} arguments')
    return pos[0]


def kill_arguments(pos: list[str]) -> tuple[str, int]:
    """``kill ID [SIGNAL]``: the ID and the signal's number (TERM when none is given)."""
    from isobox.runtime.signals import parse_signal

    cid = need_id("kill", pos, extra_ok=True)
    if len(pos) > 2:
        raise UsageError('"kill" takes a container ID and an optional signal')
    try:
        return cid, parse_signal(pos[1]) if len(pos) > 1 else 15
    except ValueError as e:
        raise ConfigError("signal", str(e)) from None


def version_text() -> str:
    try:
        from isobox.linux.seccomp import libseccomp_version

        seccomp = libseccomp_version()
    except Exception:  # informational only
        seccomp = "unavailable"
    py = ".".join(str(x) for x in sys.version_info[:3])
    return (f"isobox-runtime version {__version__}\nspec: 1.2.0\npython: {py}\n"
            f"libseccomp: {seccomp}\n")


# Commands that may run for as long as their container: the cyclic GC stays on for them.
LONG_RUNNING = frozenset({"run", "exec", "events"})


def main(argv: list[str] | None = None) -> int:
    """Run one command. The cyclic garbage collector is off while it runs: a call lives for a
    few ms and frees everything at exit, so collections (triggered by the ~100k objects its
    imports allocate) would only cost time, and in the forked init stages they would also
    write to every tracked object's header, i.e. copy the parent's heap page by page
    (2-5 ms of ``create`` here). :data:`LONG_RUNNING` commands turn it back on."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    finally:
        if gc_was_enabled:
            gc.enable()


def _main(args: list[str]) -> int:
    def open_store(root: str | None) -> Any:
        from isobox.runtime.state import DEFAULT_ROOT, StateStore

        return StateStore(_absolute(root or DEFAULT_ROOT))

    return run_cli(args, "isobox-runtime", COMMANDS, version=version_text, usage=usage,
                   open_store=open_store, dispatch=dispatch,
                   stop_at_positional=("exec", "ps"), long_running=LONG_RUNNING)


def run_cli(args: list[str], prog: str, commands: dict[str, tuple[dict[str, str], str, str]],
            *, version: Callable[[], str], usage: Callable[[], str],
            open_store: Callable[[str | None], Any],
            dispatch: Callable[[str, dict[str, Any], list[str], Any], int],
            stop_at_positional: tuple[str, ...] = ("exec",),
            long_running: frozenset[str] = frozenset()) -> int:
    """The runc command line both runtimes share: global flags before the command, --version
    and help, the command's own flags, then ``dispatch``; an error is one log line and exit
    status 1. ``long_running`` commands turn the cyclic GC back on (see :func:`main`)."""
    try:
        gflags, rest = parse_flags(args, GLOBAL_FLAGS, stop_at_positional=True)
    except UsageError as e:
        LOG.error(str(e))
        return 1
    LOG.path = gflags.get("log")
    LOG.fmt = gflags.get("log-format", "text")
    LOG.debug_enabled = bool(gflags.get("debug"))
    if gflags.get("version"):
        sys.stdout.write(version())
        return 0
    if gflags.get("help") or not rest or rest[0] == "help":
        sys.stdout.write(usage())
        return 0 if gflags.get("help") or rest else 1
    cmd, cmd_args = rest[0], rest[1:]
    if cmd not in commands:
        LOG.error(f"unknown command {cmd!r}; see {prog} --help")
        return 1
    if cmd in long_running:
        gc.enable()
    if LOG.fmt not in ("text", "json"):
        LOG.fmt = "text"
        LOG.error(f"--log-format: invalid value {gflags['log-format']!r} (text or json)")
        return 1
    try:
        flags, pos = parse_flags(cmd_args, {**commands[cmd][0], "help": "bool", "h": "=help"},
                                 stop_at_positional=cmd in stop_at_positional)
        if flags.get("help"):
            sys.stdout.write(f"usage: {prog} {cmd} [flags] {commands[cmd][1]}\n")
            return 0
        return dispatch(cmd, flags, pos, open_store(gflags.get("root")))
    except IsoboxError as e:
        LOG.error(str(e))
        return int(getattr(e, "exit_status", 1))  # exec: 126/127 for a command that cannot run
    except KeyboardInterrupt:
        return 130
    except OSError as e:
        LOG.error(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        return 1


def _absolute(path: str) -> str:
    """``os.path.abspath(path)``; a path that is already absolute and normal (the usual
    ``--root``) is returned as it is, without importing anything."""
    if path == "/" or (path.startswith("/") and all(
            part not in ("", ".", "..") for part in path[1:].split("/"))):
        return path
    from isobox.linux.pathnames import abspath

    return abspath(path)


def dispatch(cmd: str, flags: dict[str, Any], pos: list[str], store: Any) -> int:
    if cmd == "start":
        from isobox.runtime.container_start import start

        start(store, need_id(cmd, pos))
        return 0
    if cmd in ("create", "run"):
        from isobox.runtime.container_create import CreateOptions

        opts = CreateOptions(flags.get("bundle"), flags.get("pid-file"),
                             flags.get("console-socket"), bool(flags.get("no-pivot")),
                             bool(flags.get("no-new-keyring")), flags.get("preserve-fds", 0))
        cid = need_id(cmd, pos)
        if cmd == "create":
            from isobox.runtime.container_create import create

            create(store, cid, opts)
            return 0
        from isobox.runtime.container_run import run

        return run(store, cid, opts, detach=bool(flags.get("detach")),
                   keep=bool(flags.get("keep")))
    if cmd == "delete":
        from isobox.runtime.container_delete import delete

        cid = need_id(cmd, pos)
        try:
            delete(store, cid, force=bool(flags.get("force")))
        except IsoboxError as e:
            from isobox.errors import NotFoundError

            if isinstance(e, NotFoundError) and flags.get("force"):
                return 0
            raise
        return 0
    if cmd == "state":
        from isobox.runtime.container_info import print_out, state

        print_out(state(store, need_id(cmd, pos)) + "\n")
        return 0
    if cmd == "kill":
        from isobox.runtime.container_kill import kill

        cid, sig = kill_arguments(pos)
        kill(store, cid, sig, bool(flags.get("all")))
        return 0
    if cmd == "list":
        from isobox.runtime.container_info import list_containers, print_out

        print_out(list_containers(store, flags.get("format", "table"), bool(flags.get("quiet"))))
        return 0
    if cmd == "ps":
        from isobox.runtime.container_info import print_out, ps

        cid = need_id(cmd, pos, extra_ok=True)
        print_out(ps(store, cid, flags.get("format", "table"), pos[1:] or None))
        return 0
    if cmd in ("pause", "resume"):
        from isobox.runtime import container_pause

        getattr(container_pause, cmd)(store, need_id(cmd, pos))
        return 0
    if cmd == "update":
        return _update(store, flags, pos)
    if cmd == "events":
        from isobox.runtime.container_events import events

        interval = _duration(flags.get("interval", "5s"))
        events(store, need_id(cmd, pos), bool(flags.get("stats")), interval)
        return 0
    if cmd == "exec":
        return _exec(store, flags, pos)
    if cmd == "features":
        from isobox.runtime.features import features_json

        sys.stdout.write(features_json() + "\n")
        return 0
    if cmd == "spec":
        from isobox.runtime.spec_cmd import write_spec

        write_spec(flags.get("bundle") or ".", bool(flags.get("rootless")))
        return 0
    raise UsageError(f"unknown command {cmd!r}")  # pragma: no cover


def _duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            try:
                value = float(text[: -len(suffix)]) * units[suffix]
            except ValueError:
                break
            if value > 0:
                return value
            break
    raise ConfigError("--interval", f"invalid duration {text!r} (e.g. 5s, 500ms)")


def _update(store: Any, flags: dict[str, Any], pos: list[str]) -> int:
    from isobox.runtime.container_update import (
        read_resources_file,
        resources_from_flags,
        update,
    )

    cid = need_id("update", pos)
    for unsupported in ("l3-cache-schema", "mem-bw-schema"):
        if unsupported in flags:
            raise ConfigError(f"--{unsupported}", "Intel RDT is not supported")
    resources: dict[str, Any] = {}
    if "resources" in flags:
        resources = read_resources_file(flags.pop("resources"))
    extra = resources_from_flags({k: v for k, v in flags.items() if k != "help"})
    for section, values in extra.items():
        resources.setdefault(section, {}).update(values)
    update(store, cid, resources)
    return 0


def _exec(store: Any, flags: dict[str, Any], pos: list[str]) -> int:
    from isobox.runtime.container_exec import ExecOptions, exec_process

    cid = need_id("exec", pos, extra_ok=True)
    st = store.load(cid)
    if "process" in flags:
        from isobox import fastjson

        path = flags["process"]
        try:
            with open(path, "rb") as f:
                process = fastjson.loads(f.read())
        except (OSError, ValueError) as e:
            raise ConfigError(path, f"cannot read the process: {e}") from None
        if not isinstance(process, dict):
            raise ConfigError(path, "expected a JSON object (a runtime-spec process)")
    else:
        if len(pos) < 2:
            raise UsageError("exec needs a command (or -p process.json)")
        base = st.config["process"]
        process = {k: v for k, v in base.items() if k not in ("terminal", "consoleSize")}
        process["args"] = pos[1:]
        process["terminal"] = bool(flags.get("tty"))
    if "cwd" in flags:
        process["cwd"] = flags["cwd"]
    if flags.get("env"):
        env = [e for e in process.get("env", []) if e.split("=", 1)[0] not in
               {x.split("=", 1)[0] for x in flags["env"]}]
        process["env"] = env + flags["env"]
    if "user" in flags:
        uid, _, gid = flags["user"].partition(":")
        try:
            user: dict[str, Any] = {"uid": int(uid), "gid": int(gid or 0)}
        except ValueError:
            raise ConfigError("--user", f"invalid user {flags['user']!r} (uid[:gid])") from None
        if flags.get("additional-gids"):
            user["additionalGids"] = [int(g) for g in flags["additional-gids"]]
        process["user"] = user
    if flags.get("cap"):
        caps = process.setdefault("capabilities", {})
        for key in ("bounding", "effective", "permitted", "inheritable", "ambient"):
            caps[key] = list(dict.fromkeys([*caps.get(key, []), *flags["cap"]]))
    if flags.get("no-new-privs"):
        process["noNewPrivileges"] = True
    opts = ExecOptions(bool(flags.get("detach")), flags.get("pid-file"),
                       flags.get("console-socket"), flags.get("preserve-fds", 0),
                       bool(flags.get("ignore-paused")))
    return exec_process(store, cid, process, opts)
