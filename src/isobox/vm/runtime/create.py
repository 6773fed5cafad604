"""``create``: start QEMU for a bundle, in its cgroup (and network namespace), paused at the
guest agent's door: the workload runs only at ``start``.

QEMU inherits conmon's stdio (or the console pty): stdin/stdout reach the guest workload through
the ``isobox.stdio`` virtio-serial port, stderr through ``isobox.stderr``; QEMU's own messages go
to ``qemu.log`` in the state directory.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from isobox.errors import ConfigError, IsoboxError, SystemSetupError
from isobox.vm.runtime.control import log_tail
from isobox.vm.runtime.machine import (
    DEFAULT_CACHE,
    annotation,
    guest_cpus,
    guest_memory_mib,
    module_groups,
    plan,
)
from isobox.vm.runtime.state import VMState, VMStore

MIB = 1 << 20
# QEMU's threads: vCPUs, the main loop, RCU, I/O workers (up to 64 per pool); no processes
# (-sandbox spawn=deny). A guest that makes QEMU spawn threads without end stops here.
QEMU_BASE_PIDS = 192
# What QEMU may open (device cgroup): null, zero, random, urandom, the tap clone device, KVM,
# and terminals (a VM with -t gets a pty).
QEMU_DEVICES: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}] + [
    {"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
    for major, minor in ((1, 3), (1, 5), (1, 8), (1, 9), (10, 200), (10, 232), (5, 0),
                         (5, 2))] + [{"allow": True, "type": "c", "major": 136, "access": "rwm"}]


def load_config(bundle: str) -> dict[str, Any]:
    path = os.path.join(bundle, "config.json")
    try:
        with open(path) as f:
            config: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        raise ConfigError("--bundle", f"{path}: no such file") from None
    except ValueError as e:
        raise ConfigError("config.json", f"{path}: not valid JSON: {e}") from None
    args = (config.get("process") or {}).get("args")
    if not args:
        raise ConfigError("process.args", "the VM has no command to run (process.args is empty)")
    return config


def overhead_mib(guest_mib: int) -> int:
    """QEMU's own memory next to the guest's (TCG translation cache, device state, heap)."""
    return 192 + guest_mib // 8


def create(store: VMStore, vid: str, bundle: str | None, pid_file: str | None,
           console_socket: str | None) -> VMState:
    bundle = os.path.abspath(bundle or os.getcwd())
    config = load_config(bundle)
    st = store.new(vid, bundle)
    st.annotations = {k: str(v) for k, v in (config.get("annotations") or {}).items()}
    st.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    proc: subprocess.Popen[bytes] | None = None
    cgroup: Any = None
    stdio = _Stdio(bool(config["process"].get("terminal")), console_socket)
    try:
        from isobox.vm.runtime.machine import allocate_qemu_uid

        allocate_qemu_uid(store, st)
        argv = _qemu_argv(config, st, stdio.stderr_fd, stdio.extra_fds)
        from isobox.vm.runtime.incoming import open_incoming

        incoming = open_incoming(config)
        if incoming >= 0:
            argv += ["-incoming", f"fd:{incoming}"]
            stdio.extra_fds.append(incoming)
        netns = _netns_path(config)
        if netns:
            from isobox.vm.runtime.network import qemu_args, wire

            net = wire(netns)
            if net is not None:
                st.net = net.to_dict()
                argv += qemu_args(net)
        cgroup = _make_cgroup(config, vid)
        st.cgroup = cgroup.to_state() if cgroup is not None else {}
        proc = _spawn(argv, st, config, cgroup, stdio)
        _check_started(proc, st)
        from isobox.runtime.state import process_start_time

        st.pid = proc.pid
        st.start_time = process_start_time(proc.pid) or 0
        st.save()
        if pid_file:
            from isobox.runtime.state import write_atomic

            write_atomic(os.path.abspath(pid_file), str(proc.pid).encode(), 0o644)
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if cgroup is not None:
            try:
                cgroup.destroy()
            except IsoboxError:
                pass
        import shutil

        shutil.rmtree(st.dir, ignore_errors=True)
        raise
    finally:
        stdio.close()
    return st


def _qemu_argv(config: dict[str, Any], st: VMState, stderr_fd: int,
               extra_fds: list[int]) -> list[str]:
    from isobox.vm.accel import detect
    from isobox.vm.agent_build import agent_binary
    from isobox.vm.initramfs import guest_initramfs
    from isobox.vm.kernel import guest_kernel
    from isobox.vm.qemu import qemu_argv

    cache = Path(annotation(config, "cache", DEFAULT_CACHE))
    user_kernel = annotation(config, "kernel")
    user_initrd = annotation(config, "initrd")
    kernel = guest_kernel(cache, Path(user_kernel) if user_kernel else None)
    if user_initrd:
        initrd = Path(user_initrd)
        if not initrd.is_file():
            raise ConfigError("--initrd", f"{initrd}: no such file")
    else:
        initrd = guest_initramfs(cache, kernel, agent_binary(cache),
                                 groups=module_groups(config))
    spec = plan(config, st, accel=detect(), kernel=kernel.vmlinux, initrd=initrd,
                stderr_fd=stderr_fd)
    extra_fds.extend(d.fd for d in spec.drives if d.fd >= 0)  # passed to QEMU, closed after
    return system_console(config, st, qemu_argv(spec))


CONSOLE_SOCKET = "con.sock"  # in the VM's state directory (as short as qmp.sock)


def system_console(config: dict[str, Any], st: VMState, argv: list[str]) -> list[str]:
    """A system VM's serial console (ttyS0): a socket ``isobox vm console`` attaches to (QEMU
    serves one client at a time and drops output while none is attached), every byte also
    appended to the console log (``org.isobox.vm.console-log``: the engine names QEMU's own
    stdout, conmon's pipe, so the log is the container log that conmon rotates)."""
    from isobox.vm.qemu import opt_value
    from isobox.vm.runtime.machine import is_system

    if not is_system(config):
        return argv
    log = annotation(config, "console-log") or st.console_log
    chardev = (f"socket,id=console,path={opt_value(os.path.join(st.dir, CONSOLE_SOCKET))},"
               f"server=on,wait=off,logfile={opt_value(log)},logappend=on")
    return [chardev if a.startswith("file,id=console,") else a for a in argv]


def _make_cgroup(config: dict[str, Any], vid: str) -> Any:
    path = (config.get("linux") or {}).get("cgroupsPath")
    if not path:
        return None
    from isobox.cgroups.manager import CgroupManager
    from isobox.cgroups.paths import resolve_path

    mgr = CgroupManager(resolve_path(path, vid))
    mgr.create()
    try:
        guest = guest_memory_mib(config)
        resources: dict[str, Any] = {"memory": {"limit": (guest + overhead_mib(guest)) * MIB},
                                     "pids": {"limit": QEMU_BASE_PIDS + 4 * guest_cpus(config)},
                                     "devices": QEMU_DEVICES}
        cpu = ((config.get("linux") or {}).get("resources") or {}).get("cpu")
        if cpu:
            resources["cpu"] = cpu
        mgr.apply(resources)
    except BaseException:
        mgr.destroy()
        raise
    return mgr


def _netns_path(config: dict[str, Any]) -> str:
    for ns in (config.get("linux") or {}).get("namespaces") or []:
        if ns.get("type") == "network":
            return str(ns.get("path") or "")
    return ""


class _Stdio:
    """The workload's stdio as QEMU inherits it: the caller's fds, or a new pty whose master
    goes to ``--console-socket``. The workload's stderr is a separate fd (QEMU's own fd 2 is
    its log), named to QEMU as /proc/self/fd/N, N the same number in the child."""

    def __init__(self, terminal: bool, console_socket: str | None) -> None:
        self.master = self.slave = -1
        self.extra_fds: list[int] = []  # more fds QEMU inherits under their own numbers
        self.console_socket = console_socket or ""
        if terminal:
            if not console_socket:
                raise ConfigError("--console-socket", "a VM with a terminal needs "
                                  "--console-socket")
            self.master, self.slave = os.openpty()
            self.stderr_fd = os.dup(self.slave)
        else:
            self.stderr_fd = os.dup(2)

    def close(self) -> None:
        for fd in (self.master, self.slave, self.stderr_fd, *self.extra_fds):
            if fd >= 0:
                os.close(fd)
        self.master = self.slave = self.stderr_fd = -1
        self.extra_fds = []


def _spawn(argv: list[str], st: VMState, config: dict[str, Any], cgroup: Any,
           stdio: _Stdio) -> subprocess.Popen[bytes]:
    netns = _netns_path(config)
    from isobox.linux.syscalls import CLONE_NEWNET, setns

    log_fd = os.open(st.qemu_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)

    def child_setup() -> None:  # pragma: no cover - runs in the child before exec
        if cgroup is not None:
            cgroup.add(os.getpid())
        if netns:
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            setns(fd, CLONE_NEWNET)
            os.close(fd)

    term = stdio.slave if stdio.slave >= 0 else None
    try:
        proc = subprocess.Popen(
            argv, stdin=term, stdout=term, stderr=log_fd, close_fds=True,
            pass_fds=(stdio.stderr_fd, *stdio.extra_fds), start_new_session=True,
            preexec_fn=child_setup)
    except OSError as e:
        raise SystemSetupError(f"cannot start {argv[0]}: {e.strerror}") from None
    except subprocess.SubprocessError as e:  # child_setup failed: cgroup or netns
        raise SystemSetupError(f"cannot start {argv[0]}: {e}") from None
    finally:
        os.close(log_fd)
    if stdio.master >= 0:
        try:
            _send_console(stdio.console_socket, stdio.master, stdio.slave)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return proc


def _send_console(path: str, master: int, slave: int) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        name = os.readlink(f"/proc/self/fd/{slave}")
        socket.send_fds(sock, [name.encode()], [master])
    except OSError as e:
        raise SystemSetupError(f"cannot send the console to {path}: {e.strerror}") from None
    finally:
        sock.close()


def _check_started(proc: subprocess.Popen[bytes], st: VMState) -> None:
    """QEMU was exec'd (Popen reports a failed exec). Not waiting for its QMP socket (~40 ms
    of QEMU's own start-up, on the path of every VM start): a QEMU that dies later is seen by
    ``start``, whose wait for the agent ends when QEMU does, with QEMU's log in the error."""
    if proc.poll() is not None:
        raise SystemSetupError(f"qemu exited at start (status {proc.returncode}): "
                               f"{log_tail(st.qemu_log)}")
