"""docker-py 7 against `isobox serve`: images.list/get/build (a gzip context, a fileobj
context, build errors), load, pull, push with X-Registry-Auth to a registry that wants a
login, remove; and bad build contexts sent raw (a Dockerfile or .dockerignore that points
out of the context, a `../` entry) refused with nothing read or written outside."""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from collections.abc import Iterator

import docker
import pytest
from api_helpers import ApiServer, raw
from images_helpers import (  # noqa: F401  (fixtures)
    Registry,
    htpasswd_line,
    image_guard_fixture,
    rootfs_tar,
)

from harness import unique_id
from isobox.images.store import ImageStore

pytestmark = pytest.mark.engine


@pytest.fixture
def client(api_server: ApiServer, image_guard: ImageStore) -> Iterator[docker.DockerClient]:
    c = docker.DockerClient(base_url=f"unix://{api_server.socket_path}", version="auto")
    yield c
    c.close()


def _tar(files: dict[str, bytes | str], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            body = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return buf.getvalue()


def test_list_get_and_remove(client: docker.DockerClient) -> None:
    name = f"{unique_id('py')}:1"
    bb = client.images.get("busybox")
    assert bb.id.startswith("sha256:") and "busybox:latest" in bb.tags
    assert bb.tag(name.split(":")[0], "1")
    listed = client.images.list(name=name.split(":")[0])
    assert [i.id for i in listed] == [bb.id]
    assert name in client.images.get(name).tags
    assert any(i.id == bb.id for i in client.images.list())
    client.images.remove(name)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(name)
    hist = client.api.history("busybox")
    assert hist[0]["Id"] == bb.id and isinstance(hist[0]["Created"], int)


def test_build_from_a_directory_with_gzip(client: docker.DockerClient) -> None:
    tag = f"{unique_id('pybuild')}:1"
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "Dockerfile"), "w") as f:
            f.write("FROM busybox\nARG V\nCOPY data.txt /data.txt\n"
                    "RUN echo \"v=$V\" >> /data.txt\nCMD [\"cat\", \"/data.txt\"]\n")
        with open(os.path.join(d, "data.txt"), "w") as f:
            f.write("from the context\n")
        image, stream = client.images.build(path=d, tag=tag, gzip=True, buildargs={"V": "7"},
                                            labels={"k": "v"}, rm=True)
    logs = list(stream)
    lines = [e.get("stream", "") for e in logs]
    assert any(line.startswith("Successfully built ") for line in lines)
    assert any("aux" in e for e in logs)
    assert tag in image.tags and image.labels == {"k": "v"}
    out = client.containers.run(tag, remove=True)
    assert out == b"from the context\nv=7\n"


def test_build_from_a_gzip_fileobj_and_errors(client: docker.DockerClient) -> None:
    import gzip

    tag = f"{unique_id('pyobj')}:1"
    ctx = gzip.compress(_tar({"Dockerfile": "FROM busybox\nRUN touch /made\n"}))
    image, _ = client.images.build(fileobj=io.BytesIO(ctx), custom_context=True,
                                   encoding="gzip", tag=tag)
    assert tag in image.tags
    bad = _tar({"Dockerfile": "FROM busybox\nRUN exit 1\n"})
    with pytest.raises(docker.errors.BuildError) as e:
        client.images.build(fileobj=io.BytesIO(bad), custom_context=True)
    assert "The command '/bin/sh -c exit 1' returned a non-zero code: 1" in str(e.value)
    with pytest.raises(docker.errors.APIError) as e2:
        client.images.build(fileobj=io.BytesIO(_tar({"x": "y"})), custom_context=True)
    assert "Cannot locate specified Dockerfile: Dockerfile" in str(e2.value)


def test_load_saved_images(client: docker.DockerClient) -> None:
    name = f"{unique_id('pyload')}:1"
    client.images.get("busybox").tag(name)
    data = b"".join(client.images.get(name).save(named=name))
    client.images.remove(name)
    loaded = client.images.load(data)
    assert [name] == [t for i in loaded for t in i.tags if t == name]


def test_pull_and_push_with_registry_auth(client: docker.DockerClient,
                                          image_guard: ImageStore) -> None:
    reg = Registry(htpasswd=htpasswd_line("alice", "s3cret"))
    try:
        repo = f"{reg.host}/{unique_id('auth')}/bb"
        client.images.get("busybox").tag(repo, "1")
        out = client.images.push(repo, "1")  # no credentials: refused in-band
        assert "unauthorized" in out
        auth = {"username": "alice", "password": "s3cret"}
        out = client.images.push(repo, "1", auth_config=auth)
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert not any("error" in e for e in events), out
        assert events[-1]["aux"]["Tag"] == "1"
        client.images.remove(f"{repo}:1")
        with pytest.raises(docker.errors.APIError):
            client.images.pull(repo, "1")  # needs the login
        image = client.images.pull(repo, "1", auth_config=auth)
        assert f"{repo}:1" in image.tags
        assert image.id == client.images.get("busybox").id
    finally:
        reg.stop()


def _build_raw(socket: str, body: bytes, query: str = "") -> tuple[int, str]:
    status, _, out = raw(socket, "POST", f"/v1.41/build?t=ibx-evil{query}", body,
                         {"Content-Type": "application/x-tar"})
    return status, out.decode(errors="replace")


def test_contexts_that_point_outside_are_refused(api_server: ApiServer,
                                                 image_guard: ImageStore) -> None:
    sock = api_server.socket_path
    status, out = _build_raw(sock, _tar({}, {"Dockerfile": "/etc/shadow"}))
    assert status == 400 and "root:" not in out
    status, out = _build_raw(sock, _tar({"sub/x": ""}, {"lnk": "/etc"}),
                             "&dockerfile=lnk/shadow")
    assert status == 400 and "root:" not in out  # resolved inside the context: missing
    status, out = _build_raw(sock, _tar({"Dockerfile": "FROM busybox\n"},
                                        {".dockerignore": "/etc/shadow"}))
    assert status == 400 and ".dockerignore: must be a regular file" in out
    status, out = _build_raw(sock, _tar({"../escape": "x", "Dockerfile": "FROM busybox\n"}))
    assert status == 400 and not os.path.exists(os.path.join(image_guard.root, "escape"))
    assert os.listdir(os.path.join(image_guard.root, "build-contexts")) == []
    status, out = _build_raw(sock, b"", "&remote=https://example.com/ctx.tar")
    assert status == 400 and "remote" in out


def test_import_refuses_urls_and_bad_names(api_server: ApiServer,
                                           image_guard: ImageStore) -> None:
    sock = api_server.socket_path
    status, _, body = raw(sock, "POST", "/v1.41/images/create?fromSrc=http://x/y.tar", b"")
    assert status == 400 and "fromSrc" in json.loads(body)["message"]
    status, _, body = raw(sock, "POST", "/v1.41/images/create?fromSrc=-&repo=Bad%20Name",
                          rootfs_tar({"a": b"b"}))
    assert status == 400
    status, _, body = raw(sock, "POST", "/v1.41/images/create", b"")
    assert status == 400
    status, _, body = raw(sock, "POST", "/v1.41/images/busybox/tag")
    assert status == 400 and json.loads(body)["message"] == "repo: required"
    status, _, body = raw(sock, "GET", "/v1.41/images/nosuch:1/json")
    assert status == 404 and json.loads(body)["message"] == "No such image: nosuch:1"
