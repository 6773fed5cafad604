"""Namespaces through the real binary: new ones of every type, joins by path (and the
type check of the path), user namespace id mappings, time offsets, hostname/domainname."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import busybox_bundle
import pytest
from rt_helpers import expect_failure, ns_inode, read

from harness import RUN_PREFIX, Bundle, Runtime, unique_id

ALL_TYPES = ("pid", "network", "ipc", "uts", "mount", "cgroup", "time")


def set_namespaces(bundle: Bundle, *types: str, **paths: str) -> None:
    ns: list[dict[str, Any]] = [{"type": t} for t in types]
    ns += [{"type": t, "path": p} for t, p in paths.items()]
    bundle.config["linux"]["namespaces"] = ns
    bundle.save()


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"{RUN_PREFIX}-ns{unique_id('n').rsplit('-', 1)[1]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield f"/run/netns/{name}"
    subprocess.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture
def public_bundle(busybox_rootfs: str) -> Iterator[Bundle]:
    """A bundle whose path a user namespace's root (an unprivileged host uid) can reach."""
    d = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-pub-")
    os.chmod(d, 0o755)
    busybox_bundle.make_bundle(d, ["true"], rootfs_from=busybox_rootfs)
    os.mkdir(os.path.join(d, "rootfs", "shared"))  # the rootfs is not the container root's
    os.mkdir(os.path.join(d, "shared"), 0o777)
    os.chmod(os.path.join(d, "shared"), 0o777)
    yield Bundle(d)
    shutil.rmtree(d, ignore_errors=True)


def test_every_new_namespace_differs_from_the_host(runtime: Runtime, bundle: Bundle) -> None:
    set_namespaces(bundle, *ALL_TYPES)
    bundle.config["hostname"] = "nshost"
    bundle.config["domainname"] = "example.test"
    names = ("pid", "net", "ipc", "uts", "mnt", "cgroup", "time", "user")
    bundle.set_args("sh", "-c", "echo $$; hostname; cat /proc/sys/kernel/domainname; "
                    "grep '^0::' /proc/self/cgroup; for n in " + " ".join(names)
                    + "; do readlink /proc/self/ns/$n; done")
    out = runtime("run", "--bundle", bundle.path, unique_id()).out.split()
    assert out[:4] == ["1", "nshost", "example.test", "0::/"], out
    inside = dict(zip(names, out[4:], strict=True))
    me = os.getpid()
    for n in names[:-1]:
        assert inside[n] != ns_inode(me, n), n
    assert inside["user"] == ns_inode(me, "user")


def test_join_network_namespace_by_path(runtime: Runtime, bundle: Bundle, netns: str) -> None:
    set_namespaces(bundle, "pid", "ipc", "uts", "mount", network=netns)
    bundle.set_args("readlink", "/proc/self/ns/net")
    res = runtime("run", "--bundle", bundle.path, unique_id())
    assert res.out.strip() == f"net:[{os.stat(netns).st_ino}]"


def test_join_path_of_the_wrong_type_is_rejected(runtime: Runtime, bundle: Bundle) -> None:
    set_namespaces(bundle, "pid", "ipc", "mount", "network", uts="/proc/self/ns/net")
    bundle.config.pop("hostname", None)
    bundle.save()
    cid = unique_id()
    err = expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                         needle="linux.namespaces[4].path")
    assert "net" in err and "uts" in err


def test_join_path_that_is_not_a_namespace(runtime: Runtime, bundle: Bundle) -> None:
    set_namespaces(bundle, "pid", "uts", "mount", network="/etc/hostname")
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                   needle=("linux.namespaces[3].path", "not a namespace"))
    set_namespaces(bundle, "pid", "uts", "mount", network="/nonexistent/netns")
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                   needle=("linux.namespaces[3].path", "/nonexistent/netns"))


def test_join_namespaces_of_another_container(runtime: Runtime, bundle: Bundle) -> None:
    bundle.set_args("sleep", "30")
    first = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, first)
    pid = runtime.state(first)["pid"]
    set_namespaces(bundle, "pid", "mount", network=f"/proc/{pid}/ns/net",
                   ipc=f"/proc/{pid}/ns/ipc", uts=f"/proc/{pid}/ns/uts")
    bundle.set_args("sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; hostname")
    bundle.config.pop("hostname")
    bundle.save()
    res = runtime("run", "--bundle", bundle.path, unique_id())
    assert res.out.split() == [ns_inode(pid, "net"), ns_inode(pid, "ipc"), "runc"]
    runtime("delete", "--force", first)


def test_user_namespace_mappings_and_file_ownership(runtime: Runtime,
                                                    public_bundle: Bundle) -> None:
    bundle = public_bundle
    shared = os.path.join(bundle.path, "shared")
    set_namespaces(bundle, "pid", "network", "ipc", "uts", "mount", "user", "cgroup")
    bundle.config["linux"]["uidMappings"] = [
        {"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.config["linux"]["gidMappings"] = [
        {"containerID": 0, "hostID": 100000, "size": 65536}]
    bundle.config["mounts"].append({"destination": "/shared", "type": "bind",
                                    "source": shared, "options": ["rbind", "rw"]})
    bundle.set_args("sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; id -u; "
                    "touch /shared/made; mkdir /shared/dir")
    res = runtime("run", "--bundle", bundle.path, unique_id())
    assert res.out.split()[:7] == ["0", "100000", "65536", "0", "100000", "65536", "0"], res
    st = os.stat(os.path.join(shared, "made"))
    assert (st.st_uid, st.st_gid) == (100000, 100000)
    assert os.stat(os.path.join(shared, "dir")).st_uid == 100000


def test_user_namespace_non_root_user(runtime: Runtime, public_bundle: Bundle) -> None:
    bundle = public_bundle
    shared = os.path.join(bundle.path, "shared")
    set_namespaces(bundle, "pid", "ipc", "uts", "mount", "user", "network")
    bundle.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 2000}]
    bundle.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 2000}]
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.config["mounts"].append({"destination": "/shared", "type": "bind",
                                    "source": shared, "options": ["bind"]})
    bundle.set_args("sh", "-c", "id -u; id -g; touch /shared/f")
    res = runtime("run", "--bundle", bundle.path, unique_id())
    assert res.out.split() == ["1000", "1000"], res
    st = os.stat(os.path.join(shared, "f"))
    assert (st.st_uid, st.st_gid) == (201000, 201000)


def test_time_namespace_offsets(runtime: Runtime, bundle: Bundle) -> None:
    set_namespaces(bundle, "pid", "network", "ipc", "uts", "mount", "time")
    ten_days = 10 * 86400
    bundle.config["linux"]["timeOffsets"] = {"boottime": {"secs": ten_days},
                                             "monotonic": {"secs": 2 * ten_days}}
    bundle.set_args("cat", "/proc/uptime")
    res = runtime("run", "--bundle", bundle.path, unique_id())
    host_uptime = float(read("/proc/uptime").split()[0])
    inside = float(res.out.split()[0])
    assert ten_days - 5 <= inside - host_uptime < ten_days + 5, (inside, host_uptime)


def test_ipc_namespace_sysctl(runtime: Runtime, bundle: Bundle) -> None:
    host = read("/proc/sys/kernel/shmmax")
    bundle.config["linux"]["sysctl"] = {"kernel.shmmax": "4096000", "kernel.msgmax": "4321"}
    bundle.set_args("sh", "-c", "cat /proc/sys/kernel/shmmax /proc/sys/kernel/msgmax")
    res = runtime("run", "--bundle", bundle.path, unique_id())
    assert res.out.split() == ["4096000", "4321"]
    assert read("/proc/sys/kernel/shmmax") == host


def test_network_sysctl_in_private_netns(runtime: Runtime, bundle: Bundle) -> None:
    bundle.config["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1"}
    bundle.set_args("cat", "/proc/sys/net/ipv4/ip_forward")
    assert runtime("run", "--bundle", bundle.path, unique_id()).out.strip() == "1"


def test_sysctl_in_host_namespace_rejected(runtime: Runtime, bundle: Bundle) -> None:
    set_namespaces(bundle, "pid", "uts", "mount", "network")
    bundle.config["linux"]["sysctl"] = {"kernel.shmmax": "4096000"}
    bundle.save()
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                   needle='linux.sysctl["kernel.shmmax"]')


def test_hostname_needs_uts_namespace(runtime: Runtime, bundle: Bundle) -> None:
    set_namespaces(bundle, "pid", "mount", "network", "ipc")
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid, needle="hostname")


def test_cgroup_namespace_hides_host_paths(runtime: Runtime, bundle: Bundle) -> None:
    set_namespaces(bundle, "pid", "network", "ipc", "uts", "mount", "cgroup")
    bundle.set_args("cat", "/proc/self/cgroup")
    res = runtime("run", "--bundle", bundle.path, unique_id())
    paths = [ln.split(":", 2)[2] for ln in res.out.splitlines()]
    assert paths and all(p == "/" for p in paths), res.out


def test_exec_and_pause_in_a_user_namespace(runtime: Runtime, public_bundle: Bundle) -> None:
    bundle = public_bundle
    set_namespaces(bundle, "pid", "network", "ipc", "uts", "mount", "user")
    bundle.config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 300000, "size": 100}]
    bundle.config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 300000, "size": 100}]
    bundle.set_args("sleep", "30")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    pid = runtime.state(cid)["pid"]
    assert read(f"/proc/{pid}/status").count("\t300000\t") >= 1
    out = runtime("exec", cid, "sh", "-c", "id -u; cat /proc/self/uid_map; "
                  "readlink /proc/self/ns/user").out.split()
    assert out[:4] == ["0", "0", "300000", "100"]
    assert out[4] == ns_inode(pid, "user")
    runtime("pause", cid)
    assert runtime.state(cid)["status"] == "paused"
    runtime("resume", cid)
    runtime("delete", "--force", cid)


def test_time_offset_the_kernel_refuses(runtime: Runtime, bundle: Bundle) -> None:
    set_namespaces(bundle, "pid", "network", "ipc", "uts", "mount", "time")
    bundle.config["linux"]["timeOffsets"] = {"boottime": {"secs": -(10**11)}}
    bundle.save()
    cid = unique_id()
    expect_failure(runtime, cid, "create", "--bundle", bundle.path, cid,
                   needle=("linux.timeOffsets", "boottime"))
