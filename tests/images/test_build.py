"""``isobox build`` as a user runs it: real subprocesses, a private store root, a busybox base
image bootstrapped offline, RUN steps in real containers (isobox-runtime).

Every test checks afterwards that no snapshot, mount, runtime state or cgroup is left."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness import mounts_under
from isobox.images.bootstrap import bootstrap_busybox
from isobox.images.snapshots import Snapshots
from isobox.images.store import ImageRecord, ImageStore

ISOBOX = os.path.join(os.path.dirname(sys.executable), "isobox")
BUILD_CGROUP_PREFIX = "isoboxbuild-"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, runtime)")


def isobox(root: str, *args: str, check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([ISOBOX, "--root", root, *args], capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


def build_cgroups() -> list[str]:
    found = []
    for base, dirs, _ in os.walk("/sys/fs/cgroup"):
        found.extend(os.path.join(base, d) for d in dirs if d.startswith(BUILD_CGROUP_PREFIX))
        if base.count("/") > 5:
            dirs[:] = []
    return found


def leftovers(root: str) -> dict[str, Any]:
    store = ImageStore(root)
    try:
        snaps = [s["id"] for s in store.db.snapshots()]
    finally:
        store.close()
    rt = os.path.join(root, "build-runtime")
    bundles = os.path.join(root, "build-bundles")
    return {
        "snapshots": snaps,
        "snapshot dirs": os.listdir(os.path.join(root, "snapshots")),
        "runtime state": [n for n in os.listdir(rt) if not n.startswith(".")]  # .seccomp-cache
        if os.path.isdir(rt) else [],
        "bundles": os.listdir(bundles) if os.path.isdir(bundles) else [],
        "mounts": mounts_under(root),
        "cgroups": build_cgroups(),
    }


def assert_clean(root: str) -> None:
    left = {k: v for k, v in leftovers(root).items() if v}
    assert not left, f"build left things behind: {left}"


@pytest.fixture
def broot(store_root: str) -> Iterator[str]:
    """A store root with busybox:latest in it."""
    store = ImageStore(store_root)
    try:
        bootstrap_busybox(store)
    finally:
        store.close()
    yield store_root
    assert_clean(store_root)


@pytest.fixture
def ctx(tmp_path: Any) -> str:
    d = tmp_path / "ctx"
    d.mkdir()
    return str(d)


def write(path: str, text: str | bytes, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)
    os.chmod(path, mode)


def image(root: str, ref: str) -> ImageRecord:
    store = ImageStore(root)
    try:
        return store.resolve(ref)
    finally:
        store.close()


class Rootfs:
    """A mounted snapshot of an image, for looking at its files."""

    def __init__(self, root: str, ref: str) -> None:
        self.store = ImageStore(root)
        self.snaps = Snapshots(self.store)
        self.id = f"test-view-{os.getpid()}-{time.monotonic_ns()}"
        self.snap = self.snaps.create(self.id, image_id=self.store.resolve_id(ref))
        self.path = self.snap.rootfs

    def read(self, rel: str) -> str:
        with open(os.path.join(self.path, rel.lstrip("/"))) as f:
            return f.read()

    def exists(self, rel: str) -> bool:
        return os.path.lexists(os.path.join(self.path, rel.lstrip("/")))

    def stat(self, rel: str) -> os.stat_result:
        return os.lstat(os.path.join(self.path, rel.lstrip("/")))

    def __enter__(self) -> Rootfs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.snaps.remove(self.id)
        self.store.close()


# --------------------------------------------------------------------------- tests


def test_run_shell_and_exec_form_and_config(broot: str, ctx: str) -> None:
    write(f"{ctx}/Containerfile", """\
FROM busybox
LABEL org.example.a=1 b="two words"
ENV APP=/srv/app
WORKDIR $APP
RUN echo shell-form > shell.txt && echo "cwd=$(pwd) host=$(hostname)" > info.txt
RUN ["/bin/sh", "-c", "echo exec-form > /exec.txt"]
USER nobody
EXPOSE 8080 53/udp
VOLUME /data
ENTRYPOINT ["/bin/echo"]
CMD ["hi"]
""")
    p = isobox(broot, "build", "-t", "cfg:1", ctx)
    assert "STEP 1/11: FROM busybox" in p.stdout
    assert "STEP 5/11: RUN echo shell-form" in p.stdout
    rec = image(broot, "cfg:1")
    assert p.stdout.strip().splitlines()[-1] == rec.id[7:]
    cfg = rec.config.raw["config"]
    assert cfg["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                          "APP=/srv/app"]
    assert cfg["WorkingDir"] == "/srv/app"
    assert cfg["User"] == "nobody"
    assert cfg["Labels"] == {"org.example.a": "1", "b": "two words"}
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["Entrypoint"] == ["/bin/echo"] and cfg["Cmd"] == ["hi"]
    hist = rec.config.raw["history"]
    built = hist[-10:]
    assert [h.get("empty_layer", False) for h in built] == [
        True, True, False, False, False, True, True, True, True, True]
    assert built[3]["created_by"].startswith("RUN /bin/sh -c echo shell-form")
    assert built[4]["created_by"] == 'RUN /bin/sh -c echo exec-form > /exec.txt # buildkit' \
        or built[4]["created_by"].startswith("RUN ")
    # one layer for the base, WORKDIR, and the two RUNs
    assert len(rec.layers) == 4
    with Rootfs(broot, "cfg:1") as fs:
        assert fs.read("/srv/app/shell.txt") == "shell-form\n"
        assert fs.read("/srv/app/info.txt") == "cwd=/srv/app host=buildkitsandbox\n"
        assert fs.read("/exec.txt") == "exec-form\n"
    assert "cfg" in isobox(broot, "images").stdout


def test_multistage_copy_from_and_target(broot: str, ctx: str) -> None:
    write(f"{ctx}/Containerfile", """\
FROM busybox AS builder
RUN mkdir -p /out && echo built > /out/artifact && chown 65534:65534 /out/artifact
FROM busybox AS unused
RUN echo this-stage-is-not-needed
FROM builder AS tester
RUN test -f /out/artifact && echo tested > /out/tested
FROM scratch
COPY --from=builder /out/artifact /artifact
COPY --from=2 /out/ /all/
""")
    p = isobox(broot, "build", "-t", "ms:final", ctx)
    assert "this-stage-is-not-needed" not in p.stdout
    rec = image(broot, "ms:final")
    assert len(rec.layers) == 2  # from scratch: the two COPY layers only
    with Rootfs(broot, "ms:final") as fs:
        assert fs.read("/artifact") == "built\n"
        assert fs.stat("/artifact").st_uid == 65534  # --from keeps owners
        assert fs.read("/all/tested") == "tested\n" and fs.read("/all/artifact") == "built\n"
        assert not fs.exists("/bin/busybox")
    p = isobox(broot, "build", "--target", "builder", "-t", "ms:builder", ctx)
    assert "STEP 2/2:" in p.stdout and "Using cache" in p.stdout
    with Rootfs(broot, "ms:builder") as fs:
        assert fs.read("/out/artifact") == "built\n" and fs.exists("/bin/busybox")
    p = isobox(broot, "build", "--target", "nosuch", ctx, check=False)
    assert p.returncode == 1 and 'target stage "nosuch" could not be found' in p.stderr


def test_copy_chown_chmod_and_dest_rules(broot: str, ctx: str) -> None:
    write(f"{ctx}/f.txt", "file\n", 0o600)
    write(f"{ctx}/dir/a", "a\n")
    write(f"{ctx}/dir/sub/b", "b\n", 0o755)
    os.symlink("a", f"{ctx}/dir/link")
    write(f"{ctx}/Containerfile", """\
FROM busybox
RUN adduser -D -u 1234 app 2>/dev/null || echo 'app:x:1234:4321::/home/app:/bin/sh' >> /etc/passwd
COPY --chown=nobody:nogroup f.txt /owned/
COPY --chown=1234 dir /tree
COPY --chmod=0640 f.txt /renamed.txt
WORKDIR /w
COPY f.txt rel/
""")
    isobox(broot, "build", "-t", "cp:1", ctx)
    with Rootfs(broot, "cp:1") as fs:
        st = fs.stat("/owned/f.txt")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (65534, 65534, 0o600)
        st = fs.stat("/tree/sub/b")
        assert st.st_uid == 1234 and st.st_mode & 0o777 == 0o755
        assert fs.read("/tree/a") == "a\n" and os.readlink(f"{fs.path}/tree/link") == "a"
        st = fs.stat("/renamed.txt")
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o640)
        assert fs.read("/w/rel/f.txt") == "file\n"


def test_copy_never_follows_symlinks_out_of_the_rootfs(broot: str, ctx: str,
                                                       tmp_path: Any) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write(f"{ctx}/payload", "payload\n")
    write(f"{ctx}/Containerfile", f"""\
FROM busybox
RUN mkdir -p {outside} && ln -s {outside} /escape && ln -s {outside}/victim /victimlink
COPY payload /escape/
COPY payload /victimlink
""")
    isobox(broot, "build", "-t", "sym:1", ctx)
    assert os.listdir(outside) == []
    with Rootfs(broot, "sym:1") as fs:
        # the symlinked directory resolved inside the rootfs; the final symlink was replaced
        assert fs.read(f"{outside}/payload") == "payload\n"
        assert not os.path.islink(f"{fs.path}/victimlink")
        assert fs.read("/victimlink") == "payload\n"
    # a symlink dangling inside the rootfs (its target exists only on the host) is refused
    write(f"{ctx}/Containerfile", f"FROM busybox\nRUN ln -s {outside} /escape\n"
          "COPY payload /escape/\n")
    p = isobox(broot, "build", ctx, check=False)
    assert p.returncode == 1 and "/escape" in p.stderr and "Traceback" not in p.stderr
    assert os.listdir(outside) == []


def test_add_local_tar_is_extracted(broot: str, ctx: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b"inside the tar\n"
        ti = tarfile.TarInfo("pkg/inner.txt")
        ti.size = len(data)
        tf.addfile(ti, io.BytesIO(data))
    write(f"{ctx}/pkg.tar.gz", buf.getvalue())
    write(f"{ctx}/plain.txt", "plain\n")
    write(f"{ctx}/Containerfile", """\
FROM busybox
ADD pkg.tar.gz /opt/
ADD plain.txt /opt/plain.txt
""")
    isobox(broot, "build", "-t", "add:1", ctx)
    with Rootfs(broot, "add:1") as fs:
        assert fs.read("/opt/pkg/inner.txt") == "inside the tar\n"
        assert not fs.exists("/opt/pkg.tar.gz")
        assert fs.read("/opt/plain.txt") == "plain\n"
    write(f"{ctx}/Containerfile", "FROM busybox\nADD https://example.invalid/x.tgz /\n")
    p = isobox(broot, "build", ctx, check=False)
    assert p.returncode == 1 and "ADD from a URL" in p.stderr and "Traceback" not in p.stderr


def test_env_arg_and_build_arg_substitution(broot: str, ctx: str) -> None:
    write(f"{ctx}/Containerfile", """\
ARG BASE=busybox
FROM $BASE
ARG NAME=default
ARG UNSET
ENV GREETING=hello-$NAME
RUN echo "$GREETING $NAME [$UNSET]" > /greet
""")
    isobox(broot, "build", "-t", "arg:1", "--build-arg", "NAME=world", ctx)
    rec = image(broot, "arg:1")
    assert "GREETING=hello-world" in rec.config.raw["config"]["Env"]
    assert not any(e.startswith("NAME=") for e in rec.config.raw["config"]["Env"])
    assert rec.config.raw["history"][-1]["created_by"].startswith("RUN |1 NAME=world /bin/sh")
    with Rootfs(broot, "arg:1") as fs:
        assert fs.read("/greet") == "hello-world world []\n"
    # a different build arg is a different RUN cache key
    p = isobox(broot, "build", "-t", "arg:2", "--build-arg", "NAME=moon", ctx)
    assert "Using cache" not in p.stdout  # ARG NAME=moon already differs
    with Rootfs(broot, "arg:2") as fs:
        assert fs.read("/greet") == "hello-moon moon []\n"


def test_dockerignore(broot: str, ctx: str) -> None:
    write(f"{ctx}/keep.txt", "keep\n")
    write(f"{ctx}/secret.key", "secret\n")
    write(f"{ctx}/logs/a.log", "log\n")
    write(f"{ctx}/logs/important.log", "important\n")
    write(f"{ctx}/.dockerignore", "*.key\nlogs/*.log\n!logs/important.log\n")
    write(f"{ctx}/Containerfile", "FROM busybox\nCOPY . /ctx/\n")
    isobox(broot, "build", "-t", "ign:1", ctx)
    with Rootfs(broot, "ign:1") as fs:
        assert fs.read("/ctx/keep.txt") == "keep\n"
        assert not fs.exists("/ctx/secret.key") and not fs.exists("/ctx/logs/a.log")
        assert fs.read("/ctx/logs/important.log") == "important\n"
    # an ignored file changing does not bust the cache
    write(f"{ctx}/secret.key", "changed\n")
    p = isobox(broot, "build", "-t", "ign:2", ctx)
    assert "Using cache" in p.stdout
    assert image(broot, "ign:2").id == image(broot, "ign:1").id
    write(f"{ctx}/Containerfile", "FROM busybox\nCOPY secret.key /\n")
    p = isobox(broot, "build", ctx, check=False)
    assert p.returncode == 1 and "secret.key" in p.stderr


def test_cache_hit_on_unchanged_rebuild_and_miss_after_change(broot: str, ctx: str) -> None:
    write(f"{ctx}/app.txt", "v1\n")
    write(f"{ctx}/Containerfile", """\
FROM busybox
RUN echo RAN-FIRST-RUN | tee /first
COPY app.txt /app.txt
RUN echo RAN-SECOND-RUN && cat /app.txt > /copy
CMD ["cat", "/copy"]
""")
    first = isobox(broot, "build", "-t", "cache:1", ctx)
    assert "\nRAN-FIRST-RUN\n" in first.stdout and "\nRAN-SECOND-RUN\n" in first.stdout
    assert "Using cache" not in first.stdout
    id1 = image(broot, "cache:1").id
    second = isobox(broot, "build", "-t", "cache:2", ctx)
    assert second.stdout.count("--> Using cache") == 4
    ran = [ln for ln in second.stdout.splitlines() if ln.startswith("RAN-")]
    assert ran == []  # nothing executed
    assert image(broot, "cache:2").id == id1
    write(f"{ctx}/app.txt", "v2\n")
    third = isobox(broot, "build", "-t", "cache:3", ctx)
    assert third.stdout.count("--> Using cache") == 1  # only the first RUN
    assert "\nRAN-SECOND-RUN\n" in third.stdout
    assert image(broot, "cache:3").id != id1
    with Rootfs(broot, "cache:3") as fs:
        assert fs.read("/copy") == "v2\n"
    nocache = isobox(broot, "build", "--no-cache", "-t", "cache:4", ctx)
    assert "Using cache" not in nocache.stdout and "\nRAN-FIRST-RUN\n" in nocache.stdout
    quiet = isobox(broot, "build", "-q", ctx)
    assert quiet.stdout == image(broot, "cache:4").id + "\n"


def test_failing_run_reports_and_cleans_up(broot: str, ctx: str) -> None:
    write(f"{ctx}/Containerfile", """\
FROM busybox
RUN echo before > /before
RUN echo about-to-fail; exit 3
RUN echo never
""")
    p = isobox(broot, "build", "-t", "fail:1", ctx, check=False)
    assert p.returncode == 1
    assert 'isobox: error: build step 3 "RUN echo about-to-fail; exit 3" failed: exit status 3' \
        in p.stderr
    assert "about-to-fail" in p.stdout and "never" not in p.stdout.replace("RUN echo never", "")
    assert "Traceback" not in p.stderr
    assert_clean(broot)
    p = isobox(broot, "image", "inspect", "fail:1", check=False)
    assert p.returncode == 1
    # the successful step before it is cached
    p = isobox(broot, "build", ctx, check=False)
    assert p.stdout.count("Using cache") == 1


def test_ctrl_c_during_run_cleans_up(broot: str, ctx: str) -> None:
    write(f"{ctx}/Containerfile", "FROM busybox\nRUN echo started && sleep 60\n")
    proc = subprocess.Popen([ISOBOX, "--root", broot, "build", ctx], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line.strip() == "started" or not line:
                break
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert_clean(broot)


def test_build_container_keeps_default_confinement(broot: str, ctx: str) -> None:
    """Catalogue case 41: image labels cannot weaken a RUN step's sandbox."""
    write(f"{ctx}/Containerfile", """\
FROM busybox
LABEL security.privileged=true seccomp=unconfined io.podman.annotations.seccomp=unconfined
RUN grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status > /status; \
    ip link 2>/dev/null | grep -c '^[0-9]' > /links; cat /proc/self/uid_map > /uidmap
USER nobody
RUN grep -E '^CapEff:' /proc/self/status > /tmp/user-caps
""")
    isobox(broot, "build", "-t", "conf:1", ctx)
    with Rootfs(broot, "conf:1") as fs:
        status = dict(line.split(":\t") for line in fs.read("/status").splitlines())
        assert status["CapEff"] == "00000000a80425fb"
        assert status["CapBnd"] == "00000000a80425fb"
        assert status["Seccomp"] == "2"
        assert fs.read("/links").strip() == "1"  # loopback only: network none
        assert fs.read("/tmp/user-caps") == "CapEff:\t0000000000000000\n"


@pytest.mark.parametrize("hostile", ["fifo", "zero", "proc", "huge"])
def test_hostile_passwd_in_image(broot: str, ctx: str, hostile: str) -> None:
    """Catalogue case 43: USER/--chown names are looked up in a bounded, regular file."""
    make = {
        "fifo": "rm /etc/passwd && mkfifo /etc/passwd",
        "zero": "rm /etc/passwd && ln -s /dev/zero /etc/passwd",
        "proc": "rm /etc/passwd && ln -s /proc/self/environ /etc/passwd",
        "huge": "dd if=/dev/zero of=/etc/passwd bs=1M count=0 seek=11 2>/dev/null",
    }[hostile]
    write(f"{ctx}/f", "x")
    write(f"{ctx}/Containerfile", f"FROM busybox\nRUN {make}\nUSER app\nRUN true\n")
    start = time.monotonic()
    p = isobox(broot, "build", ctx, check=False, timeout=60)
    assert p.returncode == 1, p.stdout
    assert "passwd" in p.stderr and "Traceback" not in p.stderr
    write(f"{ctx}/Containerfile", f"FROM busybox\nRUN {make}\nCOPY --chown=app f /f\n")
    p = isobox(broot, "build", ctx, check=False, timeout=60)
    assert p.returncode == 1 and "passwd" in p.stderr
    assert time.monotonic() - start < 50


def test_several_tags_and_inspect(broot: str, ctx: str) -> None:
    write(f"{ctx}/Containerfile", "FROM busybox\nRUN echo x > /x\n")
    isobox(broot, "build", "-t", "h:1", "-t", "h:2", ctx)
    assert image(broot, "h:1").id == image(broot, "h:2").id
    doc = json.loads(isobox(broot, "image", "inspect", "h:1").stdout)[0]
    assert doc["Config"]["Cmd"] == ["sh"]


def test_workdir_layers_and_copy_into_root_keeps_root_metadata(broot: str, ctx: str) -> None:
    write(f"{ctx}/dir/x", "x\n")
    os.chmod(f"{ctx}/dir", 0o700)
    write(f"{ctx}/Containerfile", """\
FROM busybox
WORKDIR /tmp
USER nobody
WORKDIR /home/nobody/work
USER root
COPY dir/ /
""")
    isobox(broot, "build", "-t", "wd:1", ctx)
    rec = image(broot, "wd:1")
    hist = rec.config.raw["history"][-5:]
    assert [h.get("empty_layer", False) for h in hist] == [True, True, False, True, False]
    assert hist[0]["created_by"] == "WORKDIR /tmp"
    with Rootfs(broot, "wd:1") as fs:
        st = fs.stat("/home/nobody/work")
        assert (st.st_uid, st.st_mode & 0o777) == (65534, 0o755)
        st = fs.stat("/")
        assert (st.st_uid, st.st_mode & 0o777) == (0, 0o755)  # not the context dir's 0700
        assert fs.read("/x") == "x\n"
