"""The real docker CLI (28) against `isobox serve`: images, rmi, tag, history, load, save,
import, commit, image prune, build (classic builder), pull and push with a real registry, and
`docker run` of a missing image pulling it. `isobox images` sees what the API made and the
other way round."""

from __future__ import annotations

import json
import os
import tempfile

import pytest
from api_helpers import Docker, raw
from engine_helpers import Isobox
from images_helpers import (  # noqa: F401  (fixtures)
    Registry,
    docker_build_fixture,
    image_guard_fixture,
    registry_fixture,
    rootfs_tar,
)

from harness import unique_id, wait_for
from isobox.images.store import ImageStore

pytestmark = pytest.mark.engine


def _names(docker: Docker) -> list[str]:
    return docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()


def test_images_tag_inspect_history_rmi(docker_build: Docker, isobox: Isobox) -> None:
    docker = docker_build
    name = f"{unique_id('tag')}/bb:v1"
    assert "busybox:latest" in _names(docker)
    docker("tag", "busybox", name)
    assert name in _names(docker)
    rows = [json.loads(ln) for ln in isobox("images", "--format", "json").stdout.splitlines()]
    assert name in [f"{r['Repository']}:{r['Tag']}" for r in rows]  # sees the API's tag
    info = json.loads(docker("image", "inspect", name).stdout)[0]
    assert info["Id"].startswith("sha256:") and name in info["RepoTags"]
    assert info["Config"]["Cmd"] == ["sh"] and info["RootFS"]["Type"] == "layers"
    assert json.loads(docker("inspect", "--type", "image", name).stdout)[0]["Id"] == info["Id"]
    hist = docker("history", "--no-trunc", "--format", "{{.ID}} {{.Size}}", name).stdout
    assert hist.split()[0] == info["Id"]
    out = docker("rmi", name).stdout
    assert out == f"Untagged: {name}\n"  # busybox keeps the image
    assert name not in _names(docker)
    p = docker("rmi", "nosuch-image:v9", check=False)
    assert p.returncode == 1 and "No such image: nosuch-image:v9" in p.stderr
    p = docker("image", "inspect", "nosuch-image:v9", check=False)
    assert p.returncode == 1 and "No such image" in p.stderr


def test_rmi_of_an_image_a_container_uses_is_a_conflict(docker_build: Docker,
                                                        image_guard: ImageStore) -> None:
    docker = docker_build
    name = f"{unique_id('used')}:1"
    tar = rootfs_tar({"hello": b"hi\n"})
    with tempfile.NamedTemporaryFile(suffix=".tar") as f:
        f.write(tar)
        f.flush()
        image_id = docker("import", f.name, name).stdout.strip()
    assert image_id.startswith("sha256:")
    cname = unique_id("user")
    docker("create", "--name", cname, name, "/hello")
    p = docker("rmi", name, check=False)
    assert p.returncode == 1 and "in use by container" in p.stderr
    status, _, body = raw(docker.socket_path, "DELETE", f"/v1.41/images/{name}")
    assert status == 409 and "in use" in json.loads(body)["message"]
    docker("rm", cname)
    out = docker("rmi", name).stdout
    assert out == f"Untagged: {name}\nDeleted: {image_id}\n"


def test_isobox_images_appear_in_docker_and_back(docker_build: Docker, isobox: Isobox,
                                                  image_guard: ImageStore) -> None:
    docker = docker_build
    mine = f"{unique_id('cli')}:x"
    isobox("tag", "busybox", mine)
    assert mine in _names(docker)
    theirs = f"{unique_id('api')}:y"
    docker("tag", "busybox", theirs)
    rows = [json.loads(ln) for ln in isobox("images", "--format", "json").stdout.splitlines()]
    assert theirs in [f"{r['Repository']}:{r['Tag']}" for r in rows]
    docker("rmi", mine)
    isobox("rmi", theirs)
    assert mine not in _names(docker) and theirs not in _names(docker)


def test_images_filters_and_all(docker_build: Docker, image_guard: ImageStore) -> None:
    docker = docker_build
    base = unique_id("flt")
    docker("tag", "busybox", f"{base}/one:a")
    docker("tag", "busybox", f"{base}/two:b")
    got = docker("images", "--filter", f"reference={base}/*", "--format",
                 "{{.Repository}}:{{.Tag}}").stdout.split()
    assert sorted(got) == [f"{base}/one:a", f"{base}/two:b"]
    got = docker("images", "--filter", f"reference={base}/one", "--format",
                 "{{.Repository}}").stdout.split()
    assert got == [f"{base}/one"]
    assert docker("images", "-q", "--filter", "dangling=true").stdout.strip() == ""
    p = docker("images", "--filter", "bogus=1", check=False)
    assert p.returncode == 1 and "invalid filter 'bogus'" in p.stderr


def test_save_and_load_round_trip_with_isobox(docker_build: Docker, isobox: Isobox,
                                              image_guard: ImageStore) -> None:
    docker = docker_build
    name = f"{unique_id('save')}:1"
    docker("tag", "busybox", name)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "img.tar")
        docker("save", "-o", path, name)
        docker("rmi", name)
        out = isobox("load", "-i", path).stdout  # docker's save, isobox's load
        assert out == f"Loaded image: {name}\n"
        isobox("rmi", name)
        other = os.path.join(d, "other.tar")
        isobox("tag", "busybox", name)
        isobox("save", "-o", other, name)
        isobox("rmi", name)
        out = docker("load", "-i", other).stdout  # isobox's save, docker's load
        assert out == f"Loaded image: {name}\n"
        assert name in _names(docker)
        p = docker("save", "-o", os.path.join(d, "none.tar"), "nosuch:1", check=False)
        assert p.returncode == 1 and "No such image: nosuch:1" in p.stderr


def test_import_with_changes_then_run(docker_build: Docker, image_guard: ImageStore) -> None:
    docker = docker_build
    name = f"{unique_id('imp')}:1"
    with tempfile.TemporaryDirectory() as d:
        tar = os.path.join(d, "rootfs.tar")
        with open(tar, "wb") as f:
            f.write(rootfs_tar({"etc/motd": b"imported\n"}))
        image_id = docker("import", "-c", 'CMD ["/etc/motd"]', "-c", "ENV A=b", "-m",
                          "from a test", tar, name).stdout.strip()
    info = json.loads(docker("image", "inspect", name).stdout)[0]
    assert info["Id"] == image_id
    assert info["Config"]["Cmd"] == ["/etc/motd"] and info["Config"]["Env"] == ["A=b"]
    assert info["Comment"] == "from a test"
    hist = docker("history", "--format", "{{.Comment}}", name).stdout
    assert hist == "from a test\n"


def test_commit_a_running_container(docker_build: Docker, isobox: Isobox,
                                    image_guard: ImageStore) -> None:
    docker = docker_build
    name = f"{unique_id('commit')}:1"
    cid = docker("run", "-d", "-e", "FOO=bar", "-w", "/tmp", "busybox", "sh", "-c",
                 "echo data > /tmp/f; sleep 60").stdout.strip()
    # commit takes the files as they are at that moment (Docker's too): wait for the write
    wait_for(lambda: docker("exec", cid, "cat", "/tmp/f", check=False).stdout == "data\n",
             what="the container's write")
    image_id = docker("commit", "-c", "LABEL a=b", "-m", "msg", "-a", "me", cid,
                      name).stdout.strip()
    assert image_id.startswith("sha256:")
    assert docker("inspect", "--format", "{{.State.Status}}", cid).stdout.strip() == "running"
    info = json.loads(docker("image", "inspect", name).stdout)[0]
    cfg = info["Config"]
    assert cfg["Cmd"] == ["sh", "-c", "echo data > /tmp/f; sleep 60"]
    assert "FOO=bar" in cfg["Env"] and cfg["WorkingDir"] == "/tmp"
    assert cfg["Labels"] == {"a": "b"}
    assert (info["Comment"], info["Author"]) == ("msg", "me")
    p = docker("run", "--rm", name, "cat", "/tmp/f")
    assert p.stdout == "data\n"
    # isobox commit drives the same function
    other = f"{unique_id('commit')}:2"
    isobox("commit", cid, other)
    got = json.loads(docker("image", "inspect", other).stdout)[0]["Config"]
    assert got["Cmd"] == cfg["Cmd"]
    docker("rm", "-f", cid)


def test_image_prune_removes_dangling_images(docker_build: Docker,
                                             image_guard: ImageStore) -> None:
    docker = docker_build
    with tempfile.NamedTemporaryFile(suffix=".tar") as f:
        f.write(rootfs_tar({unique_id("dangling"): b"x"}))
        f.flush()
        image_id = docker("import", f.name).stdout.strip()
    assert image_id in docker("images", "-q", "--no-trunc", "--filter",
                              "dangling=true").stdout
    out = docker("image", "prune", "-f").stdout
    assert f"deleted: {image_id}" in out
    assert "busybox:latest" in _names(docker)  # tagged images stay
    assert image_id not in docker("images", "-a", "-q", "--no-trunc").stdout


# build -------------------------------------------------------------------------------------------
def _context(d: str, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = os.path.join(d, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
    return d


def test_build_classic_with_args_labels_ignore_and_tags(docker_build: Docker, isobox: Isobox,
                                                        image_guard: ImageStore) -> None:
    docker = docker_build
    a, b = f"{unique_id('build')}:1", f"{unique_id('build')}:2"
    with tempfile.TemporaryDirectory() as d:
        _context(d, {
            "Containerfile.x": "FROM busybox AS base\nARG WHO=nobody\n"
                               "RUN echo \"hello $WHO\"; echo to-stderr >&2\n"
                               "COPY . /ctx/\nCMD [\"ls\", \"/ctx\"]\n"
                               "FROM base AS extra\nRUN touch /extra\n",
            "keep.txt": "kept\n", "secret.txt": "no\n", ".dockerignore": "secret.txt\n"})
        cf = os.path.join(d, "Containerfile.x")
        common = ("-f", cf, "--build-arg", "WHO=isobox", "--label", "team=api", "--target",
                  "base")
        p = docker("build", *common, "-t", a, "-t", b, d)
        assert "Step 1/6 : FROM busybox AS base" in p.stdout
        assert "hello isobox\n" in p.stdout and "to-stderr\n" in p.stdout
        assert "Step 6/6 : LABEL" in p.stdout  # the labels step; stage extra not built
        assert "touch /extra" not in p.stdout
        short = p.stdout.split("Successfully built ")[1].split()[0]
        assert f"Successfully tagged {a}\nSuccessfully tagged {b}\n" in p.stdout
        info = json.loads(docker("image", "inspect", a).stdout)[0]
        assert info["Id"][7:19] == short and b in info["RepoTags"]
        assert info["Config"]["Labels"] == {"team": "api"}
        assert docker("run", "--rm", a).stdout.split() == ["Containerfile.x", "keep.txt"]
        assert a.split(":")[0] in isobox("images").stdout  # built through the API
        again = docker("build", "-q", *common, "-t", a, d).stdout
        assert again.strip() == info["Id"]  # every step from the cache


def test_build_failures(docker_build: Docker, image_guard: ImageStore) -> None:
    docker = docker_build
    with tempfile.TemporaryDirectory() as d:
        _context(d, {"Dockerfile": "FROM busybox\nRUN echo before; exit 3\n"})
        p = docker("build", d, check=False)
        assert p.returncode == 3
        assert "before\n" in p.stdout
        assert "The command '/bin/sh -c echo before; exit 3' returned a non-zero code: 3" in \
            p.stderr
        _context(d, {"Dockerfile": "FROM busybox\nBOGUS x\n"})
        p = docker("build", d, check=False)
        assert p.returncode == 1 and "Error response from daemon" in p.stderr
        assert "BOGUS" in p.stderr or "unknown instruction" in p.stderr.lower()
        os.unlink(os.path.join(d, "Dockerfile"))
        os.symlink("/etc/shadow", os.path.join(d, "Dockerfile"))
        p = docker("build", "-f", os.path.join(d, "Dockerfile"), d, check=False)
        assert p.returncode != 0 and "root:" not in p.stdout + p.stderr


# registry ----------------------------------------------------------------------------------------
def test_push_pull_and_run_pulls_a_missing_image(docker_build: Docker, isobox: Isobox,
                                                 registry: Registry,
                                                 image_guard: ImageStore) -> None:
    docker = docker_build
    ref = f"{registry.host}/{unique_id('reg')}/bb:1"
    docker("tag", "busybox", ref)
    p = docker("push", ref)
    assert f"The push refers to repository [{ref.rsplit(':', 1)[0]}]" in p.stdout
    assert "1: digest: sha256:" in p.stdout
    docker("rmi", ref)
    p = docker("pull", ref)
    assert "Digest: sha256:" in p.stdout
    assert f"Status: Downloaded newer image for {ref}" in p.stdout
    assert ref in _names(docker)
    assert ref.rsplit(":", 1)[0] in isobox("images").stdout
    p = docker("pull", ref)
    assert f"Status: Image is up to date for {ref}" in p.stdout
    docker("rmi", ref)
    p = docker("run", "--rm", ref, "echo", "pulled")
    assert p.stdout == "pulled\n"
    assert f"Unable to find image '{ref}' locally" in p.stderr
    p = docker("pull", f"{registry.host}/nosuch/repo:1", check=False)
    assert p.returncode == 1 and "not found" in p.stderr
    p = docker("run", "--pull", "never", "--rm", f"{registry.host}/nosuch/repo:1",
               check=False)
    assert p.returncode == 125
