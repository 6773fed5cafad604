"""``exec``: a new process in a running container, through the runtime's ``exec``.

The process inherits the container's confinement (capabilities, seccomp, no_new_privs,
AppArmor-free as it is): only argv, env, cwd, user and the terminal come from the request.
``--privileged`` on an exec is refused unless the container itself is privileged, so an exec
can never hold more than its container (catalogue case 47)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from isobox.errors import ConfigError, ConflictError, SystemSetupError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine


@dataclass
class ExecRequest:
    args: list[str]
    detach: bool = False
    interactive: bool = False
    tty: bool = False
    env: list[str] = field(default_factory=list)
    user: str = ""
    workdir: str = ""
    privileged: bool = False


def exec_process(engine: Engine, cid: str, req: ExecRequest) -> dict[str, Any]:
    """The runtime-spec process for ``req``: the container's own, with the request's changes."""
    from isobox.engine.parse import resolve_env
    from isobox.engine.spec import resolve_user

    with open(os.path.join(engine.layout.container_dir(cid), "config.json")) as f:
        spec = json.load(f)
    process = {k: v for k, v in spec["process"].items() if k not in ("consoleSize",)}
    process["args"] = list(req.args)
    process["terminal"] = req.tty
    env = list(process.get("env") or [])
    for item in resolve_env(req.env):
        key = item.split("=", 1)[0]
        env = [e for e in env if e.split("=", 1)[0] != key] + [item]
    process["env"] = env
    if req.workdir:
        if not req.workdir.startswith("/"):
            raise ConfigError("--workdir", f"the working directory '{req.workdir}' is "
                              "invalid, it needs to be an absolute path")
        process["cwd"] = req.workdir
    if req.user:
        uid, gid, extra = resolve_user(engine.snapshots.get(cid).rootfs, req.user)
        process["user"] = {"uid": uid, "gid": gid, **({"additionalGids": extra} if extra
                                                      else {})}
    return process


def exec_in_container(engine: Engine, ref: str, req: ExecRequest) -> int:
    row = engine.get(ref)
    if row.status == "paused":
        raise ConflictError(f"container {row.id} is paused, unpause the container before exec")
    if row.status != "running":
        raise ConflictError(f"container {row.id} is not running")
    if req.privileged and not row.options.get("privileged"):
        raise ConfigError("--privileged", "an exec cannot have more privileges than its "
                          "container (the container is not privileged)")
    process = exec_process(engine, row.id, req)
    rt = engine.runtime(row)
    persist = engine.layout.persist_dir(row.id)
    os.makedirs(persist, mode=0o700, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="exec-", suffix=".json", dir=persist)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(process, f)
        args = ["exec", "--process", path]
        if req.detach:
            args.append("--detach")
        args.append(row.id)
        stdin = None if req.interactive or req.tty else subprocess.DEVNULL
        if req.detach:
            stdin = subprocess.DEVNULL
            out: Any = subprocess.DEVNULL
        else:
            out = None
        try:
            proc = subprocess.Popen(rt.argv(*args), stdin=stdin, stdout=out, stderr=out)
        except OSError as e:
            raise SystemSetupError(f"cannot run {rt.path}: {e.strerror}") from None
        from isobox.engine.sigproxy import wait_forwarding  # vmops: SIGTERM reaches the exec

        code = wait_forwarding(proc)
        engine.event(row, "exec_start", execID=os.path.basename(path))
        return code if code >= 0 else 128 - code
    finally:
        os.unlink(path)
