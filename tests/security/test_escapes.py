"""Runtime escapes, catalogue cases 1-10: each test performs the attack against the real
``isobox-runtime`` and asserts the safe outcome, then ``host_guard`` runs the after-every-case
checks (canary, core_pattern, python and the runtime's files, host mounts, stray files) and
the ``runtime`` fixture checks that no state, mount or cgroup is left."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

pytest.register_assert_rewrite("sec_helpers")  # before its import below: asserts in fixtures
from sec_helpers import (  # noqa: E402
    add_bind,
    critical_files,
    digests,
    drop_dev_mounts,
    mnt_points_host,
    run,
    wait_status,
)

from harness import RUN_PREFIX, Bundle, Runtime, unique_id  # noqa: E402

pytest_plugins = ["sec_helpers"]
pytestmark = pytest.mark.usefixtures("host_guard")


# -- case 1 --------------------------------------------------------------------------------

@pytest.mark.stress
def test_case01_exe_of_joining_process_is_unreachable(runtime: Runtime, bundle: Bundle,
                                                      probe: str, tmp_path: Path) -> None:
    """CVE-2019-5736/CVE-2016-9962: a watcher (PID 1) races every ``exec`` for the joining
    process's /proc/PID/exe (the host's python) and ptraces it; 40 execs."""
    io = tmp_path / "io"
    io.mkdir()
    add_bind(bundle, str(io), "/io")
    bundle.set_args(probe, "watch", "/io/result", "/io/stop")
    files = [p for p in critical_files() if "/src/isobox/" not in p]
    before = digests(files)
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    for _ in range(40):
        assert runtime("exec", cid, "/bin/true").code == 0
    (io / "stop").touch()
    assert wait_status(runtime, cid, "stopped")["status"] == "stopped"
    result = (io / "result").read_text()
    assert "BREACH" not in result, result
    m = re.search(r"RESULT seen=(\d+) denied=(\d+) ok=(\d+) ptrace_denied=(\d+)", result)
    assert m, result
    # The watcher did see joining processes while they were still the host's python: their
    # exe could not be opened, and ptrace was refused (non-dumpable).
    assert int(m.group(2)) > 0 and int(m.group(4)) > 0, result
    assert digests(files) == before
    runtime("delete", cid)


# -- case 2 --------------------------------------------------------------------------------

CWD_FDS = range(3, 41)


def _no_pwned(*dirs: str) -> None:
    for d in dirs:
        for base, _, names in os.walk(d):
            assert not [n for n in names if n.startswith("pwned")], (base, names)


def test_case02_config_cwd_is_a_leaked_fd(runtime: Runtime, bundle: Bundle) -> None:
    """CVE-2024-21626: process.cwd = /proc/self/fd/N for N = 3..40 (today fd 3 of the init
    is the state directory: the check below refuses it; the others are not directories)."""
    for n in CWD_FDS:
        bundle.config["process"]["cwd"] = f"/proc/self/fd/{n}"
        bundle.set_args("sh", "-c", f"touch pwned-{n} 2>/dev/null; pwd")
        res = run(runtime, bundle)
        if res.code == 0:  # allowed only if the cwd resolved inside the container
            assert res.out.startswith("/") and "unreachable" not in res.out, (n, res)
        else:
            assert ("outside of container mount namespace root" in res.err
                    or "process.cwd" in res.err), (n, res)
    _no_pwned(runtime.root, bundle.path)


def test_case02_cwd_check_catches_a_directory_outside_the_root(tmp_path: Path) -> None:
    """The check itself, deterministically: a directory fd opened before chroot (as a leaked
    host fd would be) used as the cwd is refused with runc's message."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "proc").mkdir(parents=True)
    outside.mkdir()

    def child() -> int:
        from isobox.errors import SystemSetupError
        from isobox.linux import syscalls as sc
        from isobox.runtime.process import enter_cwd

        fd = os.open(str(outside), os.O_RDONLY | os.O_DIRECTORY)
        sc.mount("proc", str(root / "proc"), "proc")
        os.chroot(str(root))
        try:
            enter_cwd(f"/proc/self/fd/{fd}")
        except SystemSetupError as e:
            return 0 if "outside of container mount namespace root" in str(e) else 2
        return 3

    assert _in_child(child) == 0


def test_case02_exec_cwd_symlink_to_leaked_fd(runtime: Runtime, bundle: Bundle,
                                              probe: str) -> None:
    """A container process points the target of an operator's ``exec --cwd`` at
    /proc/self/fd/N; the exec'd process must not start with a host directory as its cwd."""
    links = "; ".join(f"ln -s /proc/self/fd/{n} /dev/shm/w{n}" for n in CWD_FDS)
    bundle.set_args("sh", "-c", f"{links}; exec {probe} sleep")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    for n in CWD_FDS:
        res = runtime("exec", "--cwd", f"/dev/shm/w{n}", cid, "sh", "-c",
                      f"touch pwned-{n} 2>/dev/null; pwd", check=False)
        if res.code == 0:
            assert res.out.startswith("/") and "unreachable" not in res.out, (n, res)
        else:
            assert "outside of container" in res.err or "cwd" in res.err, (n, res)
    _no_pwned(runtime.root, bundle.path)
    runtime("delete", "--force", cid)


def test_case02_execve_of_a_leaked_fd(runtime: Runtime, bundle: Bundle, probe: str) -> None:
    """``execve("/proc/self/fd/N")``: as the container's process and through ``exec``."""
    for n in range(3, 12):
        bundle.set_args(f"/proc/self/fd/{n}")
        res = run(runtime, bundle)
        assert res.code != 0 and f"/proc/self/fd/{n}" in res.err, (n, res)
    bundle.set_args(probe, "sleep")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    for n in range(3, 12):
        res = runtime("exec", cid, f"/proc/self/fd/{n}", check=False)
        assert res.code != 0 and f"/proc/self/fd/{n}" in res.err, (n, res)
    runtime("delete", "--force", cid)


# -- case 3 --------------------------------------------------------------------------------

def _extra_fds(out: str) -> list[str]:
    """FD lines above stdio, other than pipes, sockets, anon inodes and ptys."""
    extra = []
    for line in out.splitlines():
        parts = line.split(" ", 3)
        if parts[0] != "FD" or int(parts[2]) <= 2:
            continue
        target = parts[3]
        if not target.startswith(("pipe:", "socket:", "anon_inode:", "/dev/pts/")):
            extra.append(line)
    return extra


def test_case03_fd_audit_at_start_and_exec(runtime: Runtime, bundle: Bundle,
                                           probe: str) -> None:
    bundle.set_args(probe, "fds")
    res = run(runtime, bundle)
    assert res.code == 0 and "FD self 0" in res.out, res
    assert not _extra_fds(res.out), res.out
    bundle.set_args(probe, "sleep")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    res = runtime("exec", cid, probe, "fds")
    assert "FD 1 0" in res.out and "FD self 0" in res.out, res
    assert not _extra_fds(res.out), res.out
    runtime("delete", "--force", cid)


def test_case03_only_preserved_fds_pass(runtime: Runtime, bundle: Bundle, probe: str) -> None:
    """--preserve-fds 1 hands exactly fd 3 (a pipe) to the container, nothing more."""
    bundle.set_args(probe, "fds")
    r, w = os.pipe()
    try:
        proc = subprocess.run(
            ["bash", "-c", f'exec "$@" 3<&{r} {r}<&-', "bash", *runtime.cmd, "--root",
             runtime.root, "run", "--preserve-fds", "1", "--bundle", bundle.path, unique_id()],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False,
            pass_fds=(r,))
    finally:
        os.close(r)
        os.close(w)
    assert proc.returncode == 0, proc
    extra = [ln for ln in proc.stdout.splitlines() if ln.startswith("FD self ")
             and int(ln.split()[2]) > 2]
    assert len(extra) == 1 and extra[0].startswith("FD self 3 pipe:"), proc.stdout


def test_case03_no_fd_growth_over_create_delete(runtime: Runtime, bundle: Bundle) -> None:
    """Ten create/delete cycles: the waiting init holds the same few fds each time, none of
    them into the bundle, the rootfs or cgroupfs; the caller's fd count does not grow."""
    bundle.set_args("true")
    mine = len(os.listdir("/proc/self/fd"))
    counts = set()
    for _ in range(10):
        cid = unique_id()
        runtime("create", "--bundle", bundle.path, cid)
        pid = runtime.state(cid)["pid"]
        targets = {}
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                targets[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
        counts.add(len(targets))
        for fd, target in targets.items():
            if fd > 2:
                assert not target.startswith((bundle.path, "/sys/fs/cgroup")), targets
                assert target.startswith((runtime.root, "pipe:", "anon_inode:")), targets
        runtime("delete", "--force", cid)
    assert len(counts) == 1 and max(counts) <= 8, counts
    assert len(os.listdir("/proc/self/fd")) == mine


# -- case 4 --------------------------------------------------------------------------------

def test_case04_absolute_symlink_in_mount_target(runtime: Runtime, bundle: Bundle,
                                                 canary: str, tmp_path: Path) -> None:
    """``/sockets -> <host canary dir>`` with a bind at /sockets/docker.sock, and
    ``/conf -> /real/conf`` with a tmpfs at /conf/stack (and a relative ``..`` variant)."""
    sock = tmp_path / "docker.sock"
    sock.write_text("the bound file\n")
    os.symlink(f"{canary}/dir", os.path.join(bundle.rootfs, "sockets"))
    os.symlink("/real/conf", os.path.join(bundle.rootfs, "conf"))
    os.symlink("../../../../../../../../" + canary.lstrip("/") + "/dir",
               os.path.join(bundle.rootfs, "conf2"))
    add_bind(bundle, str(sock), "/sockets/docker.sock")
    # The targets do not exist in the image yet: refused rather than created anywhere.
    res = run(runtime, bundle)
    assert res.code == 1 and "/sockets" in res.err, res
    os.makedirs(os.path.join(bundle.rootfs, canary.lstrip("/"), "dir"))
    os.makedirs(os.path.join(bundle.rootfs, "real", "conf"))
    bundle.config["mounts"] += [
        {"destination": "/conf/stack", "type": "tmpfs", "source": "tmpfs",
         "options": ["size=1232k"]},
        {"destination": "/conf2/x", "type": "tmpfs", "source": "tmpfs", "options": ["size=1236k"]},
    ]
    bundle.set_args("sh", "-c", f"cat /sockets/docker.sock {canary}/dir/docker.sock; "
                    "grep -E 'size=123[26]k' /proc/self/mountinfo | cut -d' ' -f5")
    res = run(runtime, bundle)
    assert res.code == 0, res
    lines = res.out.splitlines()
    assert lines[:2] == ["the bound file"] * 2, res
    assert sorted(lines[2:]) == sorted(["/real/conf/stack", f"{canary}/dir/x"]), res
    # Created inside the rootfs, never on the host (host_guard checks the canary itself).
    assert os.path.exists(os.path.join(bundle.rootfs, canary.lstrip("/"), "dir", "docker.sock"))
    assert os.path.isdir(os.path.join(bundle.rootfs, "real", "conf", "stack"))


@pytest.mark.stress
def test_case04_symlink_exchange_race_on_mount_target(runtime: Runtime, bundle: Bundle,
                                                      probe_binary: str,
                                                      tmp_path: Path) -> None:
    """A volume at /a and a tmpfs at /a/b while an attacker exchanges ``b`` between a
    directory and a symlink to ``/``: the tmpfs always lands inside the rootfs."""
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "b").mkdir()
    os.symlink("/", vol / "b.lnk")
    add_bind(bundle, str(vol), "/a")
    bundle.config["mounts"].append({"destination": "/a/b", "type": "tmpfs", "source": "tmpfs",
                                    "options": ["size=1240k"]})  # tmpfs sizes are in pages
    bundle.set_args("sh", "-c", "grep -c size=1240k /proc/self/mountinfo; true")
    before = mnt_points_host()
    stop = tmp_path / "stop"
    swapper = subprocess.Popen([probe_binary, "swap", str(vol), "b", "b.lnk", str(stop)],
                               stdout=subprocess.PIPE, text=True)
    try:
        outcomes = []
        for _ in range(20):
            res = run(runtime, bundle)
            # Either the tmpfs is one of the container's mounts, or it covered the whole
            # rootfs (the symlink, resolved in the root, is "/") and nothing could run.
            if res.code == 0:
                assert res.out.strip() == "1", res
            else:
                assert "isobox-runtime: error" in res.err, res
            outcomes.append(res.code)
    finally:
        stop.touch()
        out, _ = swapper.communicate(timeout=10)
    assert int(out.split()[1]) > 0, out  # the attacker really raced
    assert not {m for m in mnt_points_host() - before if str(tmp_path) in m}
    assert sorted(os.listdir(vol)) == ["b", "b.lnk"]


# -- case 5 --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["proc", "sys"])
def test_case05_proc_or_sys_is_a_symlink(runtime: Runtime, bundle: Bundle, name: str) -> None:
    path = os.path.join(bundle.rootfs, name)
    os.rmdir(path)
    os.symlink(f"/bad-{name}", path)
    os.mkdir(os.path.join(bundle.rootfs, f"bad-{name}"))
    res = run(runtime, bundle)
    assert res.code == 1 and "must be mounted on ordinary directory" in res.err, res
    assert os.listdir(os.path.join(bundle.rootfs, f"bad-{name}")) == []


def test_case05_masked_path_is_or_goes_through_a_symlink(runtime: Runtime,
                                                         bundle: Bundle) -> None:
    os.mkdir(os.path.join(bundle.rootfs, "realdir"))
    Path(bundle.rootfs, "realdir", "secret").write_text("secret\n")
    os.symlink("/realdir", os.path.join(bundle.rootfs, "testdir2"))
    os.symlink("/realdir/secret", os.path.join(bundle.rootfs, "testfile"))
    bundle.set_args("cat", "/realdir/secret")
    masked = bundle.config["linux"]["maskedPaths"]
    for p in ("/testdir2/secret", "/testfile"):
        bundle.config["linux"]["maskedPaths"] = [*masked, p]
        bundle.save()
        res = run(runtime, bundle)
        assert res.code == 1 and f"masked path {p} must not be a symlink" in res.err, res
    bundle.config["linux"]["maskedPaths"] = [*masked, "/realdir/secret"]
    bundle.save()
    res = run(runtime, bundle)
    assert res.code == 0 and res.out == "", res  # the real path is masked


# -- case 6 --------------------------------------------------------------------------------

def test_case06_mount_targets_created_through_symlinked_parents(
        runtime: Runtime, bundle: Bundle, canary: str, tmp_path: Path) -> None:
    """``/vol/a -> /../../../../<host canary dir>``; mounts at /vol/a/b/c (a directory)
    and /vol/a/f.sock (a file). Nothing may be created on the host."""
    os.makedirs(os.path.join(bundle.rootfs, "vol"))
    os.symlink("/../../../.." + canary + "/dir", os.path.join(bundle.rootfs, "vol", "a"))
    src = tmp_path / "f.sock"
    src.write_text("x\n")
    base_mounts = list(bundle.config["mounts"])
    tmpfs = {"destination": "/vol/a/b/c", "type": "tmpfs", "source": "tmpfs"}
    bind = {"destination": "/vol/a/f.sock", "type": "bind", "source": str(src),
            "options": ["bind"]}
    for m in (tmpfs, bind):
        # the in-root target does not exist: refused (never created on the host)
        bundle.config["mounts"] = [*base_mounts, m]
        bundle.save()
        res = run(runtime, bundle)
        assert res.code == 1 and "/vol/a" in res.err, res
    # once it exists inside the rootfs, everything is created there
    inside = os.path.join(bundle.rootfs, canary.lstrip("/"), "dir")
    os.makedirs(inside)
    bundle.config["mounts"] = [*base_mounts, tmpfs, bind]
    bundle.set_args("sh", "-c", "cat /vol/a/f.sock; grep -c ' /vol/a/b/c \\| "
                    f"{canary}/dir/b/c ' /proc/self/mountinfo")
    res = run(runtime, bundle)
    assert res.code == 0 and res.out.split() == ["x", "1"], res
    assert sorted(os.listdir(inside)) == ["b", "f.sock"]


@pytest.mark.stress
def test_case06_symlinked_parent_race(runtime: Runtime, bundle: Bundle, probe_binary: str,
                                      canary: str, tmp_path: Path) -> None:
    """An attacker exchanges /vol/a between a directory and a symlink to the host canary
    while the runtime creates /vol/a/b/c: directories appear only inside the volume."""
    vol = tmp_path / "vol"
    (vol / "a").mkdir(parents=True)
    os.symlink("/../../../.." + canary + "/dir", vol / "a.lnk")
    add_bind(bundle, str(vol), "/vol")
    bundle.config["mounts"].append({"destination": "/vol/a/b/c", "type": "tmpfs",
                                    "source": "tmpfs"})
    bundle.set_args("true")
    stop = tmp_path / "stop"
    swapper = subprocess.Popen([probe_binary, "swap", str(vol), "a", "a.lnk", str(stop)],
                               stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(20):
            res = run(runtime, bundle)
            assert res.code == 0 or "/vol/a" in res.err, res
    finally:
        stop.touch()
        out, _ = swapper.communicate(timeout=10)
    assert int(out.split()[1]) > 0, out
    found = sorted(os.path.relpath(os.path.join(b, d), vol)
                   for b, ds, _ in os.walk(vol) for d in ds
                   if not os.path.islink(os.path.join(b, d)))
    assert set(found) <= {"a", "a/b", "a/b/c"}, found


# -- case 7 --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["symlink", "file", "missing", "zero"])
def test_case07_fake_dev_null(runtime: Runtime, bundle: Bundle, tmp_path: Path,
                              kind: str) -> None:
    """/dev is a bind of a directory whose ``null`` is a symlink to core_pattern, a regular
    file, missing, or another device: masking must fail, never be skipped or misdirected."""
    dev = tmp_path / "dev"
    dev.mkdir()
    null = dev / "null"
    if kind == "symlink":
        os.symlink("/proc/sys/kernel/core_pattern", null)
    elif kind == "file":
        null.write_text("")
    elif kind == "zero":
        os.mknod(null, 0o666 | 0o020000, os.makedev(1, 5))
    drop_dev_mounts(bundle)
    add_bind(bundle, str(dev), "/dev")
    bundle.config["linux"]["maskedPaths"] = ["/proc/kcore", "/proc/keys", "/proc/timer_list"]
    # if /proc/keys were core_pattern, write it its own content (harmless; and the create
    # is expected to fail anyway)
    bundle.set_args("sh", "-c", "cat /proc/sys/kernel/core_pattern > /proc/keys")
    res = run(runtime, bundle)
    assert res.code == 1 and "/dev/null" in res.err, res
    assert sorted(os.listdir(dev)) == ([] if kind == "missing" else ["null"])


# -- case 8 --------------------------------------------------------------------------------

class ConsoleSocket:
    """The caller's --console-socket: receives the pty master and reads what it says."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        self.srv.settimeout(20)
        self.data = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        with conn:
            _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        for fd in fds:
            try:
                while chunk := os.read(fd, 4096):
                    self.data += chunk
            except OSError:
                pass
            os.close(fd)

    def close(self) -> bytes:
        self.srv.close()
        self.thread.join(timeout=10)
        return self.data


def _console_bundle(bundle: Bundle, keep_devpts: bool) -> None:
    drop_dev_mounts(bundle, keep=("/dev/pts",) if keep_devpts else ())
    bundle.config["process"]["terminal"] = True
    # core_pattern's own content: the write reaches the terminal, and would change nothing
    # if it ever reached core_pattern
    bundle.set_args("sh", "-c", "cat /proc/sys/kernel/core_pattern > /dev/console; "
                    "ls -lL /dev/console; echo done")


@pytest.mark.parametrize("variant", ["devpts", "console-symlink", "pts-symlinks",
                                     "ptmx-symlink"])
def test_case08_console_and_pts_symlinks(runtime: Runtime, bundle: Bundle, tmp_path: Path,
                                         variant: str) -> None:
    """terminal: true with the image's own /dev (no tmpfs): /dev/console, /dev/pts/N or
    /dev/ptmx are symlinks to core_pattern. ``devpts`` is the control: nothing planted."""
    dev = os.path.join(bundle.rootfs, "dev")
    target = "/proc/sys/kernel/core_pattern"
    _console_bundle(bundle, keep_devpts=variant in ("devpts", "console-symlink"))
    if variant == "console-symlink":
        os.symlink(target, os.path.join(dev, "console"))
    elif variant == "pts-symlinks":
        os.makedirs(os.path.join(dev, "pts"))
        for n in range(8):
            os.symlink(target, os.path.join(dev, "pts", str(n)))
        os.mknod(os.path.join(dev, "ptmx"), 0o666 | 0o020000, os.makedev(5, 2))
    elif variant == "ptmx-symlink":
        os.symlink(target, os.path.join(dev, "ptmx"))
    sock = ConsoleSocket(str(tmp_path / "console.sock"))
    res = runtime("run", "--console-socket", sock.path, "--bundle", bundle.path, unique_id(),
                  check=False, timeout=30)
    data = sock.close().decode(errors="replace")
    if res.code == 0:
        # The write went to the terminal (the master got it) and /dev/console is a pty
        # (major 136), not a procfs file.
        assert variant in ("devpts", "pts-symlinks"), (res, data)
        with open("/proc/sys/kernel/core_pattern") as f:
            assert f.read().strip() in data and "done" in data, data
        assert re.search(r"^c.*136,\s*\d+ .*/dev/console", data, re.M), data
    else:
        assert variant != "devpts", (res, data)
        assert res.code == 1 and re.search(r"/dev/(console|ptmx|pts)", res.err), (res, data)
    # host_guard: core_pattern is unchanged


# -- case 9 (deterministic stand-in, unit level) -------------------------------------------

def _in_child(fn: object) -> int:
    """Run ``fn`` in a forked child with private mount and network namespaces; exit code."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            from isobox.linux import syscalls as sc

            sc.unshare(sc.CLONE_NEWNS | sc.CLONE_NEWNET)
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            code = fn()  # type: ignore[operator]
        except BaseException as e:
            os.write(2, f"child: {e!r}\n".encode())
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_case09_procfs_writes_are_verified(tmp_path: Path) -> None:
    """The runtime's procfs-write helper (sysctls, oom_score_adj) refuses a tmpfs laid out
    like /proc, a symlink (to a stand-in for /proc/sysrq-trigger) in place of the file, a
    procfs subdirectory as root, and a mount over the file; nothing is written."""
    from isobox.errors import SystemSetupError
    from isobox.linux import safepath
    from isobox.linux import syscalls as sc
    from isobox.runtime.rootfs import write_sysctls

    fake = tmp_path / "fakeproc"
    (fake / "sys" / "net" / "ipv4").mkdir(parents=True)
    sysrq = tmp_path / "sysrq-trigger"
    sysrq.write_text("")
    (fake / "sys" / "net" / "ipv4" / "ip_forward").write_text("0\n")
    sc.mount("tmpfs", str(fake), "tmpfs")
    try:
        (fake / "sys" / "net" / "ipv4").mkdir(parents=True)
        os.symlink(str(sysrq), fake / "sys" / "net" / "ipv4" / "ip_forward")
        with pytest.raises(SystemSetupError, match="not procfs"):
            write_sysctls({"net.ipv4.ip_forward": "1"}, proc=str(fake))
    finally:
        sc.umount2(str(fake))
    with pytest.raises(SystemSetupError, match="not procfs"):
        write_sysctls({"net.ipv4.ip_forward": "1"}, proc=str(fake))
    with pytest.raises(SystemSetupError, match="unexpected inode"):
        write_sysctls({"net.ipv4.ip_forward": "1"}, proc="/proc/sys")
    procfd = safepath.open_procfs("/proc")
    try:
        with pytest.raises(SystemSetupError, match="symlink or a mount point"):
            safepath.proc_write(procfd, "mounts", b"x")  # /proc/mounts -> self/mounts
    finally:
        os.close(procfd)
    assert sysrq.read_text() == ""

    bait = tmp_path / "bait"
    bait.write_text("bait\n")

    def mounted_over() -> int:
        """A file bind-mounted over ip_forward (in a private netns): the container's /proc
        is refused (mount point), the private procfs writes the real file."""
        from isobox.linux import syscalls as sc

        sc.mount(str(bait), "/proc/sys/net/ipv4/ip_forward", None, sc.MS_BIND)
        try:
            write_sysctls({"net.ipv4.ip_forward": "1"}, proc="/proc")
            return 2
        except SystemSetupError as e:
            if "mount point" not in str(e):
                return 3
        write_sysctls({"net.ipv4.ip_forward": "1"})  # the private procfs
        fd = safepath.private_procfs()
        try:
            rd = os.open("sys/net/ipv4/ip_forward", os.O_RDONLY, dir_fd=fd)
            value = os.read(rd, 10)
            os.close(rd)
        finally:
            os.close(fd)
        return 0 if value == b"1\n" else 4

    assert _in_child(mounted_over) == 0
    assert bait.read_text() == "bait\n"


def test_case09_runtime_writes_go_through_the_verified_helper(runtime: Runtime, bundle: Bundle,
                                                             tmp_path: Path) -> None:
    """End to end, the runtime's own procfs writes (a sysctl, oom_score_adj at create and at
    exec) still land where they belong."""
    import json

    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    bundle.config["process"]["oomScoreAdj"] = 500
    bundle.set_args("sleep", "60")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    proc = dict(bundle.config["process"], oomScoreAdj=600,
                args=["cat", "/proc/1/oom_score_adj", "/proc/self/oom_score_adj",
                      "/proc/sys/net/ipv4/ip_forward"])
    (tmp_path / "process.json").write_text(json.dumps(proc))
    out = runtime("exec", "-p", str(tmp_path / "process.json"), cid).out
    assert out.split() == ["500", "600", "1"], out
    runtime("delete", "--force", cid)


# -- case 10 -------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["absolute", "relative"])
def test_case10_dev_is_a_symlink_outside(runtime: Runtime, bundle: Bundle, form: str) -> None:
    """crun's test_dev_symlink_does_not_populate_outside_rootfs: rootfs/dev points at a
    host directory holding a marker ``ptmx``; no /dev tmpfs in the config."""
    outside = f"/var/tmp/{RUN_PREFIX}-outside-dev"
    os.makedirs(outside)
    try:
        Path(outside, "ptmx").write_text("marker\n")
        dev = os.path.join(bundle.rootfs, "dev")
        os.rmdir(dev)
        os.symlink(outside if form == "absolute" else "../../../../../../.." + outside, dev)
        for keep in ((), ("/dev/pts", "/dev/shm", "/dev/mqueue")):
            drop_dev_mounts(bundle, keep=keep)
            bundle.set_args("ls", "/dev")
            res = run(runtime, bundle)
            # fails, or /dev was resolved inside the rootfs
            if res.code == 0:
                assert os.path.isdir(os.path.join(bundle.rootfs, outside.lstrip("/"))), res
            assert os.listdir(outside) == ["ptmx"], (keep, res)
            assert Path(outside, "ptmx").read_text() == "marker\n"
            assert not os.path.islink(os.path.join(outside, "ptmx"))
    finally:
        shutil.rmtree(outside, ignore_errors=True)
