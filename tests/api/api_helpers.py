"""Helpers of the API tests: `isobox serve` as a subprocess, the docker CLI bound to it, and a
raw HTTP/1.1 client over the unix socket (to check status codes and headers exactly)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Any

from engine_helpers import NET_PREFIX, Isobox

DOCKER = shutil.which("docker") or "/usr/local/bin/docker"  # `make deps` makes sure of one


class ApiServer:
    def __init__(self, proc: subprocess.Popen[bytes], socket_path: str, log_path: str) -> None:
        self.proc = proc
        self.socket_path = socket_path
        self.log_path = log_path

    @classmethod
    def start(cls, root: str, socket_path: str, *args: str, log_path: str = "") -> ApiServer:
        """``isobox serve --socket socket_path *args``, once it answers ``/_ping``."""
        log_path = log_path or socket_path + ".log"
        env = {**os.environ, "ISOBOX_ROOT": root, "ISOBOX_NET_PREFIX": NET_PREFIX}
        env.pop("ISOBOX_RUN_DIR", None)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([Isobox.binary(), "serve", "--socket", socket_path, *args],
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
        server = cls(proc, socket_path, log_path)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"isobox serve exited: {server.log()}")
            try:
                if raw(socket_path, "GET", "/_ping")[0] == 200:
                    return server
            except OSError:
                pass
            time.sleep(0.05)
        server.stop()
        raise AssertionError(f"isobox serve did not answer: {server.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            os.unlink(self.log_path)
        except FileNotFoundError:
            pass
        return self.proc.returncode


class Docker:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{socket_path}",
                    "DOCKER_CONFIG": "/nonexistent-isobox-test"}
        self.env.pop("DOCKER_API_VERSION", None)

    def __call__(self, *args: str, check: bool = True, input_: bytes | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([DOCKER, *args], env=self.env, capture_output=True,
                              input=input_.decode() if input_ is not None else None,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def in_pty(self, command: str, keys: list[tuple[float, bytes]], timeout: float = 60
               ) -> tuple[int, bytes]:
        """Run ``docker COMMAND`` on a pseudo-terminal (script(1)), typing ``keys`` (delay,
        bytes) into it; (exit status, everything the terminal showed)."""
        import pty
        import select

        pid, fd = pty.fork()
        if pid == 0:  # pragma: no cover - child
            os.execvpe(DOCKER, [DOCKER, *command.split()], self.env)
        out = b""
        deadline = time.monotonic() + timeout
        pending = list(keys)
        next_at = time.monotonic() + (pending[0][0] if pending else 0)
        try:
            while time.monotonic() < deadline:
                wait = max(0.0, min(deadline, next_at) - time.monotonic()) if pending else 0.2
                r, _, _ = select.select([fd], [], [], wait)
                if r:
                    try:
                        data = os.read(fd, 4096)
                    except OSError:
                        break
                    if not data:
                        break
                    out += data
                if pending and time.monotonic() >= next_at:
                    os.write(fd, pending.pop(0)[1])
                    next_at = time.monotonic() + (pending[0][0] if pending else 0)
            _, status = os.waitpid(pid, 0)
        finally:
            os.close(fd)
        return os.waitstatus_to_exitcode(status), out


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.path)
        self.sock = s


def raw(socket_path: str, method: str, path: str, body: Any = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request."""
    conn = _UnixConnection(socket_path)
    try:
        data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        hdrs = dict(headers or {})
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def message(body: bytes) -> str:
    return str(json.loads(body)["message"])
