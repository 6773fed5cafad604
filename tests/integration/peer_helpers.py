"""Helpers for driving isobox-runtime through real callers (podman + conmon, containerd + shim):
the runtime's launcher path, a pty driver for ``-it``, an OCI image archive writer, and
host-side leak checks (processes, mounts, cgroups)."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import platform
import select
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import termios
import time
from collections.abc import Sequence
from typing import Any

from harness import wait_for as wait_for

CGROUP_ROOT = "/sys/fs/cgroup"


def runtime_binary() -> str:
    """The installed ``isobox-runtime`` launcher: callers need one executable path."""
    exe = shutil.which("isobox-runtime") or os.path.join(sys.prefix, "bin", "isobox-runtime")
    if not os.access(exe, os.X_OK):
        raise AssertionError(f"isobox-runtime is not installed at {exe} (run `make venv`)")
    return exe


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 60,
        env: dict[str, str] | None = None, input: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run a command, stdout/stderr captured in files (containers may keep pipes open)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(list(argv), stdout=out, stderr=err, text=True, timeout=timeout,
                              env=env, input=input, check=False,
                              stdin=None if input is not None else subprocess.DEVNULL)
        out.seek(0)
        err.seek(0)
        proc.stdout, proc.stderr = out.read(), err.read()
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc




# -- a terminal without a terminal -------------------------------------------------------------

def run_in_pty(argv: Sequence[str], steps: Sequence[tuple[str, str]] = (), *, rows: int = 24,
               cols: int = 80, timeout: float = 30, env: dict[str, str] | None = None
               ) -> tuple[int, str]:
    """Run ``argv`` with a new pty as its controlling terminal (window ``rows`` x ``cols``).

    ``steps``: (expected text, text to type) pairs, each typed once the expected text has
    appeared in the output (after the previous step). Returns (exit code, output)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def make_ctty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(list(argv), stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True, preexec_fn=make_ctty)
    os.close(slave)
    out = b""
    seen = 0
    pending = list(steps)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave fd is closed
                    break
                if not data:
                    break
                out += data
            if pending and pending[0][0].encode() in out[seen:]:
                expect, text = pending.pop(0)
                seen = out.index(expect.encode(), seen) + len(expect)
                os.write(master, text.encode())
            if not ready and proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"{' '.join(argv)}: timed out; output so far: {out!r}")
        return proc.wait(timeout=max(1.0, deadline - time.monotonic())), out.decode(
            errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- an OCI image archive, made without any registry -------------------------------------------

def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


def _blob(tf: tarfile.TarFile, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    _add(tf, f"blobs/sha256/{digest}", data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def write_oci_archive(rootfs: str, out: str, name: str) -> None:
    """Write ``rootfs`` as a one-layer OCI image layout tar (``ctr images import``-able),
    with ``name`` (e.g. ``docker.io/library/x:latest``) as its reference."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for entry in sorted(os.listdir(rootfs)):
            layer.add(os.path.join(rootfs, entry), arcname=entry)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    with tarfile.open(out, "w") as tf:
        layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar",
                      **_blob(tf, buf.getvalue())}
        config = {"architecture": arch, "os": "linux",
                  "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]},
                  "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]}}
        config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                       **_blob(tf, json.dumps(config).encode())}
        manifest = {"schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_desc, "layers": [layer_desc]}
        manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                         **_blob(tf, json.dumps(manifest).encode()),
                         "annotations": {"io.containerd.image.name": name,
                                         "org.opencontainers.image.ref.name":
                                             name.rsplit(":", 1)[1]}}
        _add(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add(tf, "index.json",
             json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}).encode())


# -- leak checks -------------------------------------------------------------------------------

def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line contains ``text``."""
    found = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if text in cmd:
            found.append((int(name), cmd))
    return found


def kill_processes(procs: list[tuple[int, str]]) -> None:
    for pid, _ in procs:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def mounts_under(path: str) -> list[str]:
    """Mount points at or below ``path``, deepest first."""
    path = os.path.realpath(path)
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == path or point.startswith(path + "/"):
                points.append(point)
    return sorted(set(points), key=lambda p: -p.count("/"))


def unmount_all(points: list[str]) -> None:
    for point in points:
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def cgroup_dirs(rel: str) -> list[str]:
    """``rel`` (a cgroup path like ``/x/y``) on every mounted hierarchy where it exists."""
    found = []
    for hier in sorted(os.listdir(CGROUP_ROOT)):
        d = os.path.join(CGROUP_ROOT, hier, rel.strip("/"))
        if os.path.isdir(d):
            found.append(d)
    return found


def remove_cgroup_tree(d: str) -> list[str]:
    """rmdir ``d`` and its sub-cgroups, deepest first; returns the sub-cgroups found."""
    subs = []
    for base, dirs, _ in os.walk(d, topdown=False):
        for name in dirs:
            sub = os.path.join(base, name)
            subs.append(sub)
            try:
                os.rmdir(sub)
            except OSError:
                pass
    try:
        os.rmdir(d)
    except OSError:
        pass
    return subs
