"""Catalogue cases 46 and 47 through a real `isobox serve`: bind mounts from the API are
validated with moby's messages and nothing is created on the host; options that lift the
default confinement (Privileged, CapAdd ALL/SYS_ADMIN, seccomp=unconfined, Devices) are a
403 naming the field unless the server was started with --allow-privileged, and then they
show in inspect and in the server's audit log; an exec never gets more than its container."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

import docker as docker_py
import pytest
from api_helpers import ApiServer, Docker, message, raw
from engine_helpers import Isobox

from harness import RUN_PREFIX, unique_id

pytestmark = pytest.mark.engine


def create(sock: str, hc: dict[str, object], name: str = "") -> tuple[int, bytes]:
    q = f"?name={name}" if name else ""
    status, _, out = raw(sock, "POST", f"/v1.41/containers/create{q}",
                         {"Image": "busybox", "Cmd": ["sleep", "60"], "HostConfig": hc})
    return status, out


# -- case 46 ------------------------------------------------------------------------------

@pytest.mark.parametrize(("hc", "expect"), [
    ({"Binds": [f"/nonexistent-{RUN_PREFIX}/x:/data"]},
     f'invalid mount config for type "bind": bind source path does not exist: '
     f"/nonexistent-{RUN_PREFIX}/x"),
    ({"Mounts": [{"Type": "bind", "Source": f"/nonexistent-{RUN_PREFIX}/x", "Target": "/d"}]},
     f"bind source path does not exist: /nonexistent-{RUN_PREFIX}/x"),
    ({"Binds": ["/tmp:/"]}, "invalid specification: destination can't be '/'"),
    ({"Mounts": [{"Type": "bind", "Source": "/tmp", "Target": "/"}]},
     "invalid specification: destination can't be '/'"),
    ({"Binds": ["/tmp:relative/path"]},
     'invalid mount config for type "bind": invalid mount path: \'relative/path\' mount path '
     "must be absolute"),
    ({"Binds": ["relative/src:/x"]}, "includes invalid characters for a local volume name"),
    ({"Binds": ["/tmp:/a/../../b"]}, "leaves the container's root through '..'"),
    ({"Binds": ["/tmp:/proc/sys"]}, '"/proc/sys" cannot be mounted because it is inside /proc'),
    ({"Binds": ["/tmp:/proc"]}, '"/proc" cannot be mounted because it is not of type proc'),
    ({"Mounts": [{"Type": "bind", "Source": "/tmp", "Target": "/sys/kernel"}]},
     "cannot be mounted because it is inside /sys"),
])
def test_case46_bad_binds_are_400_and_nothing_is_made(api_server: ApiServer, isobox: Isobox,
                                                      hc: dict[str, object],
                                                      expect: str) -> None:
    status, out = create(api_server.socket_path, hc)
    assert status == 400, out
    assert expect in message(out)
    assert isobox.ids() == []
    assert not os.path.exists(f"/nonexistent-{RUN_PREFIX}")   # no host mkdir


def test_case46_data_root_needs_slave_propagation(api_server: ApiServer, isobox: Isobox,
                                                  engine_root: str) -> None:
    sock = api_server.socket_path
    status, out = create(sock, {"Binds": [f"{engine_root}:/store:private"]})
    assert status == 400
    assert message(out).startswith('invalid mount config: must use either propagation mode '
                                   '"rslave" or "rshared" when mount source is within the '
                                   f'daemon root, daemon root: "{engine_root}"')
    status, out = create(sock, {"Binds": ["/:/host:rprivate"]})   # contains the data root
    assert status == 400 and "within the daemon root" in message(out)
    assert isobox.ids() == []
    name = unique_id("dr")
    status, out = create(sock, {"Binds": [f"{engine_root}/layers:/store:ro"]}, name)
    assert status == 201, out
    assert raw(sock, "POST", f"/v1.41/containers/{name}/start")[0] == 204
    with open(os.path.join(engine_root, "containers", isobox.record(name)["id"],
                           "config.json")) as f:
        mounts = {m["destination"]: m for m in json.load(f)["mounts"]}
    assert "rslave" in mounts["/store"]["options"]       # moby's default for the data root


def test_case46_binding_the_api_socket_is_allowed_and_logged(api_server: ApiServer,
                                                             docker: Docker) -> None:
    name = unique_id("sockbind")
    docker("create", "--name", name, "-v", f"{api_server.socket_path}:/var/run/docker.sock",
           "busybox", "true")
    assert (f"bind-mounting the socket {api_server.socket_path} into a container"
            in api_server.log())


# -- case 47 ------------------------------------------------------------------------------

REFUSED = [
    ({"Privileged": True}, "HostConfig.Privileged: true"),
    ({"CapAdd": ["ALL"]}, "HostConfig.CapAdd: ALL"),
    ({"CapAdd": ["sys_admin"]}, "HostConfig.CapAdd: sys_admin"),
    ({"CapAdd": ["CAP_SYS_MODULE"]}, "HostConfig.CapAdd: CAP_SYS_MODULE"),
    ({"SecurityOpt": ["seccomp=unconfined"]}, "HostConfig.SecurityOpt: seccomp=unconfined"),
    ({"Devices": [{"PathOnHost": "/dev/loop0", "PathInContainer": "/dev/sda",
                   "CgroupPermissions": "rwm"}]}, "HostConfig.Devices: /dev/loop0"),
]


@pytest.mark.parametrize(("hc", "field"), REFUSED, ids=[f for _, f in REFUSED])
def test_case47_escalations_are_403_naming_the_option(api_server: ApiServer, isobox: Isobox,
                                                      hc: dict[str, object],
                                                      field: str) -> None:
    status, out = create(api_server.socket_path, hc)
    assert status == 403, out
    assert message(out).startswith(field + ": refused")
    assert "--allow-privileged" in message(out)
    assert isobox.ids() == []


def test_case47_docker_cli_and_docker_py_see_the_refusal(api_server: ApiServer,
                                                         docker: Docker,
                                                         isobox: Isobox) -> None:
    p = docker("run", "--rm", "--privileged", "busybox", "true", check=False)
    assert p.returncode != 0 and "HostConfig.Privileged: true: refused" in p.stderr
    client = docker_py.DockerClient(base_url=f"unix://{api_server.socket_path}")
    try:
        with pytest.raises(docker_py.errors.APIError) as err:
            client.containers.create("busybox", "true", cap_add=["ALL"])
        assert err.value.status_code == 403
        # what stays within Docker's defaults is fine (NET_ADMIN acts on its own netns)
        c = client.containers.create("busybox", "true", cap_add=["NET_ADMIN"],
                                     security_opt=["no-new-privileges"])
        c.remove()
    finally:
        client.close()
    assert isobox.ids() == []


def test_case47_exec_never_above_its_container(api_server: ApiServer, docker: Docker) -> None:
    sock = api_server.socket_path
    name = unique_id("ex47")
    docker("run", "-d", "--name", name, "busybox", "sleep", "60")
    p = docker("exec", "--privileged", name, "cat", "/proc/self/status", check=False)
    assert p.returncode != 0
    assert "an exec cannot have more privileges than its container" in p.stderr
    status, _, out = raw(sock, "POST", f"/v1.41/containers/{name}/exec",
                         {"Cmd": ["true"], "Privileged": True})
    if status == 201:   # refused when started, as dockerd checks at start
        eid = json.loads(out)["Id"]
        status, _, out = raw(sock, "POST", f"/v1.41/exec/{eid}/start", {"Detach": True})
    assert status in (400, 403), out
    assert "more privileges than its container" in message(out)


@pytest.fixture
def privileged_server(engine_root: str, isobox: Isobox) -> Iterator[ApiServer]:
    server = ApiServer.start(engine_root, f"/tmp/{RUN_PREFIX}-priv.sock", "--allow-privileged")
    yield server
    server.stop()


def test_case47_allowed_is_visible_in_inspect_and_audited(privileged_server: ApiServer,
                                                          isobox: Isobox) -> None:
    sock = privileged_server.socket_path
    name = unique_id("priv")
    status, out = create(sock, {"Privileged": True}, name)
    assert status == 201, out
    cid = json.loads(out)["Id"]
    inspect = json.loads(raw(sock, "GET", f"/v1.41/containers/{name}/json")[2])
    assert inspect["HostConfig"]["Privileged"] is True
    assert re.search(rf"audit: container {cid[:12]} created with HostConfig.Privileged: true",
                     privileged_server.log())
    assert raw(sock, "POST", f"/v1.41/containers/{name}/start")[0] == 204
    status = isobox("exec", name, "grep", "CapEff", "/proc/self/status").stdout
    assert int(status.split()[1], 16) > 0xa80425fb   # beyond Docker's default set
    docker = Docker(sock)
    p = docker("exec", "--privileged", name, "true", check=False)
    assert p.returncode == 0, p.stderr            # as privileged as its container: fine
