"""Default confinement, catalogue cases 11-23, performed against the real ``isobox-runtime``
with what dockerd would ask for (Docker's capabilities, moby's masked and read-only paths,
Docker's default seccomp profile); ``host_guard`` runs the after-every-case checks."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

pytest.register_assert_rewrite("sec_helpers")  # before its import below: asserts in fixtures
from sec_helpers import (  # noqa: E402
    BLOCKED,
    DOCKER_CAP_MASK,
    DOCKER_CAPS,
    MOBY_MASKED,
    add_bind,
    cgroup_dirs,
    docker_like,
    install,
    mnt_points_host,
    oci_seccomp,
    parse,
    read_text,
    run,
    status_fields,
    thermal_throttle_paths,
)

from harness import Bundle, Runtime, unique_id  # noqa: E402

pytest_plugins = ["sec_helpers"]
pytestmark = pytest.mark.usefixtures("host_guard")


def _ok(res: object) -> str:
    assert getattr(res, "code", 1) == 0, res
    return str(getattr(res, "out", ""))


# -- case 11 -------------------------------------------------------------------------------

def _set_file_caps(path: str, caps: list[int], permitted: bool) -> None:
    """security.capability, VFS_CAP_REVISION_2 with the effective flag (setcap +ei/+eip)."""
    mask = 0
    for c in caps:
        mask |= 1 << c
    value = struct.pack("<IIIII", 0x02000000 | 1, mask if permitted else 0, mask, 0, 0)
    os.setxattr(path, "security.capability", value)


def test_case11_capability_sets(runtime: Runtime, bundle: Bundle, probe: str,
                                probe_binary: str) -> None:
    docker_like(bundle, probe, "status")
    st = status_fields(_ok(run(runtime, bundle)))
    assert st["CapBnd"] == st["CapPrm"] == st["CapEff"] == DOCKER_CAP_MASK, st
    assert st["CapInh"] == st["CapAmb"] == "0000000000000000", st
    # A non-root user runs binaries with file capabilities cap_net_admin,cap_sys_admin
    # (+ei, and +eip): nothing beyond the bounding set, nothing inheritable.
    for name, permitted in (("fcap-ei", False), ("fcap-eip", True)):
        path = install(probe_binary, bundle.rootfs, name)
        _set_file_caps(os.path.join(bundle.rootfs, name), [12, 21], permitted)
        bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
        bundle.set_args(path, "status")
        res = run(runtime, bundle)
        if permitted and res.code != 0:
            # The kernel refuses to run a capability-dumb (+e) binary that would not get
            # all of its permitted capabilities: the bounding set forbids them.
            assert f"Operation not permitted: {path}" in res.err, res
            continue
        st = status_fields(_ok(res))
        assert st["EUID"] == "1000", st
        for k in ("CapPrm", "CapEff", "CapInh", "CapAmb"):
            assert st[k] == "0000000000000000", (name, st)
        assert st["CapBnd"] == DOCKER_CAP_MASK, st


def test_case11_unknown_capability_is_rejected(runtime: Runtime, bundle: Bundle,
                                               probe: str) -> None:
    docker_like(bundle, probe, "sleep")
    bundle.config["process"]["capabilities"]["bounding"].append("CAP_BOGUS")
    bundle.save()
    res = run(runtime, bundle)
    assert res.code == 1 and 'unknown capability "CAP_BOGUS"' in res.err, res
    bundle.config["process"]["capabilities"]["bounding"].remove("CAP_BOGUS")
    bundle.save()
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    res = runtime("exec", "--cap", "CAP_BOGUS", cid, probe, "status", check=False)
    assert res.code != 0 and "CAP_BOGUS" in res.err, res
    runtime("delete", "--force", cid)


# -- case 12 -------------------------------------------------------------------------------

def test_case12_no_new_privs_and_setuid_binary(runtime: Runtime, bundle: Bundle,
                                               probe_binary: str) -> None:
    suid = install(probe_binary, bundle.rootfs, "suid", mode=0o4755)
    docker_like(bundle, suid, "status", nnp=True)
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.save()
    st = status_fields(_ok(run(runtime, bundle)))
    assert st["EUID"] == "1000" and st["NoNewPrivs"] == "1", st
    # Control: without no_new_privs the setuid bit works (so the check above means
    # something), and still nothing is inheritable or ambient.
    bundle.config["process"]["noNewPrivileges"] = False
    bundle.save()
    st = status_fields(_ok(run(runtime, bundle)))
    assert st["EUID"] == "0" and st["NoNewPrivs"] == "0", st
    assert st["CapInh"] == st["CapAmb"] == "0000000000000000", st


# -- case 13 -------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value", [
    ("uid", 2147483648), ("uid", 4294967296), ("uid", -1), ("uid", 4294967295),
    ("gid", 4294967295), ("gid", 2147483648), ("additionalGids", [4294967295]),
])
def test_case13_out_of_range_ids_are_rejected(runtime: Runtime, bundle: Bundle, field: str,
                                              value: object) -> None:
    """4294967295 is (uid_t)-1: setresuid(-1, ...) would "leave unchanged", i.e. stay root."""
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000, field: value}
    bundle.set_args("id")
    res = run(runtime, bundle)
    assert res.code == 1 and f"process.user.{field}" in res.err and "out of range" in res.err, res


def test_case13_exec_user_out_of_range(runtime: Runtime, bundle: Bundle, probe: str) -> None:
    bundle.set_args(probe, "sleep")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    for user in ("4294967295", "2147483648:0", "1000:4294967295"):
        res = runtime("exec", "--user", user, cid, probe, "status", check=False)
        assert res.code != 0 and "out of range" in res.err and "EUID" not in res.out, res
    runtime("delete", "--force", cid)


def test_case13_uid_one_and_exact_supplementary_groups(runtime: Runtime, bundle: Bundle,
                                                       probe: str) -> None:
    bundle.config["process"]["user"] = {"uid": 1, "gid": 0}
    bundle.set_args(probe, "status")
    st = status_fields(_ok(run(runtime, bundle)))
    assert st["Uid"].split() == ["1"] * 4 and st["Gid"].split() == ["0"] * 4, st
    assert st["Groups"] == "", st
    # The runtime itself runs with a supplementary group: the container never inherits it.
    for extra, want in (([], []), ([10, 20], ["10", "20"])):
        bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": extra}
        bundle.save()
        proc = subprocess.run([*runtime.cmd, "--root", runtime.root, "run", "--bundle",
                               bundle.path, unique_id()], capture_output=True, text=True,
                              extra_groups=[4242], stdin=subprocess.DEVNULL, timeout=60,
                              check=False)
        assert proc.returncode == 0, proc
        st = status_fields(proc.stdout)
        assert st["Groups"].split() == want, st
        assert st["Uid"].split() == ["1000"] * 4, st


# -- case 14 -------------------------------------------------------------------------------

def test_case14_container_ids_are_never_path_components(runtime: Runtime, bundle: Bundle,
                                                        canary: str) -> None:
    os.makedirs(runtime.root, exist_ok=True)
    rel_canary = os.path.relpath(canary, runtime.root)
    for cid in ("this/is/invalid", ".", "..", ".foo", "foo bar", rel_canary, "a\nb", ""):
        res = runtime("create", "--bundle", bundle.path, cid, check=False)
        assert res.code != 0 and "container ID" in res.err, (cid, res)
        for cmd in (("state", cid), ("delete", "--force", cid), ("kill", cid, "KILL"),
                    ("start", cid), ("pause", cid), ("exec", cid, "true")):
            res = runtime(*cmd, check=False)
            assert res.code != 0, (cmd, res)
        assert os.listdir(runtime.root) == [], cid
        if cid:
            assert not os.path.lexists(os.path.normpath(os.path.join(runtime.root, cid))) \
                or cid in (".", "..") or cid == rel_canary, cid
    assert os.path.isdir(canary)


# -- case 15 -------------------------------------------------------------------------------

def test_case15_masked_paths(runtime: Runtime, bundle: Bundle, probe: str) -> None:
    masked = [*MOBY_MASKED, *thermal_throttle_paths()]
    present = [p for p in masked if os.path.exists(p)]
    files = [p for p in present if not os.path.isdir(p)]
    dirs = [p for p in present if os.path.isdir(p)]
    assert files and dirs, present
    script = "; ".join(
        [f"echo F {p} $(wc -c < {p})" for p in files]
        + [f"echo D {p} $(ls -A {p} | wc -l); touch {p}/x 2>&1 | sed 's|^|T {p} |'"
           for p in dirs]
        + [f"{probe} umount {p}" for p in present]
        + ["echo F /etc/hostname $(wc -c < /etc/hostname)",
           "grep -c '' /proc/self/mountinfo"])
    docker_like(bundle, "sh", "-c", script)
    bundle.config["linux"]["maskedPaths"].append("/etc/hostname")  # the config can add
    bundle.save()
    out = _ok(run(runtime, bundle))
    for p in [*files, "/etc/hostname"]:
        assert f"F {p} 0" in out, (p, out)
    for p in dirs:
        assert f"D {p} 0" in out and f"T {p} " in out and "Read-only file system" in out, out
    res = parse(out)
    for p in present:
        assert res[p] == "EPERM", (p, out)


# -- case 16 -------------------------------------------------------------------------------

def _first_writable(d: str) -> str | None:
    for base, dirs, files in os.walk(d):
        dirs.sort()
        for n in sorted(files):
            p = os.path.join(base, n)
            if os.stat(p).st_mode & 0o200:
                return p
    return None


def test_case16_readonly_paths(runtime: Runtime, bundle: Bundle, probe: str) -> None:
    """Writes to core_pattern (its own content written back: harmless if it ever worked),
    drop_caches, a sysctl and sysrq-trigger ('h', never 'b'), and opening files under
    /proc/bus, /proc/fs and /proc/irq for writing (never writing them) fail with EROFS;
    remounting /proc/sys rw fails with EPERM; each read-only path is an ro mount."""
    cmds = [f"{probe} rewrite /proc/sys/kernel/core_pattern",
            f"{probe} write /proc/sys/vm/drop_caches 1",
            f"{probe} write /proc/sys/net/ipv4/ip_forward 1"]
    expect = ["/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
              "/proc/sys/net/ipv4/ip_forward"]
    if os.path.exists("/proc/sysrq-trigger"):
        cmds.append(f"{probe} write /proc/sysrq-trigger h")
        expect.append("/proc/sysrq-trigger")
    for d in ("/proc/irq", "/proc/bus", "/proc/fs"):
        p = _first_writable(d)
        if p:
            cmds.append(f"{probe} open {p} w")
            expect.append(p)
    assert len(expect) >= 4, expect
    cmds += [f"{probe} remount-rw {p}" for p in ("/proc/sys", "/proc/sysrq-trigger")
             if os.path.exists(p)]
    cmds.append("cat /proc/self/mountinfo")
    docker_like(bundle, "sh", "-c", "; ".join(cmds))
    out = _ok(run(runtime, bundle))
    res = parse(out)
    for p in expect:
        assert res[p] == "EROFS", (p, out)
    assert res["/proc/sys"] == "EPERM", out
    ro = {f[4] for f in (ln.split() for ln in out.splitlines()) if len(f) > 6
          and f[5].split(",")[0] == "ro"}
    for p in ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"):
        assert p in ro or not os.path.exists(p), (p, out)


# -- case 17 -------------------------------------------------------------------------------



def test_case17_docker_default_seccomp_profile(runtime: Runtime, bundle: Bundle,
                                               probe: str) -> None:
    docker_like(bundle, probe, "syscalls")
    out = _ok(run(runtime, bundle))
    res, st = parse(out), status_fields(out)
    assert st["Seccomp"] == "2", out
    for name in BLOCKED:
        assert res[name] == "EPERM", (name, out)
    assert res["clone3"] == "ENOSYS", out  # so that libc falls back to clone
    for name, value in res.items():
        if name.startswith("allowed_"):
            assert value != "EPERM", (name, out)
    if res["int80_getpid"] == "OK":  # the 32-bit ABI exists on this kernel
        for name in ("int80_keyctl", "int80_unshare", "int80_mount", "int80_acct",
                     "int80_personality_0x40000", "int80_bpf"):
            assert res[name] == "EPERM", (name, out)
    assert res["x32_keyctl"] == res["x32_unshare"] == "EPERM", out
    # Control: the same probe unconfined, same capabilities. The profile is what blocks
    # these (they are not refused by the capability checks alone).
    docker_like(bundle, probe, "syscalls", seccomp=False, tmp=False)
    free = parse(_ok(run(runtime, bundle)))
    for name in ("keyctl", "unshare", "setns", "open_tree", "personality_0x40000",
                 "io_uring_setup", "clone3", "int80_keyctl", "x32_keyctl"):
        assert free[name] != res[name], (name, free[name])


def test_case17_capabilities_raise_the_profile(runtime: Runtime, bundle: Bundle,
                                               probe: str) -> None:
    """--cap-add SYS_ADMIN re-allows the mount and namespace group, SYS_PACCT acct."""
    caps = (*DOCKER_CAPS, "CAP_SYS_ADMIN", "CAP_SYS_PACCT")
    docker_like(bundle, probe, "syscalls", caps=caps)
    res = parse(_ok(run(runtime, bundle)))
    for name in ("mount", "umount2", "unshare", "setns", "open_tree", "fsopen", "move_mount",
                 "acct"):
        assert res[name] != "EPERM", (name, res)
    assert res["clone3"] != "ENOSYS", res
    assert res["keyctl"] == "EPERM" and res["reboot"] == "EPERM", res
    assert oci_seccomp(caps) != oci_seccomp()


# -- case 18 -------------------------------------------------------------------------------

def test_case18_no_nested_user_namespaces(runtime: Runtime, bundle: Bundle,
                                          probe: str) -> None:
    docker_like(bundle, probe, "userns")
    res = parse(_ok(run(runtime, bundle)))
    assert res["unshare_user"] == "EPERM" and res["clone_newuser"] == "EPERM", res
    assert not [k for k in res if k.startswith("nested_")], res  # no cgroup, no procfs


def test_case18_fresh_procfs_refused_even_without_seccomp(runtime: Runtime, bundle: Bundle,
                                                          probe: str) -> None:
    """``unshare -Urmpf --mount-proc`` unconfined: the masked and read-only overmounts make a
    new procfs "too revealing"; v1 cgroupfs cannot be mounted from a user namespace."""
    docker_like(bundle, probe, "userns", seccomp=False)
    res = parse(_ok(run(runtime, bundle)))
    assert res["unshare_user"] == "OK" and res["nested_unshare_mnt_pid"] == "OK", res
    assert res["nested_mount_proc"] == "EPERM", res
    assert res["nested_mount_cgroup_rdma"] != "OK", res
    assert res["nested_mount_cgroup_memory"] != "OK", res
    # Control: without masked and read-only paths the same mount succeeds.
    bundle.config["linux"]["maskedPaths"] = []
    bundle.config["linux"]["readonlyPaths"] = []
    bundle.save()
    assert parse(_ok(run(runtime, bundle)))["nested_mount_proc"] == "OK"


# -- case 19 -------------------------------------------------------------------------------

@pytest.mark.parametrize("cgroupns", [False, True])
def test_case19_cgroupfs_is_read_only(runtime: Runtime, bundle: Bundle, probe: str,
                                      cgroupns: bool) -> None:
    # (None: write the file's own content back, harmless should it ever be a host file)
    targets = [("/sys/fs/cgroup/pids/pids.max", "max"),
               ("/sys/fs/cgroup/devices/devices.allow", "a"),
               ("/sys/fs/cgroup/memory/notify_on_release", None),
               ("/sys/fs/cgroup/cpu/release_agent", None),
               ("/sys/fs/cgroup/pids/cgroup.procs", "1"),
               ("/sys/fs/cgroup/unified/cgroup.procs", "1"),
               ("/sys/fs/cgroup/unified/cgroup.subtree_control", None)]
    cmds = [f"{probe} write {p} '{v}'" if v else f"{probe} rewrite {p}" for p, v in targets]
    cmds.append("grep -E ' - cgroup2? ' /proc/self/mountinfo")
    docker_like(bundle, probe, "sleep")
    bundle.config["linux"]["resources"]["pids"] = {"limit": 100}
    if cgroupns:
        bundle.config["linux"]["namespaces"].append({"type": "cgroup"})
    bundle.save()
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    dirs = cgroup_dirs(runtime, cid)
    files = (("pids", "pids.max"), ("devices", "devices.list"), ("pids", "cgroup.procs"),
             ("pids", "notify_on_release"))
    before = {f: read_text(os.path.join(dirs[k], f)) for k, f in files}
    out = _ok(runtime("exec", cid, "sh", "-c", "; ".join(cmds)))
    res = parse(out)
    for p, _ in targets:
        assert res[p] in ("EROFS", "ENOENT"), (p, out)
        assert res[p] == "EROFS" or "release_agent" in p, (p, out)
    mounts = [ln for ln in out.splitlines() if " - cgroup" in ln]
    assert len(mounts) >= 9, out
    for ln in mounts:
        assert ln.split()[5].split(",")[0] == "ro", ln
    # The container could not raise its limits, widen its devices or leave its cgroup.
    assert {f: read_text(os.path.join(dirs[k], f)) for k, f in files} == before
    runtime("delete", "--force", cid)


# -- case 20 -------------------------------------------------------------------------------

EXPECTED_DEVICES = {"c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm",
                    "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm"}


def test_case20_device_cgroup_defaults(runtime: Runtime, bundle: Bundle, probe: str) -> None:
    nodes = [("/dev/sda-t", "b", 8, 0), ("/dev/mem-t", "c", 1, 1), ("/dev/fuse-t", "c", 10, 229),
             ("/dev/tun-t", "c", 10, 200), ("/dev/kmsg-t", "c", 1, 11)]
    cmds = [f"{probe} mknod {p} {t} {a} {b}; {probe} open {p} r" for p, t, a, b in nodes]
    cmds += [f"{probe} open /dev/kmsg r", f"{probe} open /dev/null rw"]
    docker_like(bundle, probe, "sleep")
    add_bind(bundle, "/dev/kmsg", "/dev/kmsg")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    dev_list = set(read_text(os.path.join(cgroup_dirs(runtime, cid)["devices"],
                                          "devices.list")).splitlines())
    assert dev_list == EXPECTED_DEVICES, dev_list  # deny-all plus the standard allow list
    out = _ok(runtime("exec", cid, "sh", "-c", "; ".join(cmds)))
    lines = out.splitlines()
    for p, *_ in nodes:
        assert f"{p} OK 0" in lines, out  # mknod works (CAP_MKNOD)...
        assert f"{p} ERR EPERM" in lines, out  # ...but the node is useless
    assert "/dev/kmsg ERR EPERM" in lines and "/dev/null OK 3" in lines, out
    runtime("delete", "--force", cid)


# -- case 21 -------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value,drop_ns,needle", [
    ("kernel.core_pattern", "core", None, "is not in a separate kernel namespace"),
    ("vm.overcommit_memory", "1", None, "is not in a separate kernel namespace"),
    ("net.ipv4.ip_forward", "1", "network", "not allowed in host network namespace"),
    ("kernel.msgmax", "1", "ipc", "is not allowed in the host's ipc namespace"),
])
def test_case21_only_namespaced_sysctls(runtime: Runtime, bundle: Bundle, key: str, value: str,
                                        drop_ns: str | None, needle: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    host_before = read_text(path)
    if key == "kernel.core_pattern":
        value = host_before.strip()  # the attack's shape, harmless should it ever get through
    if drop_ns:
        bundle.config["linux"]["namespaces"] = [
            n for n in bundle.config["linux"]["namespaces"] if n["type"] != drop_ns]
    bundle.config["linux"]["sysctl"] = {key: value}
    bundle.set_args("cat", path)
    res = run(runtime, bundle)
    assert res.code == 1 and needle in res.err and key in res.err, res
    assert read_text(path) == host_before


def test_case21_namespaced_sysctl_stays_in_the_container(runtime: Runtime,
                                                         bundle: Bundle) -> None:
    host_before = read_text("/proc/sys/net/ipv4/ip_forward")
    want = "0" if host_before.strip() == "1" else "1"
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": want}
    bundle.set_args("cat", "/proc/sys/net/ipv4/ip_forward")
    assert _ok(run(runtime, bundle)).strip() == want
    assert read_text("/proc/sys/net/ipv4/ip_forward") == host_before


# -- case 22 -------------------------------------------------------------------------------

@pytest.mark.parametrize("dest,mtype,needle", [
    ("/proc//sys", "bind", "cannot be mounted because it is inside /proc"),
    ("/proc/sys/kernel", "bind", "cannot be mounted because it is inside /proc"),
    ("/proc/self/attr", "bind", "cannot be mounted because it is inside /proc"),
    ("/proc", "bind", '"/proc" cannot be mounted because it is not of type proc'),
    ("/proc", "tmpfs", '"/proc" cannot be mounted because it is not of type proc'),
    ("/myproc/sys", "bind", "cannot be mounted because it is inside /proc"),  # via a symlink
    ("/myproc/self/attr", "bind", "cannot be mounted because it is inside /proc"),
])
def test_case22_mounts_into_proc_are_refused(runtime: Runtime, bundle: Bundle, tmp_path: Path,
                                             dest: str, mtype: str, needle: str) -> None:
    vol = tmp_path / "vol"
    vol.mkdir()
    os.symlink("/proc", os.path.join(bundle.rootfs, "myproc"))
    m = {"destination": dest, "type": mtype, "source": str(vol) if mtype == "bind" else "tmpfs"}
    if mtype == "bind":
        m["options"] = ["rbind"]
    bundle.config["mounts"].append(m)
    bundle.set_args("ls", "/proc/sys")
    res = run(runtime, bundle)
    assert res.code == 1 and needle in res.err, res
    assert os.listdir(vol) == []


def test_case22_lxcfs_style_file_bind_is_allowed(runtime: Runtime, bundle: Bundle,
                                                 tmp_path: Path) -> None:
    fake = tmp_path / "uptime"
    fake.write_text("12345.67 0.00\n")
    add_bind(bundle, str(fake), "/proc/uptime", "ro")
    bundle.set_args("cat", "/proc/uptime")
    assert _ok(run(runtime, bundle)) == "12345.67 0.00\n"


# -- case 23 -------------------------------------------------------------------------------

def test_case23_chroot_escape_ends_at_the_container_root(runtime: Runtime, bundle: Bundle,
                                                         probe: str, canary: str) -> None:
    docker_like(bundle, probe, "chroot-escape", "/tmp/x", f"{canary}/file")
    out = _ok(run(runtime, bundle))
    res = parse(out)
    assert res["chroot_inner"] == "OK" and res["chroot_dot"] == "OK", out  # CAP_SYS_CHROOT
    assert "same_root 1" in out, out
    assert res["marker_visible"] == "ENOENT", out
    assert "ROOT probe" in out.splitlines(), out


def test_case23_mountinfo_shows_no_host_root(runtime: Runtime, bundle: Bundle) -> None:
    host = [ln.split() for ln in open("/proc/1/mountinfo")]  # noqa: SIM115
    root_line = next(f for f in host if f[4] == "/")
    host_root = (root_line[2], root_line[3])  # (major:minor, root) of the host's /
    bundle.set_args("cat", "/proc/self/mountinfo")
    lines = [ln.split() for ln in _ok(run(runtime, bundle)).splitlines()]
    assert next(f for f in lines if f[4] == "/")[3] == os.path.realpath(bundle.rootfs), lines
    assert not [f for f in lines if (f[2], f[3]) == host_root], lines  # the old root is gone


@pytest.mark.parametrize("propagation", [None, "rslave", "rprivate"])
def test_case23_container_mounts_never_reach_the_host(runtime: Runtime, bundle: Bundle,
                                                      probe: str,
                                                      propagation: str | None) -> None:
    caps = (*DOCKER_CAPS, "CAP_SYS_ADMIN")
    docker_like(bundle, "sh", "-c", f"mkdir -p /tmp/m && {probe} mount none /tmp/m tmpfs 0 "
                "size=1244k && grep -c size=1244k /proc/self/mountinfo", caps=caps)
    if propagation:
        bundle.config["linux"]["rootfsPropagation"] = propagation
    bundle.save()
    before = mnt_points_host()
    out = _ok(run(runtime, bundle))
    assert "/tmp/m OK" in out and out.strip().endswith("1"), out
    assert not [m for m in mnt_points_host() - before if "1244k" in m or "/tmp/m" in m]


@pytest.mark.parametrize("seccomp", [True, False])
def test_case23_open_by_handle_at_is_refused(runtime: Runtime, bundle: Bundle, probe: str,
                                             seccomp: bool) -> None:
    docker_like(bundle, probe, "handle", seccomp=seccomp)
    res = parse(_ok(run(runtime, bundle)))
    assert res["name_to_handle_at"] == "OK", res
    assert res["open_by_handle_at_root"] == "EPERM", res
    assert res["open_by_handle_at_shocker"] == "EPERM", res
