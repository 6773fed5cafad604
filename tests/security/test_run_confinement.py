"""Generated specs run through the real runtime: capabilities, read-only root, users,
ulimits, memory limit, seccomp (case 17), image configs that try to weaken the sandbox
(case 41) and hostile user databases (case 43)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from harness import RUN_PREFIX, Runtime, unique_id
from isobox.engine import seccomp_profile as sp
from isobox.engine.build_hook import BLOCKED_SYSCALLS
from isobox.engine.options import CreateOptions, DeviceSpec, Resources, Ulimit
from isobox.engine.spec import INIT_CANDIDATES, SpecInputs, build_spec
from isobox.errors import ImageError
from isobox.linux import capabilities
from isobox.oci.defaults import DOCKER_DEFAULT_CAPS

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def rootfs(busybox_rootfs: str, tmp_path: Any) -> str:
    root = str(tmp_path / "rootfs")
    shutil.copytree(busybox_rootfs, root, symlinks=True)
    with open(os.path.join(root, "etc/passwd"), "a") as f:
        f.write("app:x:1000:1000::/home/app:/bin/sh\n")
    with open(os.path.join(root, "etc/group"), "a") as f:
        f.write("app:x:1000:\nstaff:x:50:app\n")
    return root


def make_spec(rootfs: str, cid: str, image: dict[str, Any] | None = None,
              **opts: Any) -> dict[str, Any]:
    init = opts.pop("init_binary", "")
    netns = opts.pop("netns_path", "")
    return build_spec(SpecInputs(container_id=cid, options=CreateOptions(image="img", **opts),
                                 image_config=image or {}, rootfs=rootfs, netns_path=netns,
                                 etc_files={}, extra_mounts=[], cgroups_path=f"/{cid}",
                                 init_binary=init))


def run(runtime: Runtime, rootfs: str, tmp_path: Any, script: str,
        image: dict[str, Any] | None = None, **opts: Any) -> tuple[int, str, str]:
    cid = unique_id("conf")
    spec = make_spec(rootfs, cid, image, command=("sh", "-c", script), **opts)
    bundle = tmp_path / f"bundle-{cid}"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(spec))
    res = runtime("run", "--bundle", str(bundle), cid, check=False, timeout=30)
    return res.code, res.out, res.err


def status_field(out: str, name: str) -> str:
    for line in out.splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in {out!r}")


def mask(caps: list[str]) -> str:
    return f"{capabilities.to_mask({capabilities.number(c) for c in caps}):016x}"


# --------------------------------------------------------------------------- capabilities

def test_default_caps_and_seccomp(runtime: Runtime, rootfs: str, tmp_path: Any) -> None:
    code, out, err = run(runtime, rootfs, tmp_path, "cat /proc/self/status")
    assert code == 0, err
    assert status_field(out, "CapEff") == "00000000a80425fb"
    assert status_field(out, "CapBnd") == "00000000a80425fb"
    assert status_field(out, "CapAmb") == "0000000000000000"
    assert status_field(out, "Seccomp") == "2"
    assert status_field(out, "NoNewPrivs") == "0"


def test_cap_drop_and_add(runtime: Runtime, rootfs: str, tmp_path: Any) -> None:
    code, out, err = run(runtime, rootfs, tmp_path, "cat /proc/self/status",
                         cap_drop=("CHOWN", "net_raw"), cap_add=("CAP_NET_ADMIN",),
                         no_new_privileges=True)
    assert code == 0, err
    want = [c for c in DOCKER_DEFAULT_CAPS if c not in ("CAP_CHOWN", "CAP_NET_RAW")]
    want.append("CAP_NET_ADMIN")
    assert status_field(out, "CapEff") == mask(want)
    assert status_field(out, "CapBnd") == mask(want)
    assert status_field(out, "NoNewPrivs") == "1"
    code, out, _ = run(runtime, rootfs, tmp_path, "chown 1 /tmp", cap_drop=("CHOWN",))
    assert code != 0


def test_non_root_user_by_name(runtime: Runtime, rootfs: str, tmp_path: Any) -> None:
    code, out, err = run(runtime, rootfs, tmp_path, "id -u; id -g; id -G; "
                         "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status", user="app")
    assert code == 0, err
    lines = out.split()
    assert lines[:4] == ["1000", "1000", "1000", "50"]
    assert "CapEff:\t0000000000000000" in out and "CapBnd:\t00000000a80425fb" in out


def test_read_only_root(runtime: Runtime, rootfs: str, tmp_path: Any) -> None:
    code, out, err = run(runtime, rootfs, tmp_path, "touch /newfile; echo rc=$?",
                         read_only=True)
    assert code == 0, err
    assert "rc=1" in out and "Read-only file system" in err
    assert not os.path.exists(os.path.join(rootfs, "newfile"))
    code, out, _ = run(runtime, rootfs, tmp_path, "touch /newfile; echo rc=$?")
    assert "rc=0" in out


def test_ulimit_nofile(runtime: Runtime, rootfs: str, tmp_path: Any) -> None:
    code, out, err = run(runtime, rootfs, tmp_path, "ulimit -Sn; ulimit -Hn",
                         resources=Resources(ulimits=(Ulimit("nofile", 512, 1024),)))
    assert code == 0, err
    assert out.split() == ["512", "1024"]


def test_memory_limit_in_cgroup(runtime: Runtime, rootfs: str, tmp_path: Any) -> None:
    script = ("cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || "
              "cat /sys/fs/cgroup/memory.max")
    code, out, err = run(runtime, rootfs, tmp_path, script,
                         resources=Resources(memory=64 << 20, pids_limit=20))
    assert code == 0, err
    assert out.strip() == str(64 << 20)


def test_device(runtime: Runtime, rootfs: str, tmp_path: Any) -> None:
    code, out, err = run(runtime, rootfs, tmp_path, "echo x > /dev/mynull && echo ok",
                         devices=(DeviceSpec("/dev/null", "/dev/mynull"),))
    assert code == 0, err
    assert out.strip() == "ok"


@pytest.mark.skipif(not any(os.path.exists(p) for p in INIT_CANDIDATES),
                    reason="no static init (Debian package tini)")
def test_init(runtime: Runtime, rootfs: str, tmp_path: Any) -> None:
    code, out, err = run(runtime, rootfs, tmp_path, "tr '\\0' ' ' < /proc/1/cmdline",
                         init=True, init_binary=next(p for p in INIT_CANDIDATES
                                                     if os.path.exists(p)))
    assert code == 0, err
    assert out.startswith("/sbin/docker-init -- sh -c")


def test_privileged(runtime: Runtime, rootfs: str, tmp_path: Any) -> None:
    code, out, err = run(runtime, rootfs, tmp_path, "cat /proc/self/status; "
                         "touch /sys/fs/cgroup/x 2>&1; ls /dev/null /dev/zero >/dev/null; "
                         "grep -c ' /proc/kcore ' /proc/self/mountinfo; true", privileged=True)
    assert code == 0, err
    assert status_field(out, "Seccomp") == "0"
    # every capability isobox itself holds (the host may withhold some, e.g. SYS_RESOURCE)
    assert status_field(out, "CapEff") == f"{capabilities.read_status()['CapBnd']:016x}"
    assert out.strip().endswith("0")  # /proc/kcore is not masked


def test_host_network_keeps_confinement(runtime: Runtime, rootfs: str, tmp_path: Any) -> None:
    code, out, err = run(runtime, rootfs, tmp_path, "cat /proc/self/status; "
                         "touch /sys/x; echo sys=$?; echo ---; cat /proc/net/dev",
                         netns_path=None)
    assert code == 0, err
    assert status_field(out, "Seccomp") == "2" and "sys=1" in out
    assert status_field(out, "CapEff") == "00000000a80425fb"
    with open("/proc/net/dev") as f:
        host_ifaces = {ln.split(":")[0].strip() for ln in f.readlines()[2:]}
    inside = {ln.split(":")[0].strip() for ln in out.split("---")[1].strip().splitlines()[2:]}
    assert inside == host_ifaces  # the host's network namespace


# --------------------------------------------------------------------------- seccomp

def test_seccomp_blocks_unshare_and_mount_by_default(runtime: Runtime, rootfs: str,
                                                     tmp_path: Any) -> None:
    script = "unshare -U true; echo unshare=$?; mount -t tmpfs t /tmp; echo mount=$?"
    code, out, err = run(runtime, rootfs, tmp_path, script)
    assert code == 0, err
    assert "unshare=1" in out and "mount=0" not in out
    # unconfined: a user namespace needs no capability, so only seccomp refused it
    code, out, err = run(runtime, rootfs, tmp_path, script, seccomp_profile="unconfined")
    assert "unshare=0" in out, err
    # CAP_SYS_ADMIN: mount works, unless the profile (here: the default one for the
    # default caps, given as a file) refuses it
    code, out, err = run(runtime, rootfs, tmp_path, script, cap_add=("SYS_ADMIN",))
    assert "unshare=0" in out and "mount=0" in out, err
    path = tmp_path / "default-caps.json"
    path.write_text(json.dumps(sp.default_profile(DOCKER_DEFAULT_CAPS)))
    code, out, err = run(runtime, rootfs, tmp_path, script, cap_add=("SYS_ADMIN",),
                         seccomp_profile=str(path))
    assert "unshare=1" in out and "mount=0" not in out, err


_PROBE = textwrap.dedent("""
    import ctypes, json, os, sys
    from isobox.linux import seccomp
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    NR = {"keyctl": 250, "add_key": 248, "request_key": 249, "bpf": 321, "kexec_load": 246,
          "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
          "delete_module": 176, "mount": 165, "umount2": 166, "pivot_root": 155,
          "setns": 308, "fsopen": 430, "open_tree": 428, "move_mount": 429,
          "open_by_handle_at": 304, "name_to_handle_at": 303, "perf_event_open": 298,
          "userfaultfd": 323, "acct": 163, "swapon": 167, "reboot": 169, "syslog": 103,
          "iopl": 172, "ioperm": 173, "quotactl": 179, "lookup_dcookie": 212,
          "io_uring_setup": 425, "io_uring_enter": 426, "clock_settime": 227,
          "settimeofday": 164, "kcmp": 312}
    seccomp.load(json.loads(sys.stdin.read()))
    def call(nr, *args):
        ctypes.set_errno(0)
        rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
        return 0 if rc >= 0 else ctypes.get_errno()
    out = {name: call(nr, 0, 0, 0, 0, 0) for name, nr in NR.items()}
    out["unshare(0)"] = call(272, 0)
    out["clone3"] = call(435, 0, 0)
    me = os.getpid()
    out["clone(NEWUSER)"] = call(56, 0x10000000 | 17, 0, 0, 0, 0)
    if os.getpid() != me:  # allowed: this is the child
        os._exit(0)
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pass
    out["personality(0x40000)"] = call(135, 0x0040000)
    out["personality(query)"] = call(135, 0xffffffff)
    for dom, name in ((40, "vsock"), (38, "alg"), (1, "unix")):
        out[f"socket({name})"] = call(41, dom, 1, 0)
    out["getpid"] = call(39)
    pid = os.fork()  # clone without namespace flags still works
    if pid == 0:
        os._exit(7)
    out["fork"] = os.waitpid(pid, 0)[1] >> 8
    print(json.dumps(out))
""")


def _probe(profile: dict[str, Any]) -> dict[str, int]:
    proc = subprocess.run([sys.executable, "-c", _PROBE], input=json.dumps(profile),
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, int] = json.loads(proc.stdout)
    return result


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 syscall numbers")
def test_default_profile_refuses_case17_syscalls() -> None:
    """Case 17 (64-bit ABI): every call refused with EPERM, clone3 with ENOSYS."""
    got = _probe(sp.default_profile(DOCKER_DEFAULT_CAPS))
    eperm = {k: v for k, v in got.items() if k not in (
        "clone3", "getpid", "fork", "personality(query)", "socket(unix)")}
    assert eperm == dict.fromkeys(eperm, 1), eperm
    assert got["clone3"] == 38
    assert got["getpid"] == 0 and got["fork"] == 7
    assert got["personality(query)"] == 0 and got["socket(unix)"] == 0
    for name in BLOCKED_SYSCALLS:
        if name in got:
            assert got[name] == 1, name


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86_64 syscall numbers")
def test_sys_admin_relaxes_namespace_calls() -> None:
    got = _probe(sp.default_profile([*DOCKER_DEFAULT_CAPS, "CAP_SYS_ADMIN"]))
    assert got["unshare(0)"] == 0  # allowed; unshare(0) is a no-op
    assert got["clone(NEWUSER)"] == 0
    assert got["clone3"] != 38  # reaches the kernel (EFAULT/EINVAL for a NULL struct)
    assert got["keyctl"] == 1 and got["io_uring_setup"] == 1


# --------------------------------------------------------------------------- case 41

HOSTILE_IMAGE: dict[str, Any] = {
    "Labels": {"io.podman.annotations.seccomp": "unconfined",
               "io.podman.annotations.checkpoint.runtime.name": "x",
               "run.oci.seccomp_fail_unknown_syscall": "0",
               "io.kubernetes.cri.sandbox-id": "x", "security.privileged": "true",
               "seccomp": "unconfined", "com.isobox.privileged": "true"},
    "annotations": {"run.oci.keep_original_groups": "1"},
    "Volumes": {"/data": {}},
    "Privileged": True, "CapAdd": ["ALL"], "SecurityOpt": ["seccomp=unconfined"],
    "HostConfig": {"Privileged": True, "Binds": ["/:/host"], "CapAdd": ["ALL"]},
    "Mounts": [{"Type": "bind", "Source": "/", "Destination": "/host"}],
    "Entrypoint": ["sh", "-c"],
    "Cmd": ["cat /proc/self/status; echo ---; cut -d' ' -f5,9 /proc/self/mountinfo"],
}


def test_image_config_cannot_weaken_sandbox(runtime: Runtime, rootfs: str,
                                            tmp_path: Any) -> None:
    script = HOSTILE_IMAGE["Cmd"][0]
    code, base, err = run(runtime, rootfs, tmp_path, script)
    assert code == 0, err
    cid = unique_id("c41")
    spec = make_spec(rootfs, cid, HOSTILE_IMAGE)
    assert spec["process"]["args"] == ["sh", "-c", script]
    bundle = tmp_path / "bundle-41"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps(spec))
    res = runtime("run", "--bundle", str(bundle), cid, check=False, timeout=30)
    assert res.code == 0, res.err
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "Seccomp", "NoNewPrivs"):
        assert status_field(res.out, field) == status_field(base, field), field
    assert status_field(res.out, "Seccomp") == "2"
    assert res.out.split("---")[1] == base.split("---")[1]  # the same mounts
    assert "/host" not in res.out


# --------------------------------------------------------------------------- case 43

def _hostile_passwd(root: str, kind: str) -> None:
    passwd = os.path.join(root, "etc/passwd")
    os.unlink(passwd)
    if kind == "dev-zero":
        os.mknod(os.path.join(root, "dev/zero"), stat.S_IFCHR | 0o666, os.makedev(1, 5))
        os.symlink("/dev/zero", passwd)
    elif kind == "fifo":
        os.mkfifo(passwd)
    elif kind == "huge":
        with open(passwd, "wb") as f:
            f.write(b"app:x:1000:1000::/:/bin/sh\n")
            f.truncate(11 * 1024 * 1024)
    elif kind == "proc":
        os.symlink("/proc/self/environ", passwd)


@pytest.mark.parametrize(("kind", "message"), [
    ("dev-zero", "not a regular file"),
    ("fifo", "not a regular file"),
    ("huge", "larger than 10485760 bytes"),
    ("proc", "unable to find user app"),  # resolved inside the rootfs: nothing there
])
def test_hostile_passwd_fails_fast(rootfs: str, kind: str, message: str) -> None:
    _hostile_passwd(rootfs, kind)
    start = time.monotonic()
    with pytest.raises(ImageError, match=message):
        make_spec(rootfs, f"{RUN_PREFIX}-c43", command=("true",), user="app")
    assert time.monotonic() - start < 2
