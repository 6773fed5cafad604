"""The ``isobox-vm-runtime`` command line: runc's verbs and flags (the subset conmon, the
isobox engine and podman use), parsed by isobox-runtime's table-driven parser."""

from __future__ import annotations

import os
import sys

from isobox import __version__
from isobox.errors import IsoboxError
from isobox.runtime.cli import UsageError, kill_arguments, need_id, run_cli
from isobox.runtime.log import LOG

TYPE_CHECKING = False  # not `typing` at run time: start-up cost (see fastjson)
if TYPE_CHECKING:
    from typing import Any

PROG = "isobox-vm-runtime"
_CREATE = {"bundle": "str", "b": "=bundle", "console-socket": "str", "pid-file": "str",
           "no-pivot": "bool", "no-new-keyring": "bool", "preserve-fds": "int"}
COMMANDS: dict[str, tuple[dict[str, str], str, str]] = {
    "create": (_CREATE, "ID", "start the VM; its workload waits for start"),
    "start": ({}, "ID", "run the workload of a created VM"),
    "state": ({}, "ID", "print the state of a VM as JSON"),
    "kill": ({"all": "bool", "a": "=all"}, "ID [SIGNAL]", "signal the workload (KILL: the VM)"),
    "delete": ({"force": "bool", "f": "=force"}, "ID", "delete a VM"),
    "exec": ({"console-socket": "str", "cwd": "str", "env": "list", "e": "=env", "tty": "bool",
              "t": "=tty", "user": "str", "u": "=user", "process": "str", "p": "=process",
              "detach": "bool", "d": "=detach", "pid-file": "str", "cap": "list",
              "c": "=cap", "no-new-privs": "bool", "preserve-fds": "int"},
             "ID [COMMAND [ARG...]]", "run a process in the VM through its agent"),
    "list": ({"format": "str", "f": "=format", "quiet": "bool", "q": "=quiet"}, "",
             "list VMs"),
    "pause": ({}, "ID", "pause the VM's vCPUs"),
    "resume": ({}, "ID", "resume a paused VM"),
    "features": ({}, "", "print the runtime's features as JSON"),
    "sync-files": ({}, "ID", "copy the bundle's /etc/hosts, resolv.conf, hostname to the guest"),
}


def usage() -> str:
    lines = [f"usage: {PROG} [global flags] COMMAND [flags] ARGS", "",
             "An OCI runtime (runc-compatible) that runs each bundle as a QEMU micro-VM.", "",
             "Commands:"]
    lines += [f"  {n:<9} {u:<26} {s}" for n, (_, u, s) in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def version_text() -> str:
    return f"{PROG} version {__version__}\nspec: 1.2.0\n"


def main(argv: list[str] | None = None) -> int:
    LOG.prog = PROG

    def open_store(root: str | None) -> Any:
        from isobox.vm.runtime.state import DEFAULT_ROOT, VMStore

        return VMStore(os.path.abspath(root or DEFAULT_ROOT))

    return run_cli(sys.argv[1:] if argv is None else argv, PROG, COMMANDS,
                   version=version_text, usage=usage, open_store=open_store,
                   dispatch=dispatch)


def dispatch(cmd: str, flags: dict[str, Any], pos: list[str], store: Any) -> int:
    from isobox.vm.runtime import control

    if cmd == "create":
        from isobox.vm.runtime.create import create

        create(store, need_id(cmd, pos), flags.get("bundle"), flags.get("pid-file"),
               flags.get("console-socket"))
        return 0
    if cmd == "start":
        control.start(store, need_id(cmd, pos))
        return 0
    if cmd == "state":
        import json

        sys.stdout.write(json.dumps(control.state(store, need_id(cmd, pos)), indent=2) + "\n")
        return 0
    if cmd == "kill":
        vid, sig = kill_arguments(pos)
        control.kill(store, vid, sig)
        return 0
    if cmd == "delete":
        from isobox.errors import NotFoundError

        try:
            control.delete(store, need_id(cmd, pos), bool(flags.get("force")))
        except NotFoundError:
            if not flags.get("force"):
                raise
        return 0
    if cmd in ("pause", "resume"):
        control.pause(store, need_id(cmd, pos), resume=cmd == "resume")
        return 0
    if cmd == "exec":
        from isobox.vm.runtime.exec import exec_command

        vid = need_id(cmd, pos, extra_ok=True)
        return exec_command(store, vid, flags, pos[1:])
    if cmd == "list":
        return _list(store, flags)
    if cmd == "sync-files":
        control.sync_files(store, need_id(cmd, pos))
        return 0
    if cmd == "features":
        import json

        sys.stdout.write(json.dumps({"ociVersionMin": "1.0.0", "ociVersionMax": "1.2.0",
                                     "annotations": {"org.isobox.vm.isolation": "vm"}},
                                    indent=2) + "\n")
        return 0
    raise UsageError(f"unknown command {cmd!r}")


def _list(store: Any, flags: dict[str, Any]) -> int:
    from isobox.vm.runtime import control

    states = []
    for vid in store.ids():
        try:
            states.append(control.state(store, vid))
        except IsoboxError:
            continue
    if flags.get("quiet"):
        sys.stdout.write("".join(s["id"] + "\n" for s in states))
    elif flags.get("format") == "json":
        import json

        sys.stdout.write(json.dumps(states) + "\n")
    else:
        sys.stdout.write("ID  PID  STATUS  BUNDLE\n")
        sys.stdout.write("".join(f"{s['id']}  {s['pid']}  {s['status']}  {s['bundle']}\n"
                                 for s in states))
    return 0
