"""build_spec output: what comes from the image, what from the options, and Docker's
defaults; the default seccomp profile and Docker-format profile files."""

from __future__ import annotations

import json
import os
import platform
import resource
from dataclasses import replace
from typing import Any

import pytest

from isobox.engine import seccomp_profile as sp
from isobox.engine.build_hook import BLOCKED_SYSCALLS
from isobox.engine.options import CreateOptions, DeviceSpec, Resources, Ulimit
from isobox.engine.spec import (
    DEFAULT_PATH,
    SpecInputs,
    build_spec,
    image_volumes,
    resolve_user,
)
from isobox.errors import ConfigError, ImageError
from isobox.linux import seccomp as lseccomp
from isobox.oci.defaults import DEFAULT_MASKED_PATHS, DOCKER_DEFAULT_CAPS

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
GROUP = "root:x:0:\napp:x:1000:\nwheel:x:10:app\naudio:x:29:other,app\n"


@pytest.fixture
def rootfs(tmp_path: Any) -> str:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    return str(root)


def spec_for(rootfs: str, image: dict[str, Any] | None = None, netns: str | None = "",
             etc: dict[str, str] | None = None, init_binary: str = "",
             **opts: Any) -> dict[str, Any]:
    opts.setdefault("command", ("true",))
    options = CreateOptions(image="img", **opts)
    return build_spec(SpecInputs(container_id="0123456789abcdef", options=options,
                                 image_config=image or {}, rootfs=rootfs, netns_path=netns,
                                 etc_files=etc or {}, extra_mounts=[],
                                 cgroups_path="/isobox/0123456789abcdef", init_binary=init_binary))


def cfg_err(fn: Any, *args: Any, **kw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kw)
    return info.value


# --------------------------------------------------------------------------- process

@pytest.mark.parametrize(("image", "opts", "args"), [
    ({"Entrypoint": ["/ep"], "Cmd": ["a"]}, {"command": None}, ["/ep", "a"]),
    ({"Entrypoint": ["/ep"], "Cmd": ["a"]}, {"command": ("b",)}, ["/ep", "b"]),
    ({"Entrypoint": ["/ep"], "Cmd": ["a"]}, {"command": None, "entrypoint": ("/x",)}, ["/x"]),
    ({"Entrypoint": ["/ep"], "Cmd": ["a"]}, {"command": ("c",), "entrypoint": ("/x",)},
     ["/x", "c"]),
    ({"Entrypoint": ["/ep"], "Cmd": ["a"]}, {"command": ("sh",), "entrypoint": ()}, ["sh"]),
    ({"Cmd": ["sh", "-c", "x"]}, {"command": None}, ["sh", "-c", "x"]),
    ({"Cmd": "echo hi"}, {"command": None}, ["/bin/sh", "-c", "echo hi"]),
])
def test_argv(rootfs: str, image: dict[str, Any], opts: dict[str, Any], args: list[str]
              ) -> None:
    assert spec_for(rootfs, image, **opts)["process"]["args"] == args


def test_no_command(rootfs: str) -> None:
    assert cfg_err(spec_for, rootfs, {}, command=None).message == "no command specified"
    e = cfg_err(spec_for, rootfs, {"Cmd": [1]}, command=None)
    assert e.where == "image config: Cmd"


def test_env(rootfs: str) -> None:
    env = spec_for(rootfs, {"Env": ["A=img", "B=img"]}, env=("B=opt", "C=opt"))["process"]["env"]
    assert env == [DEFAULT_PATH, "HOSTNAME=0123456789ab", "A=img", "B=opt", "C=opt"]
    env = spec_for(rootfs, {"Env": ["PATH=/x"]}, tty=True, hostname="h")["process"]["env"]
    assert env == ["HOSTNAME=h", "TERM=xterm", "PATH=/x"]
    env = spec_for(rootfs, {}, env=("HOSTNAME=mine",))["process"]["env"]
    assert "HOSTNAME=mine" in env and "HOSTNAME=0123456789ab" not in env


def test_cwd_terminal_hostname_root(rootfs: str) -> None:
    s = spec_for(rootfs, {"WorkingDir": "/srv//app/"}, tty=True, read_only=True)
    assert s["process"]["cwd"] == "/srv/app" and s["process"]["terminal"] is True
    assert s["root"] == {"path": rootfs, "readonly": True}
    assert s["hostname"] == "0123456789ab"
    assert spec_for(rootfs, {"WorkingDir": "/a"}, workdir="/b")["process"]["cwd"] == "/b"
    assert "needs to be an absolute path" in cfg_err(spec_for, rootfs, workdir="rel").message
    assert spec_for(rootfs)["root"]["readonly"] is False
    assert spec_for(rootfs, hostname="web")["hostname"] == "web"


def test_user_lookup(rootfs: str) -> None:
    # moby's getUser: the primary gid first in the supplementary groups (CVE-2022-36109)
    assert resolve_user(rootfs, "app") == (1000, 1000, [1000, 10, 29])
    assert resolve_user(rootfs, "") == (0, 0, [0])
    assert resolve_user(rootfs, "1000") == (1000, 1000, [1000, 10, 29])
    assert resolve_user(rootfs, "4242") == (4242, 0, [0])
    assert resolve_user(rootfs, "app:wheel") == (1000, 10, [10])
    assert resolve_user(rootfs, "5:7") == (5, 7, [7])
    assert resolve_user(rootfs, ":7") == (0, 7, [7])  # empty user: uid 0, as moby
    assert resolve_user(rootfs, ":wheel") == (0, 10, [10])
    with pytest.raises(ImageError, match="unable to find user nobody: no matching entries"):
        resolve_user(rootfs, "nobody")
    with pytest.raises(ImageError, match="unable to find group nogroup"):
        resolve_user(rootfs, "app:nogroup")
    s = spec_for(rootfs, {"User": "app"})
    assert s["process"]["user"] == {"uid": 1000, "gid": 1000,
                                    "additionalGids": [1000, 10, 29]}
    s = spec_for(rootfs, {"User": "app"}, user="root")
    assert s["process"]["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}


def test_capabilities(rootfs: str) -> None:
    caps = spec_for(rootfs)["process"]["capabilities"]
    assert sorted(caps["bounding"]) == sorted(DOCKER_DEFAULT_CAPS)
    assert caps["effective"] == caps["permitted"] == caps["bounding"]
    assert "ambient" not in caps and "inheritable" not in caps
    caps = spec_for(rootfs, cap_drop=("chown", "CAP_NET_RAW"), cap_add=("SYS_ADMIN",))[
        "process"]["capabilities"]["bounding"]
    assert "CAP_CHOWN" not in caps and "CAP_NET_RAW" not in caps and "CAP_SYS_ADMIN" in caps
    caps = spec_for(rootfs, cap_drop=("ALL",), cap_add=("net_bind_service",))[
        "process"]["capabilities"]["bounding"]
    assert caps == ["CAP_NET_BIND_SERVICE"]
    caps = spec_for(rootfs, cap_add=("ALL",), cap_drop=("SYS_ADMIN",))[
        "process"]["capabilities"]["bounding"]
    assert "CAP_SYS_MODULE" in caps and "CAP_SYS_ADMIN" not in caps
    assert cfg_err(spec_for, rootfs, cap_add=("CAP_X",)).message == 'unknown capability: "CAP_X"'
    assert cfg_err(spec_for, rootfs, cap_drop=("bogus",)).message == (
        'unknown capability: "CAP_BOGUS"')
    caps = spec_for(rootfs, user="app")["process"]["capabilities"]
    assert caps["effective"] == caps["permitted"] == [] and caps["bounding"]


def test_defaults(rootfs: str) -> None:
    s = spec_for(rootfs)
    p, linux = s["process"], s["linux"]
    assert p["noNewPrivileges"] is False and "rlimits" not in p and "oomScoreAdj" not in p
    assert "annotations" not in s and "sysctl" not in linux
    assert linux["cgroupsPath"] == "/isobox/0123456789abcdef"
    assert linux["maskedPaths"][:len(DEFAULT_MASKED_PATHS)] == list(DEFAULT_MASKED_PATHS)
    assert "/proc/sys" in linux["readonlyPaths"]
    assert [n["type"] for n in linux["namespaces"]] == [
        "pid", "ipc", "uts", "mount", "cgroup", "network"]
    assert linux["resources"] == {"devices": [{"allow": False, "access": "rwm"}]}
    mounts = {m["destination"]: m for m in s["mounts"]}
    assert "size=65536k" in mounts["/dev/shm"]["options"]
    assert "ro" in mounts["/sys"]["options"] and "ro" in mounts["/sys/fs/cgroup"]["options"]
    assert {"/dev/pts", "/dev/mqueue", "/proc", "/dev"} <= set(mounts)
    assert mounts["/proc"]["options"] == ["nosuid", "noexec", "nodev"]  # moby's, not runc's
    assert linux["seccomp"] == sp.default_profile(DOCKER_DEFAULT_CAPS)
    assert spec_for(rootfs, no_new_privileges=True)["process"]["noNewPrivileges"] is True


def test_network_namespace(rootfs: str) -> None:
    ns = spec_for(rootfs, netns="/run/netns/x")["linux"]["namespaces"]
    assert {"type": "network", "path": "/run/netns/x"} in ns
    s = spec_for(rootfs, netns=None)
    assert all(n["type"] != "network" for n in s["linux"]["namespaces"])
    assert s["hostname"] == platform.node()
    sysfs = next(m for m in s["mounts"] if m["destination"] == "/sys")
    assert sysfs["type"] == "bind" and "ro" in sysfs["options"]


def test_etc_files(rootfs: str) -> None:
    etc = {"/etc/hosts": "/h/hosts", "/etc/resolv.conf": "/h/resolv"}
    s = spec_for(rootfs, etc=etc)
    hosts = next(m for m in s["mounts"] if m["destination"] == "/etc/hosts")
    assert hosts["source"] == "/h/hosts" and "rw" in hosts["options"]
    s = spec_for(rootfs, etc=etc, read_only=True)
    hosts = next(m for m in s["mounts"] if m["destination"] == "/etc/hosts")
    assert "ro" in hosts["options"]


def test_resources(rootfs: str) -> None:
    def res(**kw: Any) -> dict[str, Any]:
        out: dict[str, Any] = spec_for(rootfs, resources=Resources(**kw))["linux"]["resources"]
        return out

    assert res(memory=64 << 20)["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert res(memory=64 << 20, memory_swap=-1)["memory"]["swap"] == -1
    assert res(memory=64 << 20, memory_swap=100 << 20)["memory"]["swap"] == 100 << 20
    assert res(nano_cpus=500_000_000)["cpu"] == {"quota": 50_000, "period": 100_000}
    assert res(cpu_shares=512, cpuset_cpus="0")["cpu"] == {"shares": 512, "cpus": "0"}
    assert res(pids_limit=50)["pids"] == {"limit": 50}
    assert "pids" not in res(pids_limit=-1)
    e = cfg_err(res, memory=64 << 20, memory_swap=32 << 20)
    assert e.message.startswith("Minimum memoryswap limit should be larger than memory limit")
    assert "always set the Memory limit" in cfg_err(res, memory_swap=64 << 20).message
    assert "Minimum memory limit allowed is 6MB" in cfg_err(res, memory=1 << 20).message
    assert "Requested CPUs are not available" in cfg_err(res, cpuset_cpus="0-4095").message
    assert "invalid value" in cfg_err(res, cpuset_cpus="a").message


def test_ulimits(rootfs: str) -> None:
    s = spec_for(rootfs, resources=Resources(ulimits=(Ulimit("nofile", 100, 200),)))
    assert s["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY:
        e = cfg_err(spec_for, rootfs,
                    resources=Resources(ulimits=(Ulimit("nofile", 1, hard + 1),)))
        assert "above the host's hard limit" in e.message


def test_devices(rootfs: str) -> None:
    st = os.stat("/dev/null")
    s = spec_for(rootfs, devices=(DeviceSpec("/dev/null", "/dev/mynull", "r"),))
    assert s["linux"]["devices"] == [{"path": "/dev/mynull", "type": "c", "major": 1,
                                      "minor": 3, "fileMode": 0o666, "uid": st.st_uid,
                                      "gid": st.st_gid}]
    assert {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "r"} in \
        s["linux"]["resources"]["devices"]
    e = cfg_err(spec_for, rootfs, devices=(DeviceSpec("/dev/nope-x", "/dev/nope-x"),))
    assert e.message == ('error gathering device information while adding custom device '
                         '"/dev/nope-x": no such file or directory')
    e = cfg_err(spec_for, rootfs, devices=(DeviceSpec("/etc/hostname", "/dev/x"),))
    assert e.message.endswith("not a device node")


def test_privileged(rootfs: str) -> None:
    s = spec_for(rootfs, privileged=True, cap_drop=("ALL",))
    linux = s["linux"]
    assert "seccomp" not in linux and linux["maskedPaths"] == [] == linux["readonlyPaths"]
    assert "CAP_SYS_ADMIN" in s["process"]["capabilities"]["bounding"]
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in linux["devices"])
    for dest in ("/sys", "/sys/fs/cgroup"):
        m = next(m for m in s["mounts"] if m["destination"] == dest)
        assert "ro" not in m["options"]


def test_seccomp_options(rootfs: str, tmp_path: Any) -> None:
    assert "seccomp" not in spec_for(rootfs, seccomp_profile="unconfined")["linux"]
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]}))
    sec = spec_for(rootfs, seccomp_profile=str(path))["linux"]["seccomp"]
    assert sec == {"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]}
    sec = spec_for(rootfs, cap_add=("SYS_ADMIN",))["linux"]["seccomp"]
    assert "mount" in sec["syscalls"][0]["names"]


def test_init(rootfs: str) -> None:
    s = spec_for(rootfs, init=True, command=("sleep", "1"), init_binary="/bin/true")
    assert s["process"]["args"] == ["/sbin/docker-init", "--", "sleep", "1"]
    m = next(m for m in s["mounts"] if m["destination"] == "/sbin/docker-init")
    assert m["source"] == "/bin/true" and "ro" in m["options"]


def test_image_volumes() -> None:
    assert image_volumes({}) == []
    assert image_volumes({"Volumes": {"/data/": {}, "/a//b": {}, "/data": {}}}) == [
        "/a/b", "/data"]
    for bad in ("/../../../../var/tmp/canary", "/data/../etc", "rel", "/"):
        e = cfg_err(image_volumes, {"Volumes": {bad: {}}})
        assert e.where == "image config: Volumes" and bad in e.message


def test_image_config_cannot_weaken_sandbox(rootfs: str) -> None:
    """Case 41: only argv, env, cwd and user come from the image."""
    hostile = {
        "Labels": {"io.podman.annotations.seccomp": "unconfined", "security.privileged": "true",
                   "seccomp": "unconfined", "run.oci.keep_original_groups": "1",
                   "io.kubernetes.cri.sandbox-id": "x"},
        "annotations": {"run.oci.seccomp_fail_unknown_syscall": "0"},
        "Privileged": True, "CapAdd": ["ALL"], "SecurityOpt": ["seccomp=unconfined"],
        "HostConfig": {"Privileged": True, "Binds": ["/:/host"]},
        "Mounts": [{"Source": "/", "Destination": "/host"}],
        "Devices": [{"PathOnHost": "/dev/sda"}],
        "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["id"],
    }
    base = spec_for(rootfs, {}, command=("/bin/sh", "-c", "id"))
    evil = spec_for(rootfs, hostile, command=None)
    assert evil["process"]["args"] == base["process"]["args"]
    assert evil == base


# --------------------------------------------------------------------------- seccomp profile

def _unconditional_allows(profile: dict[str, Any]) -> set[str]:
    return {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"
            and not r.get("args") for n in r["names"]}


CASE17 = ("keyctl", "add_key", "request_key", "bpf", "kexec_load", "kexec_file_load",
          "init_module", "finit_module", "delete_module", "mount", "umount2", "pivot_root",
          "setns", "unshare", "fsopen", "open_tree", "move_mount", "open_by_handle_at",
          "perf_event_open", "userfaultfd", "acct", "swapon", "reboot", "syslog", "iopl",
          "ioperm", "quotactl", "lookup_dcookie", "io_uring_setup", "io_uring_enter",
          "clock_settime", "settimeofday", "clone3")


def test_default_profile_is_stricter_than_the_build_deny_list() -> None:
    prof = sp.default_profile(DOCKER_DEFAULT_CAPS)
    lseccomp.validate(prof)
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO" and prof["defaultErrnoRet"] == 1
    allowed = _unconditional_allows(prof)
    assert not allowed & set(BLOCKED_SYSCALLS)
    assert not allowed & set(CASE17)
    assert not allowed & set(sp.NEVER)
    assert {"read", "write", "execve", "openat", "chroot", "arch_prctl"} <= allowed
    assert "clone" not in allowed and "personality" not in allowed and "socket" not in allowed
    clone3 = next(r for r in prof["syscalls"] if r["names"] == ["clone3"])
    assert clone3["errnoRet"] == 38
    if platform.machine() == "x86_64":
        assert prof["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]


@pytest.mark.parametrize(("cap", "names"), [
    ("CAP_SYS_ADMIN", {"mount", "umount2", "setns", "unshare", "clone", "clone3",
                       "pivot_root"}),
    ("SYS_PTRACE", {"kcmp", "pidfd_getfd", "userfaultfd"}),
    ("CAP_SYS_PACCT", {"acct"}),
    ("CAP_SYS_MODULE", {"init_module", "finit_module", "delete_module"}),
    ("CAP_SYS_TIME", {"settimeofday", "clock_settime"}),
    ("CAP_SYS_BOOT", {"reboot"}),
])
def test_default_profile_cap_relaxations(cap: str, names: set[str]) -> None:
    assert not _unconditional_allows(sp.default_profile(DOCKER_DEFAULT_CAPS)) & names
    relaxed = _unconditional_allows(sp.default_profile([*DOCKER_DEFAULT_CAPS, cap]))
    assert names <= relaxed
    assert not relaxed & {"keyctl", "add_key", "io_uring_setup"}


def test_chroot_needs_sys_chroot() -> None:
    caps = [c for c in DOCKER_DEFAULT_CAPS if c != "CAP_SYS_CHROOT"]
    assert "chroot" not in _unconditional_allows(sp.default_profile(caps))


def test_load_docker_profile(tmp_path: Any) -> None:
    doc = {
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                     "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"name": "exit", "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW",
             "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["future"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "excludes": {"caps": ["CAP_SYS_ADMIN"]},
             "args": [{"index": 0, "value": 2114060288, "valueTwo": 0,
                       "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["arch"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
        ],
    }
    path = tmp_path / "docker.json"
    path.write_text(json.dumps(doc))
    prof = sp.load_profile(str(path))
    names = [r["names"] for r in prof["syscalls"]]
    assert names == [["read", "write"], ["exit"], ["ptrace"], ["clone"]]
    if platform.machine() == "x86_64":
        assert prof["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    admin = sp.load_profile(str(path), [*DOCKER_DEFAULT_CAPS, "CAP_SYS_ADMIN"])
    assert [r["names"] for r in admin["syscalls"]] == [["read", "write"], ["exit"], ["mount"],
                                                      ["ptrace"]]


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "invalid JSON"),
    ("[]", "must be a JSON object"),
    ('{"defaultAction": "SCMP_ACT_BOGUS"}', 'unknown action "SCMP_ACT_BOGUS"'),
    ('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": '
     '"SCMP_ACT_ERRNO"}]}', "must be a non-empty array"),
])
def test_load_profile_errors(tmp_path: Any, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    e = cfg_err(sp.load_profile, str(path))
    assert str(path) in str(e) and message in str(e)


def test_load_profile_refuses_fifo_and_missing(tmp_path: Any) -> None:
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    assert "not a regular file" in cfg_err(sp.load_profile, fifo).message
    e = cfg_err(sp.load_profile, str(tmp_path / "missing"))
    assert "No such file" in e.message and "missing" in e.where


def test_options_unchanged_by_spec(rootfs: str) -> None:
    opts = CreateOptions(image="img", command=("true",), cap_add=("SYS_ADMIN",))
    before = replace(opts)
    build_spec(SpecInputs("c", opts, {}, rootfs, "", {}, [], "/x"))
    assert opts == before
