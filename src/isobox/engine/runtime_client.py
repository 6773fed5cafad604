"""Calls to the OCI runtime: any runc-compatible binary, the way podman calls runc (one process
per operation, our own ``--root`` for its state); our own ``isobox-runtime``, the default, as a
library for the operations the CLI waits on (:class:`OwnRuntimeClient`)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from isobox.errors import NotFoundError, SystemSetupError

if TYPE_CHECKING:
    import subprocess

DEFAULT_RUNTIME = "isobox-runtime"
VM_RUNTIME = "isobox-vm-runtime"


def own_runtime_path() -> str:
    """Where our own ``isobox-runtime`` is installed: beside the interpreter."""
    return os.path.join(os.path.dirname(sys.executable), DEFAULT_RUNTIME)


def runtime_client(name: str, state_root: str) -> RuntimeClient:
    """The client for the runtime ``name`` ("" = the default). The default, when it is our own
    binary, is called in-process (:class:`OwnRuntimeClient`); a runtime named by its path is
    always run as that binary."""
    path = runtime_path(name)
    if name in ("", DEFAULT_RUNTIME) and path == own_runtime_path():
        return OwnRuntimeClient(path, state_root)
    return RuntimeClient(path, state_root)


def runtime_path(name: str = "") -> str:
    """The runtime's executable: a path, a name on PATH, or our own next to the interpreter."""
    name = name or DEFAULT_RUNTIME
    if "/" in name:
        if not os.access(name, os.X_OK):
            raise NotFoundError(f"runtime {name!r}: not an executable file")
        return os.path.abspath(name)
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(beside, os.X_OK):
        return beside
    import shutil

    found = shutil.which(name)
    if found:
        return found
    raise NotFoundError(f"unknown or invalid runtime name: {name}")


class RuntimeClient:
    def __init__(self, path: str, state_root: str) -> None:
        self.path = path
        self.state_root = state_root

    @property
    def global_args(self) -> list[str]:
        return ["--root", self.state_root]

    def argv(self, *args: str) -> list[str]:
        return [self.path, *self.global_args, *args]

    def run(self, *args: str, check: bool = True, timeout: float = 60,
            input_: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        import subprocess  # here: our own runtime, the default, is called in-process

        try:
            proc = subprocess.run(self.argv(*args), input=input_, capture_output=True,
                                  timeout=timeout, check=False)
        except OSError as e:
            raise SystemSetupError(f"cannot run {self.path}: {e.strerror}") from None
        except subprocess.TimeoutExpired:
            raise SystemSetupError(f"{os.path.basename(self.path)} {args[0]} did not finish "
                                   f"in {timeout:.0f}s") from None
        if check and proc.returncode != 0:
            raise SystemSetupError(f"{os.path.basename(self.path)} {args[0]}: "
                                   f"{self._message(proc.stderr)}")
        return proc

    def _message(self, stderr: bytes) -> str:
        text = stderr.decode(errors="replace").strip()
        prefix = os.path.basename(self.path) + ": error: "
        lines = [ln[len(prefix):] if ln.startswith(prefix) else ln for ln in text.splitlines()]
        return "; ".join(ln for ln in lines if ln) or "failed"

    def start(self, cid: str) -> None:
        self.run("start", cid)

    def kill(self, cid: str, signal: int | str, all_: bool = False) -> bool:
        args = ["kill", *(["--all"] if all_ else []), cid, str(signal)]
        return self.run(*args, check=False).returncode == 0

    def delete(self, cid: str, force: bool = True) -> None:
        if not os.path.lexists(os.path.join(self.state_root, cid)):
            return
        self.run("delete", *(["--force"] if force else []), cid, check=False)

    def state(self, cid: str) -> dict[str, Any] | None:
        proc = self.run("state", cid, check=False)
        if proc.returncode != 0:
            return None
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def pause(self, cid: str) -> None:
        self.run("pause", cid)

    def resume(self, cid: str) -> None:
        self.run("resume", cid)

    def update(self, cid: str, resources: dict[str, Any]) -> None:
        self.run("update", "--resources", "-", cid, input_=json.dumps(resources).encode())

    def ps_pids(self, cid: str) -> list[int]:
        proc = self.run("ps", "--format", "json", cid)
        data = json.loads(proc.stdout or b"[]")
        return [int(p) for p in data]


class OwnRuntimeClient(RuntimeClient):
    """``isobox-runtime``'s own code called in-process for start, kill, pause, resume and
    delete: the same functions its CLI dispatches to, without an interpreter start and its
    imports per operation (~15 ms each here; ``run --rm`` waits on a start and a delete).
    ``create`` still runs as the binary, under conmon, which must be the container's parent;
    the rest (exec, update, ps, ...) too. Errors read as the binary's would."""

    def _store(self) -> Any:
        from isobox.runtime.state import StateStore

        return StateStore(self.state_root)

    start_timeout = 60.0  # seconds, as the binary's process was given

    def _call(self, op: str, function: Callable[..., object], cid: str, **kw: Any) -> None:
        """``function(store, cid)``; any error as the binary's (``isobox-runtime OP: ...``),
        whose process turned every failure into an exit status."""
        try:
            function(self._store(), cid, **kw)
        except Exception as e:  # e.g. a corrupt state file: an error, never a traceback
            text = (f"{e.strerror}" + (f": {e.filename}" if e.filename else "")
                    if isinstance(e, OSError) and e.strerror else str(e))
            raise SystemSetupError(f"{DEFAULT_RUNTIME} {op}: {text or 'failed'}") from None

    def start(self, cid: str) -> None:
        from isobox.runtime.container_start import start

        self._call("start", start, cid, timeout=self.start_timeout)

    def kill(self, cid: str, signal: int | str, all_: bool = False) -> bool:
        from isobox.runtime.container_kill import kill
        from isobox.runtime.signals import parse_signal

        try:
            kill(self._store(), cid, parse_signal(str(signal)), all_)
        except Exception:  # as the binary's failure: False
            return False
        return True

    def delete(self, cid: str, force: bool = True) -> None:
        from isobox.runtime.container_delete import delete

        if not os.path.lexists(os.path.join(self.state_root, cid)):
            return
        try:  # as the binary's failure, ignored: the caller cleans up what it owns regardless
            delete(self._store(), cid, force=force)
        except Exception:
            pass

    def pause(self, cid: str) -> None:
        from isobox.runtime.container_pause import pause

        self._call("pause", pause, cid)

    def resume(self, cid: str) -> None:
        from isobox.runtime.container_pause import resume

        self._call("resume", resume, cid)
