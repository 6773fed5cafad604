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

from isobox.errors import ConfigError, ConflictError, IsoboxError, SystemSetupError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.engine.state import ContainerRow


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


def exec_process(engine: Engine, row: ContainerRow, req: ExecRequest) -> dict[str, Any]:
    """The runtime-spec process for ``req``: the container's own, with the request's changes."""
    from isobox.engine.parse import resolve_env
    from isobox.engine.spec import resolve_user

    cid = row.id
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
    if req.user and row.options.get("isolation") == "vm":
        # the guest's own /etc/passwd (users added in the VM count), read by its agent;
        # "username" is runtime-spec's field for a name the runtime resolves
        process["user"] = {"uid": 0, "gid": 0, "username": req.user}
    elif req.user:
        uid, gid, extra = resolve_user(engine.snapshots.get(cid).rootfs, req.user)
        process["user"] = {"uid": uid, "gid": gid, **({"additionalGids": extra} if extra
                                                      else {})}
    return process


def check_exec(engine: Engine, ref: str, req: ExecRequest) -> ContainerRow:
    """The container's record, if ``req`` may run in it now (409 / 400 otherwise)."""
    row = engine.get(ref)
    if row.status == "paused":
        raise ConflictError(f"container {row.id} is paused, unpause the container before exec")
    if row.status != "running":
        raise ConflictError(f"container {row.id} is not running")
    if req.privileged and not row.options.get("privileged"):
        raise ConfigError("--privileged", "an exec cannot have more privileges than its "
                          "container (the container is not privileged)")
    return row


class ExecStartError(IsoboxError):
    """A detached exec whose process did not start: the runtime's reason and exit status
    (isobox-runtime's 127 or 126 for a command that cannot run, as a shell's)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status if status > 0 else 1


@dataclass
class ExecProcess:
    """A running ``<runtime> exec``; :meth:`finish` waits for it and removes its files."""

    proc: subprocess.Popen[bytes]
    row: ContainerRow
    files: list[str]
    pid_file: str
    log_file: str = ""  # the runtime's --log (json lines) of a detached exec

    def error(self) -> str:
        """The runtime's last error in its log ("" without one)."""
        message = ""
        try:
            with open(self.log_file) as f:
                for line in f:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(entry, dict) and entry.get("level") == "error":
                        message = str(entry.get("msg") or "")
        except OSError:
            pass
        return message

    def pid(self) -> int:
        """The exec'd process's pid once the runtime wrote it (0 before, or without one)."""
        from isobox.engine.monitor import read_pid

        return read_pid(self.pid_file) if self.pid_file else 0

    def finish(self, code: int | None = None) -> int:
        """The exit status as a shell reports it (128+N for signal N)."""
        try:
            if code is None:
                code = self.proc.wait()
        finally:
            for path in self.files:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
        return code if code >= 0 else 128 - code


def spawn_exec(engine: Engine, ref: str, req: ExecRequest, *, stdin: Any, stdout: Any,
               stderr: Any, console_socket: str = "", want_pid: bool = False,
               new_session: bool = False) -> ExecProcess:
    """Start ``req`` in the container through the runtime with the given stdio (anything
    :class:`subprocess.Popen` takes). A ``req.tty`` exec needs ``console_socket``: the
    runtime sends the pty's master there (runc's protocol)."""
    row = check_exec(engine, ref, req)
    process = exec_process(engine, row, req)
    rt = engine.runtime(row)
    persist = engine.layout.persist_dir(row.id)
    os.makedirs(persist, mode=0o700, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="exec-", suffix=".json", dir=persist)
    files = [path]
    pid_file = path[:-len(".json")] + ".pid" if want_pid else ""
    if pid_file:
        files.append(pid_file)
    log = ["--log", path[:-len(".json")] + ".log", "--log-format", "json"] if req.detach else []
    files += log[1:2]
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(process))
        args = ["exec", "--process", path]
        if req.detach:
            args.append("--detach")
        if console_socket:
            args += ["--console-socket", console_socket]
        if pid_file:
            args += ["--pid-file", pid_file]
        args.append(row.id)
        try:
            argv = rt.argv(*args)
            argv[1:1] = log  # a global flag: with -d its stderr is nobody's, its log is ours
            proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                                    start_new_session=new_session)
        except OSError as e:
            raise SystemSetupError(f"cannot run {rt.path}: {e.strerror}") from None
    except BaseException:
        for p in files:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
        raise
    engine.event(row, "exec_start", execID=os.path.basename(path))
    return ExecProcess(proc, row, files, pid_file, log[1] if log else "")


def exec_in_container(engine: Engine, ref: str, req: ExecRequest) -> int:
    """The CLI's ``exec``: the process gets this process's stdio, or with ``-t`` a pty of the
    runtime's that this process relays to its own terminal."""
    if req.tty and not req.detach:
        return _exec_with_terminal(engine, ref, req)
    stdin = None if req.interactive or req.tty else subprocess.DEVNULL
    out: Any = None
    if req.detach:
        stdin = out = subprocess.DEVNULL
    ex = spawn_exec(engine, ref, req, stdin=stdin, stdout=out, stderr=out)
    from isobox.engine.sigproxy import wait_forwarding  # vmops: SIGTERM reaches the exec

    try:
        code = wait_forwarding(ex.proc)
        error = ex.error() if req.detach and code != 0 else ""
    finally:
        ex.finish(ex.proc.returncode)
    if error:  # -d: its stderr went nowhere, so the reason is said here
        raise ExecStartError(error, code)
    return code if code >= 0 else 128 - code


def _exec_with_terminal(engine: Engine, ref: str, req: ExecRequest) -> int:
    import signal

    from isobox.engine.console import ConsoleSocket, raw_terminal, relay, set_window
    from isobox.engine.sigproxy import FORWARDED

    with ConsoleSocket() as console:
        ex = spawn_exec(engine, ref, req, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, console_socket=console.path)
        try:
            master = console.receive(ex)
        except BaseException:  # ^C or no terminal: the runtime must not go on without us
            if ex.proc.poll() is None:
                ex.proc.kill()
            ex.finish()
            raise

    def follow_window(_signum: int = 0, _frame: object = None) -> None:
        try:
            size = os.get_terminal_size(1)
        except OSError:
            return
        set_window(master, size.lines, size.columns)

    def forward(sig: int, _frame: object) -> None:  # as `exec` without -t: to the runtime
        try:
            ex.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    code: int | None = None
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, follow_window)
    try:
        follow_window()
        with raw_terminal(req.interactive):
            relay(master, 0 if req.interactive else None, 1)
        code = ex.proc.wait()
        err = ex.proc.stderr.read() if ex.proc.stderr else b""
        if err:
            os.write(2, err)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(master)
        if ex.proc.stderr is not None:
            ex.proc.stderr.close()
        code = ex.finish(code)
    return code
