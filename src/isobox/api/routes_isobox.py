"""``/isobox/v1/vms…``: system VMs (what ``isobox vm`` does), on the functions the CLI calls —
:mod:`isobox.engine.system_vm`, :mod:`isobox.engine.vm_save`, the engine's stop/kill/rm."""

from __future__ import annotations

import subprocess
import tempfile
from typing import TYPE_CHECKING, Any

from isobox.api.errors import ApiError
from isobox.api.native_json import Body
from isobox.api.routing import route

if TYPE_CHECKING:
    from isobox.api.http import Exchange
    from isobox.api.server import ApiState

PREFIX = "/isobox/v1"
MAX_EXEC_OUTPUT = 16 << 20  # per stream; beyond it the answer says "Truncated"


def _timeout(ex: Exchange) -> int | None:
    return ex.int_arg("t")


@route("GET", PREFIX + "/vms")
def vm_list(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.system_vm import list_system_vms, vm_summary

    with state.engine() as engine:
        ex.send_json(200, [vm_summary(r) for r in list_system_vms(engine)])


@route("POST", PREFIX + "/vms")
def vm_create(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.parse import parse_ports
    from isobox.engine.system_vm import SystemVMOptions, create_system_vm
    from isobox.errors import ConfigError

    body = Body(ex.json_body())
    try:
        ports = parse_ports(body.strs("Ports"))
    except ConfigError as e:
        raise ApiError(400, f"Ports: {e.message}") from None
    opts = SystemVMOptions(name=body.text("Name"), image=body.text("Image"),
                           disk=body.text("Disk"), cpus=body.count("Cpus", 1),
                           memory=body.count("Memory"), disk_size=body.count("DiskSize"),
                           network=body.text("Network", "bridge"), ports=ports)
    with state.engine() as engine:
        row = create_system_vm(engine, opts)
    ex.send_json(201, {"Id": row.id, "Name": row.name})


@route("GET", PREFIX + "/vms/{name}")
def vm_inspect(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.system_vm import inspect_system_vm

    with state.engine() as engine:
        ex.send_json(200, inspect_system_vm(engine, params["name"]))


@route("POST", PREFIX + "/vms/{name}/start")
def vm_start(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.system_vm import start_system_vm

    with state.engine() as engine:
        start_system_vm(engine, params["name"])
    ex.send(204)


@route("POST", PREFIX + "/vms/{name}/stop")
def vm_stop(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.stop import stop_container
    from isobox.engine.system_vm import get_system_vm

    timeout = _timeout(ex)
    with state.engine() as engine:
        stop_container(engine, get_system_vm(engine, params["name"]).id, timeout)
    ex.send(204)


@route("POST", PREFIX + "/vms/{name}/restart")
def vm_restart(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.stop import stop_container
    from isobox.engine.system_vm import get_system_vm, start_system_vm

    timeout = _timeout(ex)
    with state.engine() as engine:
        row = get_system_vm(engine, params["name"])
        if row.status in ("running", "paused"):
            stop_container(engine, row.id, timeout)
        start_system_vm(engine, row.id)
    ex.send(204)


@route("POST", PREFIX + "/vms/{name}/kill")
def vm_kill(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.stop import kill_container
    from isobox.engine.system_vm import get_system_vm

    with state.engine() as engine:
        kill_container(engine, get_system_vm(engine, params["name"]).id)
    ex.send(204)


@route("DELETE", PREFIX + "/vms/{name}")
def vm_remove(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.remove import remove_container
    from isobox.engine.system_vm import get_system_vm

    with state.engine() as engine:
        remove_container(engine, get_system_vm(engine, params["name"]).id,
                         force=ex.flag("force"))
    ex.send(204)


@route("POST", PREFIX + "/vms/{name}/resize")
def vm_resize(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.system_vm import resize_system_vm

    body = Body(ex.json_body())
    with state.engine() as engine:
        result = resize_system_vm(engine, params["name"], memory=body.count("Memory"),
                                  cpus=body.count("Cpus"))
    ex.send_json(200, {"Lines": list(result.lines)})


@route("POST", PREFIX + "/vms/{name}/exec")
def vm_exec(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """Run a command to its end through the guest agent: JSON in, output and exit code out."""
    from isobox.engine.execute import ExecRequest, spawn_exec
    from isobox.engine.system_vm import get_system_vm

    body = Body(ex.json_body())
    cmd = body.strs("Cmd")
    if not cmd:
        raise ApiError(400, "Cmd: no command given")
    stdin = body.text("Stdin").encode()
    req = ExecRequest(args=cmd, interactive=bool(stdin), env=body.strs("Env"),
                      user=body.text("User"), workdir=body.text("WorkingDir"))
    with state.engine() as engine, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as err:
        row = get_system_vm(engine, params["name"])
        proc = spawn_exec(engine, row.id, req, stdin=subprocess.PIPE if stdin else
                          subprocess.DEVNULL, stdout=out, stderr=err, new_session=True)
        try:
            if stdin and proc.proc.stdin is not None:
                try:
                    proc.proc.stdin.write(stdin)
                except BrokenPipeError:
                    pass
                proc.proc.stdin.close()
            code = proc.finish()
        except BaseException:
            proc.proc.kill()
            proc.finish()
            raise
        result: dict[str, Any] = {"ExitCode": code, "Truncated": False}
        for key, f in (("Stdout", out), ("Stderr", err)):
            size = f.seek(0, 2)
            f.seek(0)
            result[key] = f.read(MAX_EXEC_OUTPUT).decode(errors="replace")
            result["Truncated"] |= size > MAX_EXEC_OUTPUT
    ex.send_json(200, result)


@route("POST", PREFIX + "/vms/{name}/save")
def vm_save(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """Suspend to ``File`` — a path on the server's host, as ``isobox vm save`` takes it."""
    from isobox.engine.vm_save import save_vm

    body = Body(ex.json_body())
    path = body.text("File")
    if not path.startswith("/"):
        raise ApiError(400, "File: an absolute path on the server's host is needed")
    with state.engine() as engine:
        result = save_vm(engine, params["name"], path)
    ex.send_json(200, {"File": result.path, "Size": result.size, "Seconds": result.seconds})


@route("POST", PREFIX + "/vms/restore")
def vm_restore(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.engine.vm_save import restore_vm

    body = Body(ex.json_body())
    path = body.text("File")
    if not path.startswith("/"):
        raise ApiError(400, "File: an absolute path on the server's host is needed")
    with state.engine() as engine:
        row = restore_vm(engine, path)
    ex.send_json(200, {"Id": row.id, "Name": row.name})
