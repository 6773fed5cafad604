"""The HTTP side of `isobox serve`, byte-exact: version negotiation, Docker's error shapes for
bad input (nothing changed afterwards), the socket's permissions, graceful shutdown."""

from __future__ import annotations

import json
import os
import stat

import pytest
from api_helpers import ApiServer, Docker, message, raw
from engine_helpers import Isobox

from harness import RUN_PREFIX, unique_id

pytestmark = pytest.mark.engine


def test_ping_and_version_negotiation(api_server: ApiServer) -> None:
    sock = api_server.socket_path
    status, headers, body = raw(sock, "HEAD", "/_ping")
    assert status == 200 and body == b""
    assert headers["Api-Version"] == "1.41" and headers["Ostype"] == "linux"
    assert headers["Docker-Experimental"] == "false" and headers["Builder-Version"] == "1"
    assert raw(sock, "GET", "/_ping")[2] == b"OK"
    for prefix in ("", "/v1.24", "/v1.41"):
        status, _, body = raw(sock, "GET", f"{prefix}/version")
        assert status == 200
        doc = json.loads(body)
        assert (doc["ApiVersion"], doc["MinAPIVersion"]) == ("1.41", "1.24")
    status, _, body = raw(sock, "GET", "/v1.50/version")
    assert status == 400
    assert message(body) == ("client version 1.50 is too new. Maximum supported API "
                             "version is 1.41")
    status, _, body = raw(sock, "GET", "/v1.23/_ping")
    assert status == 400 and "too old" in message(body)
    status, _, body = raw(sock, "GET", "/v1.41/nothing/here")
    assert status == 404 and "page not found" in message(body)


def test_socket_is_0660_group_isobox(api_server: ApiServer) -> None:
    import grp

    st = os.stat(api_server.socket_path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_uid == 0 and st.st_gid == grp.getgrnam("isobox").gr_gid


@pytest.mark.parametrize(("body", "field"), [
    (b"{not json", "malformed JSON"),
    ({"Image": 5}, "Image: expected a string"),
    ({"Image": "busybox", "HostConfig": {"Memory": "lots"}},
     "HostConfig.Memory: expected an integer"),
    ({"Image": "busybox", "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "x"}]}}},
     "HostConfig.PortBindings[80/tcp].HostPort"),
    ({"Image": "busybox", "HostConfig": {"Binds": ["relative:/x:zz"]}}, "HostConfig.Binds"),
    ({"Image": "busybox", "HostConfig": {"Isolation": "hyperv"}}, "HostConfig.Isolation"),
    ({"Image": "busybox", "HostConfig": {"RestartPolicy": {"Name": "sometimes"}}},
     "HostConfig.RestartPolicy"),
    ({"Image": "busybox", "HostConfig": {"LogConfig": {"Type": "asdf"}}},
     "logger: no log driver named 'asdf' is registered"),
])
def test_bad_create_bodies_are_400_naming_the_field(api_server: ApiServer, isobox: Isobox,
                                                    body: object, field: str) -> None:
    status, _, out = raw(api_server.socket_path, "POST", "/v1.41/containers/create", body)
    assert status == 400, out
    assert field in message(out)
    assert isobox.ids() == []  # nothing was made


def test_unknown_objects_are_404_and_conflicts_409(api_server: ApiServer, docker: Docker,
                                                   isobox: Isobox) -> None:
    sock = api_server.socket_path
    status, _, out = raw(sock, "GET", "/v1.41/containers/nosuchthing/json")
    assert status == 404 and message(out) == "No such container: nosuchthing"
    status, _, out = raw(sock, "POST", "/v1.41/containers/create",
                         {"Image": "no-such-image:x"})
    assert status == 404 and message(out) == "No such image: no-such-image:x"
    status, _, out = raw(sock, "GET", "/v1.41/exec/abc/json")
    assert status == 404 and "No such exec instance" in message(out)
    name = unique_id("dup")
    docker("create", "--name", name, "busybox", "true")
    status, _, out = raw(sock, "POST", f"/v1.41/containers/create?name={name}",
                         {"Image": "busybox"})
    assert status == 409, out
    status, _, out = raw(sock, "POST", f"/v1.41/containers/{name}/kill")
    assert status == 409 and "is not running" in message(out)
    status, _, out = raw(sock, "POST", f"/v1.41/containers/{name}/exec", {"Cmd": ["true"]})
    assert status == 409
    status, _, _ = raw(sock, "POST", f"/v1.41/containers/{name}/stop")
    assert status == 304
    status, _, out = raw(sock, "GET", f"/v1.41/containers/{name}/logs")
    assert status == 400 and "at least one stream" in message(out)
    status, _, out = raw(sock, "POST", f"/v1.41/containers/{name}/wait?condition=soon")
    assert status == 400 and "condition" in message(out)
    assert len(isobox.ids()) == 1


def test_list_filters_and_wait_removed_reports_the_exit_code(api_server: ApiServer,
                                                             docker: Docker) -> None:
    sock = api_server.socket_path
    a, b = unique_id("fa"), unique_id("fb")
    docker("create", "--name", a, "--label", "tier=web", "busybox", "true")
    docker("create", "--name", b, "busybox", "true")
    from urllib.parse import quote

    flt = quote(json.dumps({"label": {"tier=web": True}}))
    status, _, out = raw(sock, "GET", f"/v1.41/containers/json?all=1&filters={flt}")
    assert status == 200
    entries = json.loads(out)
    assert [e["Names"] for e in entries] == [[f"/{a}"]]
    assert entries[0]["State"] == "created" and entries[0]["Labels"] == {"tier": "web"}
    status, _, out = raw(sock, "GET", "/v1.41/containers/json?filters=%7Bbad")
    assert status == 400 and message(out).startswith("filters:")
    status, _, out = raw(sock, "GET", "/v1.41/containers/json?all=1&limit=1")
    assert len(json.loads(out)) == 1
    cid = json.loads(raw(sock, "POST", "/v1.41/containers/create",
                         {"Image": "busybox", "Cmd": ["sh", "-c", "exit 6"],
                          "HostConfig": {"AutoRemove": True}})[2])["Id"]
    assert raw(sock, "POST", f"/v1.41/containers/{cid}/start")[0] == 204
    status, _, out = raw(sock, "POST", f"/v1.41/containers/{cid}/wait?condition=removed")
    assert status == 200 and json.loads(out) == {"StatusCode": 6, "Error": None}
    assert raw(sock, "GET", f"/v1.41/containers/{cid}/json")[0] == 404


def test_archive_paths_stay_inside_the_container(api_server: ApiServer, docker: Docker) -> None:
    import base64
    import io
    import tarfile

    sock = api_server.socket_path
    name = unique_id("ar")
    docker("create", "--name", name, "busybox", "true")
    status, headers, _ = raw(sock, "HEAD", f"/v1.41/containers/{name}/archive?path=/etc/passwd")
    assert status == 200
    st = json.loads(base64.b64decode(headers["X-Docker-Container-Path-Stat"]))
    assert st["name"] == "passwd" and st["mode"] & 0o777 == 0o644 and not st["mode"] >> 31
    status, _, out = raw(sock, "GET", f"/v1.41/containers/{name}/archive?path=/nonexistent")
    assert status == 404
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"escaped\n"
        ti = tarfile.TarInfo("../../../../tmp/" + RUN_PREFIX + "-escape")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    status, _, out = raw(sock, "PUT", f"/v1.41/containers/{name}/archive?path=/tmp",
                         buf.getvalue(), {"Content-Type": "application/x-tar"})
    assert status == 400, out
    assert not os.path.exists(f"/tmp/{RUN_PREFIX}-escape")


def test_sigterm_stops_the_server_and_leaves_containers_running(engine_root: str,
                                                                isobox: Isobox) -> None:
    server = ApiServer.start(engine_root, f"/tmp/{RUN_PREFIX}-api2.sock")
    try:
        docker = Docker(server.socket_path)
        name = unique_id("keep")
        docker("run", "-d", "--name", name, "busybox", "sleep", "60")
    finally:
        code = server.stop()
    assert code == 0
    assert not os.path.exists(server.socket_path)
    assert isobox.record(name)["status"] == "running"
    assert isobox("exec", name, "true").returncode == 0
