"""The build hook: runs a Containerfile ``RUN`` step as a real container.

For each step an OCI bundle is written (``config.json`` from :mod:`isobox.oci.defaults` with
Docker's default confinement) whose root is the build snapshot's mounted overlay, and
``isobox-runtime run`` executes it in the foreground with our stdout/stderr. The step's
container has its own network namespace (loopback only, as ``--network=none``), the
hostname ``buildkitsandbox``, Docker's 14 capabilities, moby's masked and read-only paths
and a seccomp filter. Only argv, env, cwd and the numeric user come from the image: image
metadata can never widen this sandbox (catalogue case 41).

Runtime state lives under ``<store root>/build-runtime``; whatever happens (failure,
KeyboardInterrupt) the container is force-deleted, so no state, cgroup or mount is left.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from isobox.engine.seccomp_profile import default_profile
from isobox.engine.spec import thermal_throttle_paths
from isobox.errors import SystemSetupError
from isobox.images.build.run_step import RunStep
from isobox.oci.defaults import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    DOCKER_DEFAULT_CAPS,
    default_spec,
)

# Syscalls Docker's default profile refuses to a container without extra capabilities: the
# floor the engine's allow-list profile (isobox.engine.seccomp_profile) must stay above.
BLOCKED_SYSCALLS: tuple[str, ...] = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
    "delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
    "get_kernel_syms", "init_module", "io_uring_enter", "io_uring_register", "io_uring_setup",
    "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
    "mount", "mount_setattr", "move_mount", "name_to_handle_at", "nfsservctl",
    "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root",
    "query_module", "quotactl", "quotactl_fd", "reboot", "request_key",
    "setns", "settimeofday", "stime", "swapoff", "swapon", "sysfs", "_sysctl", "umount",
    "umount2", "unshare", "uselib", "userfaultfd", "ustat", "vm86", "vm86old",
)

HOSTNAME = "buildkitsandbox"


def runtime_binary() -> list[str]:
    """``isobox-runtime``: next to our interpreter (the venv), else on PATH, else -m."""
    beside = os.path.join(os.path.dirname(sys.executable), "isobox-runtime")
    if os.access(beside, os.X_OK):
        return [beside]
    found = shutil.which("isobox-runtime")
    if found:
        return [found]
    return [sys.executable, "-m", "isobox.runtime"]


def seccomp_profile() -> dict[str, Any]:
    """The engine's default (allow-list) profile for Docker's default caps; it refuses at
    least :data:`BLOCKED_SYSCALLS` (tests/security/test_run_confinement.py checks)."""
    return default_profile(DOCKER_DEFAULT_CAPS)


def step_config(step: RunStep) -> dict[str, Any]:
    """The bundle's config.json for ``step``: defaults + Docker confinement + the step."""
    spec = default_spec(args=list(step.args))
    process = spec["process"]
    process["terminal"] = False
    process["env"] = list(step.env)
    process["cwd"] = step.cwd or "/"
    user: dict[str, Any] = {"uid": step.uid, "gid": step.gid}
    if step.additional_gids:
        user["additionalGids"] = list(step.additional_gids)
    process["user"] = user
    caps = list(DOCKER_DEFAULT_CAPS)
    # moby: a non-root user keeps the bounding set only (effective/permitted cleared).
    held = caps if step.uid == 0 else []
    process["capabilities"] = {"bounding": caps, "effective": list(held),
                               "permitted": list(held)}
    # Docker does not set no_new_privs by default (setuid tools such as su work in RUN).
    process["noNewPrivileges"] = False
    spec["root"] = {"path": step.rootfs, "readonly": False}
    spec["hostname"] = step.hostname or HOSTNAME
    linux = spec["linux"]
    linux["maskedPaths"] = [*DEFAULT_MASKED_PATHS, *thermal_throttle_paths()]
    linux["readonlyPaths"] = list(DEFAULT_READONLY_PATHS)
    linux["seccomp"] = seccomp_profile()
    # pid, network (own netns: loopback only), ipc, uts, mount — from the defaults.
    return spec


class RuntimeStepRunner:
    """:class:`isobox.images.build.run_step.StepRunner` backed by ``isobox-runtime run``."""

    def __init__(self, store_root: str, runtime: list[str] | None = None,
                 output: Callable[[bytes], None] | None = None) -> None:
        """``output``: receives the steps' stdout and stderr (merged) instead of this
        process's own streams (the API streams them to its client)."""
        self.store_root = store_root
        self.output = output
        self.state_root = os.path.join(store_root, "build-runtime")
        self.bundle_root = os.path.join(store_root, "build-bundles")
        for d in (self.state_root, self.bundle_root):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self.runtime = runtime or runtime_binary()

    def _rt(self, *args: str) -> list[str]:
        return [*self.runtime, "--root", self.state_root, *args]

    def run(self, step: RunStep) -> int:
        cid = f"isoboxbuild-{secrets.token_hex(6)}"
        bundle = tempfile.mkdtemp(prefix=f"{cid}-", dir=self.bundle_root)
        try:
            with open(os.path.join(bundle, "config.json"), "w") as f:
                f.write(json.dumps(step_config(step)))
            sys.stdout.flush()
            sys.stderr.flush()
            piped = self.output is not None and not step.quiet
            out: int | None = subprocess.DEVNULL if step.quiet else None
            try:
                proc = subprocess.Popen(self._rt("run", "--bundle", bundle, cid),
                                        stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE if piped else out,
                                        stderr=subprocess.STDOUT if piped else out)
            except OSError as e:
                raise SystemSetupError(f"cannot start {self.runtime[0]}: {e.strerror}") from None
            try:
                if piped:
                    self._relay(proc)
                code = proc.wait()
            except BaseException:  # Ctrl-C, or our caller being torn down
                self._stop(proc, cid)
                raise
            return code if code >= 0 else 128 - code
        finally:
            self._delete(cid)
            shutil.rmtree(bundle, ignore_errors=True)

    def _relay(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None and self.output is not None
        fd = proc.stdout.fileno()
        with proc.stdout:
            while data := os.read(fd, 65536):
                self.output(data)

    def _stop(self, proc: subprocess.Popen[bytes], cid: str) -> None:
        try:
            subprocess.run(self._rt("kill", "--all", cid, "KILL"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                           timeout=10)
        except (OSError, subprocess.SubprocessError):
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                proc.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
            except KeyboardInterrupt:
                proc.send_signal(signal.SIGKILL)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def _delete(self, cid: str) -> None:
        if not os.path.lexists(os.path.join(self.state_root, cid)):
            return
        subprocess.run(self._rt("delete", "--force", cid), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False, timeout=30)

