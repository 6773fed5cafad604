"""The container's filesystem through the real binary: readonly root, the mounts list (bind,
rbind, tmpfs, proc, sysfs, devpts, mqueue, cgroup, cgroup2) with their options and
propagation, rootfsPropagation, default devices and /dev symlinks, linux.devices,
maskedPaths and readonlyPaths."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rt_helpers import expect_failure, mountinfo, read, wait_for

from harness import Bundle, Runtime, unique_id


def mount_opts(out: str, point: str) -> tuple[set[str], str, set[str]]:
    """(per-mount options, fstype, super options) of ``point`` in a mountinfo text."""
    for line in out.splitlines():
        f = line.split()
        if len(f) > 4 and f[4] == point:
            sep = f.index("-")
            return set(f[5].split(",")), f[sep + 1], set(f[sep + 3].split(","))
    raise AssertionError(f"{point} not mounted:\n{out}")


def run(runtime: Runtime, bundle: Bundle, script: str, check: bool = True) -> Any:
    bundle.set_args("sh", "-c", script)
    return runtime("run", "--bundle", bundle.path, unique_id(), check=check)


def add_mount(bundle: Bundle, dest: str, mtype: str, source: str, *options: str) -> None:
    bundle.config["mounts"].append({"destination": dest, "type": mtype, "source": source,
                                    "options": list(options)})
    bundle.save()


@pytest.fixture
def shared_dir(tmp_path: Any) -> Iterator[str]:
    """A host directory that is a shared mount point of its own; unmounted afterwards."""
    src = str(tmp_path / "src")
    os.makedirs(f"{src}/sub")
    subprocess.run(["mount", "--bind", src, src], check=True)
    subprocess.run(["mount", "--make-shared", src], check=True)
    yield src
    for _ in range(3):
        subprocess.run(["umount", "-R", "-l", src], check=False, capture_output=True)


def test_readonly_root(runtime: Runtime, bundle: Bundle) -> None:
    assert bundle.config["root"]["readonly"] is True
    res = run(runtime, bundle, "touch /x 2>&1; cat /proc/self/mountinfo")
    assert "Read-only file system" in res.out
    assert "ro" in mount_opts(res.out.split("\n", 1)[1], "/")[0]
    bundle.config["root"]["readonly"] = False
    res = run(runtime, bundle, "touch /x && echo ok")
    assert res.out.strip() == "ok"
    assert os.path.exists(os.path.join(bundle.rootfs, "x"))


def test_tmpfs_size_mode_and_flags(runtime: Runtime, bundle: Bundle) -> None:
    add_mount(bundle, "/data", "tmpfs", "tmpfs", "size=1m", "mode=750", "nosuid", "nodev",
              "noexec", "noatime")
    res = run(runtime, bundle, "stat -c %a /data; cat /proc/self/mountinfo")
    mode, info = res.out.split("\n", 1)
    assert mode == "750"
    opts, fstype, sopts = mount_opts(info, "/data")
    assert fstype == "tmpfs" and {"nosuid", "nodev", "noexec", "noatime"} <= opts
    assert "size=1024k" in sopts and "mode=750" in sopts


def test_bind_mounts_ro_rw_file_and_rbind(runtime: Runtime, bundle: Bundle,
                                          tmp_path: Any) -> None:
    ro, rw = tmp_path / "ro", tmp_path / "rw"
    ro.mkdir()
    rw.mkdir()
    (ro / "hello").write_text("hi\n")
    (tmp_path / "file").write_text("a file\n")
    # a mount below the rbind source must come along; with plain bind it must not
    (ro / "inner").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(ro / "inner")],
                   check=True)
    try:
        (ro / "inner" / "deep").write_text("deep\n")
        add_mount(bundle, "/ro", "bind", str(ro), "rbind", "ro", "nosuid")
        add_mount(bundle, "/plain", "bind", str(ro), "bind")
        add_mount(bundle, "/rw", "bind", str(rw), "bind", "rw")
        add_mount(bundle, "/etc/afile", "bind", str(tmp_path / "file"), "bind", "ro")
        res = run(runtime, bundle, "cat /ro/hello /ro/inner/deep /etc/afile; "
                  "ls /plain/inner | wc -l; touch /ro/x 2>&1; echo w > /rw/out; "
                  "cat /proc/self/mountinfo")
        lines = res.out.splitlines()
        assert lines[:4] == ["hi", "deep", "a file", "0"], res.out
        assert "Read-only file system" in lines[4]
        info = "\n".join(lines[5:])
        assert {"ro", "nosuid"} <= mount_opts(info, "/ro")[0]
        assert "ro" not in mount_opts(info, "/rw")[0]
        assert "ro" in mount_opts(info, "/etc/afile")[0]
        assert (rw / "out").read_text() == "w\n"
    finally:
        subprocess.run(["umount", str(ro / "inner")], check=False)


def test_relative_bind_source_is_relative_to_the_bundle(runtime: Runtime,
                                                        bundle: Bundle) -> None:
    os.mkdir(os.path.join(bundle.path, "data"))
    with open(os.path.join(bundle.path, "data", "f"), "w") as f:
        f.write("relative\n")
    add_mount(bundle, "/data", "bind", "data", "bind")
    assert run(runtime, bundle, "cat /data/f").out == "relative\n"


def test_special_filesystems(runtime: Runtime, bundle: Bundle) -> None:
    res = run(runtime, bundle, "cat /proc/self/mountinfo; ls /sys/fs/cgroup")
    info = res.out
    assert mount_opts(info, "/proc")[1] == "proc"
    sysfs = mount_opts(info, "/sys")
    assert sysfs[1] == "sysfs" and {"ro", "nosuid", "nodev", "noexec"} <= sysfs[0]
    devpts = mount_opts(info, "/dev/pts")
    assert devpts[1] == "devpts" and {"ptmxmode=666", "mode=620", "gid=5"} <= devpts[2]
    assert mount_opts(info, "/dev/mqueue")[1] == "mqueue"
    assert mount_opts(info, "/dev/shm")[1] == "tmpfs"
    assert mount_opts(info, "/dev")[1] == "tmpfs"
    # the host's v1 hierarchies (hybrid host) under a tmpfs, read-only
    assert mount_opts(info, "/sys/fs/cgroup")[1] == "tmpfs"
    memory = mount_opts(info, "/sys/fs/cgroup/memory")
    assert memory[1] == "cgroup" and "ro" in memory[0]
    assert mount_opts(info, "/sys/fs/cgroup/unified")[1] == "cgroup2"


def test_cgroup2_mount_and_namespace(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["mounts"] = [m for m in bundle.config["mounts"]
                               if m["destination"] != "/sys/fs/cgroup"]
    add_mount(bundle, "/sys/fs/cgroup", "cgroup2", "cgroup", "nosuid", "noexec", "nodev", "rw")
    bundle.config["linux"]["namespaces"].append({"type": "cgroup"})
    res = run(runtime, bundle, "cat /proc/self/mountinfo; cat /sys/fs/cgroup/cgroup.procs")
    opts, fstype, _ = mount_opts(res.out, "/sys/fs/cgroup")
    assert fstype == "cgroup2" and "ro" not in opts
    assert res.out.split()[-1] == "1"  # only the container's own processes: its root cgroup


def test_mount_options_nosymfollow_and_relatime(runtime: Runtime, bundle: Bundle) -> None:
    add_mount(bundle, "/t", "tmpfs", "tmpfs", "nosymfollow", "strictatime", "nodiratime")
    res = run(runtime, bundle, "ln -s /etc/hostname /t/l; cat /t/l 2>&1; "
              "cat /proc/self/mountinfo")
    first, info = res.out.split("\n", 1)
    assert "Too many" in first or "ymbolic" in first or "denied" in first, first
    opts = mount_opts(info, "/t")[0]
    assert {"nosymfollow", "nodiratime"} <= opts and "relatime" not in opts


def test_mount_destination_symlink_stays_in_rootfs(runtime: Runtime, bundle: Bundle,
                                                   tmp_path: Any) -> None:
    target = tmp_path / "hosttarget"
    target.mkdir()
    os.symlink(f"../../../../../../../..{target}", os.path.join(bundle.rootfs, "escape"))
    add_mount(bundle, "/escape/sub", "tmpfs", "tmpfs", "size=1m")
    before = mountinfo()
    res = run(runtime, bundle, "touch /escape/sub/x; echo done", check=False)
    assert not os.listdir(target), "a mount destination escaped the rootfs"
    assert not [m for m in mountinfo() - before if str(target) in m]
    assert res.code in (0, 1)


def test_default_devices_and_symlinks(runtime: Runtime, bundle: Bundle) -> None:
    res = run(runtime, bundle, "for d in null zero full random urandom tty; do "
              "stat -c '%n %F %t:%T %a' /dev/$d; done; "
              "for l in fd stdin stdout stderr ptmx; do echo $l $(readlink /dev/$l); done; "
              "echo x > /dev/null && head -c 4 /dev/zero | wc -c")
    lines = res.out.splitlines()
    want = {"null": "1:3", "zero": "1:5", "full": "1:7", "random": "1:8", "urandom": "1:9",
            "tty": "5:0"}
    for line, (name, num) in zip(lines[:6], want.items(), strict=True):
        assert line == f"/dev/{name} character special file {num} 666", line
    links = dict(ln.split(" ", 1) for ln in lines[6:11])
    assert links == {"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0",
                     "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
                     "ptmx": "pts/ptmx"}
    assert lines[11] == "4"


def test_linux_devices(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["linux"]["devices"] = [
        {"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11, "fileMode": 0o640,
         "uid": 0, "gid": 5},
        {"path": "/dev/sub/myzero", "type": "c", "major": 1, "minor": 5},
        {"path": "/dev/fifo0", "type": "p"},
    ]
    res = run(runtime, bundle, "stat -c '%n %F %t:%T %a %g' /dev/kmsg /dev/sub/myzero; "
              "stat -c %F /dev/fifo0; head -c 3 /dev/sub/myzero | wc -c")
    lines = res.out.splitlines()
    assert lines[0] == "/dev/kmsg character special file 1:b 640 5"
    assert lines[1] == "/dev/sub/myzero character special file 1:5 666 0"
    assert lines[2] == "fifo"
    assert lines[3] == "3"  # the device cgroup allows what linux.devices lists


def test_masked_and_readonly_paths(runtime: Runtime, bundle: Bundle) -> None:
    assert "/proc/keys" in bundle.config["linux"]["maskedPaths"]
    assert "/proc/sys" in bundle.config["linux"]["readonlyPaths"]
    bundle.config["linux"]["maskedPaths"].append("/etc/hostname")
    bundle.config["linux"]["readonlyPaths"].append("/tmp")
    bundle.config["linux"]["maskedPaths"].append("/does/not/exist")
    bundle.config["root"]["readonly"] = False
    res = run(runtime, bundle, "stat -c '%t:%T' /proc/keys; ls /sys/firmware | wc -l; "
              "cat /etc/hostname | wc -c; (echo 1 > /proc/sys/kernel/ns_last_pid) 2>&1; "
              "touch /tmp/x 2>&1; touch /y && echo rootrw")
    lines = res.out.splitlines()
    assert lines[0] == "1:3" and lines[1] == "0" and lines[2] == "0", lines
    assert "Read-only" in lines[3] and "Read-only" in lines[4]
    assert lines[5] == "rootrw"


def test_bind_propagation_slave_sees_later_host_mount(runtime: Runtime, bundle: Bundle,
                                                      shared_dir: str) -> None:
    add_mount(bundle, "/shared", "bind", shared_dir, "rbind", "rslave")
    add_mount(bundle, "/private", "bind", shared_dir, "rbind", "rprivate")
    bundle.set_args("sh", "-c", "i=0; while [ ! -e /shared/sub/marker ] && [ $i -lt 100 ]; "
                    "do sleep 0.05; i=$((i+1)); done; ls /shared/sub > /shared/seen; "
                    "ls /private/sub > /shared/seen-private")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", f"{shared_dir}/sub"],
                   check=True)
    try:
        open(f"{shared_dir}/sub/marker", "w").close()
        wait_for(lambda: runtime.state(cid)["status"] == "stopped", what="container exit")
    finally:
        subprocess.run(["umount", f"{shared_dir}/sub"], check=False)
    assert read(f"{shared_dir}/seen").split() == ["marker"]
    assert read(f"{shared_dir}/seen-private").split() == []
    runtime("delete", cid)


def test_rshared_mount_propagates_back_to_host(runtime: Runtime, bundle: Bundle,
                                               shared_dir: str) -> None:
    bundle.config["linux"]["rootfsPropagation"] = "rshared"
    add_mount(bundle, "/shared", "bind", shared_dir, "rbind", "rshared")
    caps = bundle.config["process"]["capabilities"]
    for k in ("bounding", "effective", "permitted"):
        caps[k].append("CAP_SYS_ADMIN")
    bundle.config["linux"]["seccomp"] = None
    bundle.config["linux"].pop("seccomp")
    run(runtime, bundle, "mount -t tmpfs -o size=1m tmpfs /shared/sub && "
        "touch /shared/sub/from-container")
    try:
        assert os.path.exists(f"{shared_dir}/sub/from-container")
    finally:
        subprocess.run(["umount", f"{shared_dir}/sub"], check=False)


def test_rootfs_propagation_private(runtime: Runtime, bundle: Bundle,
                                    shared_dir: str) -> None:
    bundle.config["linux"]["rootfsPropagation"] = "rprivate"
    add_mount(bundle, "/shared", "bind", shared_dir, "rbind")
    bundle.set_args("sh", "-c", "sleep 0.5; ls /shared/sub | wc -l > /shared/count")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", f"{shared_dir}/sub"],
                   check=True)
    try:
        open(f"{shared_dir}/sub/marker", "w").close()
        wait_for(lambda: runtime.state(cid)["status"] == "stopped", what="container exit")
    finally:
        subprocess.run(["umount", f"{shared_dir}/sub"], check=False)
    assert read(f"{shared_dir}/count").strip() == "0"
    runtime("delete", cid)


def test_no_host_mount_leaks_after_delete(runtime: Runtime, bundle: Bundle) -> None:
    before = mountinfo()
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    time.sleep(0.05)
    runtime("delete", "--force", cid)
    assert not [m for m in mountinfo() - before if bundle.path in m or cid in m]


@pytest.mark.parametrize(("mount", "needle"), [
    ({"destination": "/a/../../etc", "type": "tmpfs", "source": "tmpfs"},
     "mounts[7].destination"),
    ({"destination": "relative", "type": "tmpfs", "source": "tmpfs"},
     "mounts[7].destination"),
    ({"destination": "/x", "type": "bind", "source": "/tmp", "options": ["rbind", "idmap"]},
     "mounts[7]"),
    ({"destination": "/x", "type": "bind", "source": "/nonexistent-src", "options": ["bind"]},
     "mounts[7].source"),
    ({"destination": "/proc/sys", "type": "tmpfs", "source": "tmpfs"},
     "mounts[7].destination"),
    ({"destination": "/x", "type": "nosuchfs", "source": "none"}, "mounts[7]"),
])
def test_bad_mounts(runtime: Runtime, bundle: Bundle, mount: dict[str, Any],
                    needle: str) -> None:
    bundle.config["mounts"].append(mount)
    bundle.save()
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid, needle=needle)
