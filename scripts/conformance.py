#!/usr/bin/env python3
"""OCI runtime conformance: the same validation tests against runc and isobox-runtime.

Usage: .venv/bin/python scripts/conformance.py [--runtime PATH ...] [--build-dir DIR]
                                                [--test NAME ...] [--timeout S] [--json FILE]

Modelled on opencontainers/runtime-tools' validation suite, which Debian does not ship
(golang-github-opencontainers-runtime-tools-dev has only its library packages, not
validation/ nor cmd/runtimetest): every test starts from the configuration of runtime-tools'
own generator (``generate.New("linux")``, built from the Debian package, with its default
seccomp profile), runs ``runtimetest`` (scripts/conformance_go, built offline in GOPATH mode)
as the container's process on a busybox root filesystem when it checks the inside of a
container, and checks the lifecycle, hooks, namespaces and cgroups from the host. Each test
prints TAP; the same assertions are compared across runtimes by description.

Build artefacts go to --build-dir (default /var/cache/isobox-conformance), built only when
missing or when the Go sources changed. Each test runs in a child process with a timeout;
afterwards every container is deleted, leftover processes, mounts, cgroups and temp dirs
are removed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
GO_SRC = os.path.join(HERE, "conformance_go")
GO_PKG = "isoboxconformance"
GOPATH_SYSTEM = "/usr/share/gocode"
DEFAULT_BUILD_DIR = "/var/cache/isobox-conformance"
APT_PACKAGES = ("golang-go", "golang-github-opencontainers-runtime-tools-dev", "busybox-static")
PREFIX = "ibxconf"
CGROUP_ROOT = "/sys/fs/cgroup"


def default_runtimes() -> list[str]:
    ours = os.path.join(REPO, ".venv", "bin", "isobox-runtime")
    if not os.path.exists(ours):
        ours = shutil.which("isobox-runtime") or ours
    return [shutil.which("runc") or "/usr/sbin/runc", ours]


# --- build ------------------------------------------------------------------------------


def _sources_digest() -> str:
    h = hashlib.sha256()
    for base, dirs, files in sorted(os.walk(GO_SRC)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".go"):
                path = os.path.join(base, name)
                h.update(os.path.relpath(path, GO_SRC).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()[:16]


@dataclass
class Build:
    directory: str
    runtimetest: str
    rootfs: str
    base_config: dict[str, Any]


def build(build_dir: str = DEFAULT_BUILD_DIR, log: Callable[[str], None] = print) -> Build:
    """runtimetest and ocigen (Go, GOPATH mode against Debian's -dev packages), the busybox
    root filesystem and the generator's default config; each made only if missing."""
    digest = _sources_digest()
    out = os.path.join(build_dir, digest)
    runtimetest = os.path.join(out, "runtimetest")
    ocigen = os.path.join(out, "ocigen")
    rootfs = os.path.join(build_dir, "rootfs")
    config_path = os.path.join(out, "default-config.json")
    os.makedirs(out, exist_ok=True)
    if not (os.path.exists(runtimetest) and os.path.exists(config_path)):
        go = shutil.which("go") or "/usr/bin/go"
        if not os.path.exists(go) or not os.path.isdir(
                os.path.join(GOPATH_SYSTEM, "src/github.com/opencontainers/runtime-tools")):
            raise SystemExit("conformance: Go and runtime-tools are missing: apt-get install "
                             + " ".join(APT_PACKAGES))
        gopath = os.path.join(out, "gopath")
        shutil.rmtree(gopath, ignore_errors=True)
        shutil.copytree(GO_SRC, os.path.join(gopath, "src", GO_PKG))
        env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{gopath}:{GOPATH_SYSTEM}",
               "GOCACHE": os.path.join(build_dir, "gocache"), "CGO_ENABLED": "0",
               "GOFLAGS": "-trimpath", "GOTOOLCHAIN": "local", "GOPROXY": "off"}
        t0 = time.monotonic()
        for name in ("runtimetest", "ocigen"):
            subprocess.run([go, "build", "-o", os.path.join(out, name + ".tmp"),
                            f"{GO_PKG}/{name}"], env=env, check=True, cwd=out)
            os.rename(os.path.join(out, name + ".tmp"), os.path.join(out, name))
        cfg = subprocess.run([ocigen], capture_output=True, text=True, check=True).stdout
        with open(config_path + ".tmp", "w") as f:
            f.write(cfg)
        os.rename(config_path + ".tmp", config_path)
        shutil.rmtree(gopath, ignore_errors=True)
        log(f"# built runtimetest and ocigen in {time.monotonic() - t0:.1f}s ({out})")
    if not os.path.exists(os.path.join(rootfs, "bin", "busybox")):
        sys.path.insert(0, HERE)
        import busybox_bundle

        tmp = rootfs + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        busybox_bundle.make_rootfs(tmp)
        os.rename(tmp, rootfs)
    with open(config_path) as f:
        base = json.load(f)
    return Build(build_dir, runtimetest, rootfs, base)


# --- TAP ----------------------------------------------------------------------------------


@dataclass
class Tap:
    results: dict[str, bool | None] = field(default_factory=dict)  # None: skipped
    diagnostics: dict[str, list[str]] = field(default_factory=dict)
    error: str = ""

    @property
    def passed(self) -> int:
        return sum(1 for v in self.results.values() if v)

    @property
    def failed(self) -> int:
        return sum(1 for v in self.results.values() if v is False)


def parse_tap(text: str) -> Tap:
    tap = Tap()
    last: str | None = None
    for line in text.splitlines():
        ok = line.startswith("ok ")
        if ok or line.startswith("not ok "):
            rest = line[3 if ok else 7:].split(" ", 1)
            desc = rest[1] if len(rest) > 1 else ""
            desc = desc[2:] if desc.startswith("- ") else desc
            skipped = "# SKIP" in desc.upper()
            if skipped:
                desc = desc[:desc.upper().index("# SKIP")].rstrip()
            key, n = desc, 2
            while key in tap.results:
                key, n = f"{desc} ({n})", n + 1
            tap.results[key] = None if skipped else ok
            last = key
        elif line.startswith("#") and last is not None:
            tap.diagnostics.setdefault(last, []).append(line[1:].strip())
    return tap


class Emitter:
    """Prints TAP lines for one test."""

    def __init__(self) -> None:
        self.n = 0
        print("TAP version 13", flush=True)

    def ok(self, passed: bool, description: str, diag: str = "") -> bool:
        self.n += 1
        print(f"{'ok' if passed else 'not ok'} {self.n} - {description}")
        if not passed and diag:
            for line in diag.strip().splitlines():
                print(f"# {line}")
        sys.stdout.flush()
        return passed

    def skip(self, description: str, reason: str) -> None:
        self.n += 1
        print(f"ok {self.n} - {description} # SKIP {reason}", flush=True)

    def end(self) -> None:
        print(f"1..{self.n}", flush=True)


# --- driving a runtime ---------------------------------------------------------------------


@dataclass
class Result:
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"exit {self.code}: {(self.err or self.out).strip()[-600:]}"


class Ctx:
    """One test against one runtime: its --root, a scratch dir, bundles, containers."""

    def __init__(self, runtime: str, root: str, scratch: str, b: Build, tap: Emitter) -> None:
        self.runtime = runtime
        self.root = root
        self.scratch = scratch
        self.build = b
        self.t = tap
        self.n = 0

    def new_id(self) -> str:
        self.n += 1
        return f"{PREFIX}-{os.getpid()}-{self.n}"

    def rt(self, *args: str, timeout: float = 30, stdout: str | None = None) -> Result:
        """Runs the runtime; ``stdout`` names a file that receives the stdio of the runtime
        (and so of a container it creates), else a scratch file."""
        out_path = stdout or os.path.join(self.scratch, f"rt-{time.monotonic_ns()}.out")
        err_path = out_path + ".err"
        with open(out_path, "w") as out, open(err_path, "w") as err:
            try:
                code = subprocess.run([self.runtime, "--root", self.root, *args],
                                      stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                      timeout=timeout, check=False).returncode
            except subprocess.TimeoutExpired:
                code = -1
        with open(out_path) as f1, open(err_path) as f2:
            return Result(code, f1.read() if stdout is None else "", f2.read())

    def bundle(self, mutate: Callable[[dict[str, Any]], None] | None = None,
               args: list[str] | None = None) -> str:
        """A bundle whose directory is also the root filesystem (root.path "."), as the
        upstream suite lays it out, with runtimetest at /runtimetest and the config at
        /config.json, where runtimetest reads it."""
        path = tempfile.mkdtemp(prefix="bundle-", dir=self.scratch)
        os.chmod(path, 0o755)
        shutil.copytree(self.build.rootfs, path, symlinks=True, dirs_exist_ok=True,
                        copy_function=os.link)
        shutil.copy2(self.build.runtimetest, os.path.join(path, "runtimetest"))
        cfg = json.loads(json.dumps(self.build.base_config))
        cfg["root"]["path"] = "."
        cfg["process"]["args"] = args or ["/runtimetest", "--path=/"]
        if mutate:
            mutate(cfg)
        self.write_config(path, cfg)
        return path

    @staticmethod
    def write_config(path: str, cfg: dict[str, Any]) -> None:
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)

    def create(self, cid: str, bundle: str, *extra: str, stdout: str | None = None) -> Result:
        return self.rt("create", "--bundle", bundle, *extra, cid,
                       stdout=stdout or os.path.join(bundle, "..", f"{cid}.stdout"))

    def state(self, cid: str) -> dict[str, Any] | None:
        r = self.rt("state", cid)
        if r.code != 0:
            return None
        try:
            return json.loads(r.out)  # type: ignore[no-any-return]
        except ValueError:
            return None

    def wait_status(self, cid: str, status: str, timeout: float = 10) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            st = self.state(cid)
            if (st and st.get("status") == status) or time.monotonic() > deadline:
                return st
            time.sleep(0.05)

    def inside(self, mutate: Callable[[dict[str, Any]], None] | None = None,
               prepare: Callable[[str], None] | None = None) -> None:
        """Like upstream's RuntimeInsideValidate: create, start, wait for the process to stop,
        report runtimetest's own assertions, delete."""
        b = self.bundle(mutate)
        if prepare:
            prepare(b)
        cid = self.new_id()
        out = os.path.join(self.scratch, f"{cid}.stdout")
        r = self.create(cid, b, stdout=out)
        if not self.t.ok(r.code == 0, "create succeeds", str(r)):
            return
        r = self.rt("start", cid)
        self.t.ok(r.code == 0, "start succeeds", str(r))
        st = self.wait_status(cid, "stopped")
        self.t.ok(bool(st and st["status"] == "stopped"), "the container process stops",
                  f"state: {st}")
        with open(out) as f:
            inner = f.read()
        tap = parse_tap(inner)
        if not tap.results:
            self.t.ok(False, "runtimetest reports", inner[-2000:] + self.errlog(out))
        for desc, passed in tap.results.items():
            if passed is None:
                self.t.skip(desc, "by runtimetest")
            else:
                self.t.ok(passed, desc, "\n".join(tap.diagnostics.get(desc, [])))
        r = self.rt("delete", cid)
        self.t.ok(r.code == 0, "delete succeeds", str(r))

    @staticmethod
    def errlog(out: str) -> str:
        with contextlib.suppress(OSError), open(out + ".err") as f:
            return "\nstderr: " + f.read()[-1000:]
        return ""

    def host_dir(self, name: str) -> str:
        d = os.path.join(self.scratch, name)
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o777)
        return d


def bind(cfg: dict[str, Any], source: str, dest: str, ro: bool = False) -> None:
    cfg["mounts"].append({"destination": dest, "type": "bind", "source": source,
                          "options": ["rbind", "ro" if ro else "rw"]})


def ns_inode(pid: int | str, kind: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError as e:
        return f"error: {e}"


NS_FILE = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts", "mount": "mnt",
           "cgroup": "cgroup", "user": "user"}


# --- the tests ----------------------------------------------------------------------------

TESTS: dict[str, Callable[[Ctx], None]] = {}


def test(fn: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    TESTS[fn.__name__.removeprefix("t_")] = fn
    return fn


@test
def t_default(c: Ctx) -> None:
    c.inside()


@test
def t_hostname(c: Ctx) -> None:
    c.inside(lambda cfg: cfg.update(hostname="hostname-specific"))


@test
def t_process(c: Ctx) -> None:
    def m(cfg: dict[str, Any]) -> None:
        cfg["process"]["cwd"] = "/etc"
        cfg["process"]["env"] += ["testa=valuea", "testb=123"]
    c.inside(m)


@test
def t_process_user(c: Ctx) -> None:
    def m(cfg: dict[str, Any]) -> None:
        cfg["process"]["user"] = {"uid": 10, "gid": 10, "additionalGids": [5, 6]}
    c.inside(m)


@test
def t_process_umask(c: Ctx) -> None:
    c.inside(lambda cfg: cfg["process"]["user"].update(umask=0o027))


@test
def t_process_capabilities(c: Ctx) -> None:
    def m(cfg: dict[str, Any]) -> None:
        cfg["process"]["capabilities"] = {
            # as root, execve(2) makes permitted = effective = bounding | inheritable
            "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
            "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
            "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"], "inheritable": ["CAP_KILL"],
            "ambient": []}
    c.inside(m)


@test
def t_process_capabilities_fail(c: Ctx) -> None:
    b = c.bundle(lambda cfg: cfg["process"]["capabilities"]["bounding"].append("CAP_TEST"))
    cid = c.new_id()
    r = c.create(cid, b)
    if r.code == 0:
        r = c.rt("start", cid)
    c.t.ok(r.code != 0, "an unknown capability is an error", "create and start succeeded")


@test
def t_process_oom_score_adj(c: Ctx) -> None:
    c.inside(lambda cfg: cfg["process"].update(oomScoreAdj=500))


@test
def t_process_rlimits(c: Ctx) -> None:
    c.inside(lambda cfg: cfg["process"].update(rlimits=[
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024},
        {"type": "RLIMIT_CORE", "soft": 1024, "hard": 2048},
        {"type": "RLIMIT_NPROC", "soft": 4096, "hard": 4096}]))


@test
def t_process_rlimits_fail(c: Ctx) -> None:
    b = c.bundle(lambda cfg: cfg["process"]["rlimits"].append(
        {"type": "RLIMIT_TEST", "soft": 1024, "hard": 1024}))
    cid = c.new_id()
    r = c.create(cid, b)
    if r.code == 0:
        r = c.rt("start", cid)
    c.t.ok(r.code != 0, "an unknown rlimit type is an error", "create and start succeeded")


@test
def t_root_readonly_true(c: Ctx) -> None:
    c.inside(lambda cfg: cfg["root"].update(readonly=True))


@test
def t_linux_devices(c: Ctx) -> None:
    c.inside(lambda cfg: cfg["linux"].update(devices=[
        {"path": "/dev/test1", "type": "c", "major": 10, "minor": 666, "fileMode": 0o432,
         "uid": 0, "gid": 0},
        {"path": "/dev/test2", "type": "b", "major": 8, "minor": 666, "fileMode": 0o600,
         "uid": 1, "gid": 1},
        {"path": "/dev/test3", "type": "p", "fileMode": 0o640}]))


@test
def t_linux_masked_paths(c: Ctx) -> None:
    def prepare(b: str) -> None:
        os.makedirs(os.path.join(b, "masktest"))
        for p in ("masktest/file", "masked-file"):
            with open(os.path.join(b, p), "w") as f:
                f.write("secret\n")
    c.inside(lambda cfg: cfg["linux"].update(
        maskedPaths=["/masktest", "/masked-file", "/masked-missing"]), prepare)


@test
def t_linux_readonly_paths(c: Ctx) -> None:
    def prepare(b: str) -> None:
        os.makedirs(os.path.join(b, "readonly-dir"))
        with open(os.path.join(b, "readonly-file"), "w") as f:
            f.write("x\n")
    c.inside(lambda cfg: cfg["linux"].update(
        readonlyPaths=["/readonly-dir", "/readonly-file", "/readonly-missing"]), prepare)


@test
def t_linux_sysctl(c: Ctx) -> None:
    c.inside(lambda cfg: cfg["linux"].update(
        sysctl={"net.ipv4.ip_forward": "1", "kernel.shmmni": "2048"}))


@test
def t_linux_uid_mappings(c: Ctx) -> None:
    def m(cfg: dict[str, Any]) -> None:
        cfg["linux"]["namespaces"].append({"type": "user"})
        cfg["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 3200}]
        cfg["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 1000, "size": 3200}]
        # sysfs cannot be mounted in a user namespace without a new network namespace
        # owned by it; as upstream, keep the generator's mounts.
    c.inside(m)


def _propagation(kind: str) -> Callable[[Ctx], None]:
    def run(c: Ctx) -> None:
        c.inside(lambda cfg: cfg["linux"].update(rootfsPropagation=kind))
    return run


for _kind in ("shared", "slave", "private", "unbindable"):
    TESTS[f"linux_rootfs_propagation_{_kind}"] = _propagation(_kind)


@test
def t_mounts(c: Ctx) -> None:
    src = c.host_dir("bind-src")
    with open(os.path.join(src, "hello"), "w") as f:
        f.write("hi\n")

    def m(cfg: dict[str, Any]) -> None:
        cfg["mounts"].append({"destination": "/mnt/tmpfs-test", "type": "tmpfs",
                              "source": "tmpfs", "options": ["nosuid", "size=1m"]})
        bind(cfg, src, "/mnt/bind-test", ro=True)
    c.inside(m)


@test
def t_seccomp_errno(c: Ctx) -> None:
    """A syscall the profile denies returns the errno the profile names."""
    out = c.host_dir("out")

    def m(cfg: dict[str, Any]) -> None:
        cfg["linux"]["seccomp"]["syscalls"].insert(0, {
            "names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1})
        cfg["process"]["capabilities"]["bounding"].append("CAP_SYS_ADMIN")
        cfg["process"]["capabilities"]["effective"].append("CAP_SYS_ADMIN")
        cfg["process"]["capabilities"]["permitted"].append("CAP_SYS_ADMIN")
        bind(cfg, out, "/out")
    b = c.bundle(m, args=["sh", "-c", "hostname foo 2>/out/err; echo $? >/out/rc; "
                                      "mkdir /tmp/x && echo ok >/out/mkdir"])
    cid = c.new_id()
    r = c.rt("run", "--bundle", b, cid, timeout=20)
    c.t.ok(r.code == 0, "run succeeds", str(r))
    rc = _read(os.path.join(out, "rc")).strip()
    c.t.ok(rc not in ("", "0"), "linux.seccomp: a denied syscall fails", f"exit {rc!r}")
    c.t.ok("not permitted" in _read(os.path.join(out, "err")),
           "linux.seccomp: errnoRet is the errno", _read(os.path.join(out, "err")))
    c.t.ok(_read(os.path.join(out, "mkdir")).strip() == "ok",
           "linux.seccomp: an allowed syscall succeeds")
    c.rt("delete", "--force", cid)


def _wait_file(path: str, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


# lifecycle


def _marker_bundle(c: Ctx, cmd: str, mutate: Callable[[dict[str, Any]], None] | None = None
                   ) -> tuple[str, str]:
    out = c.host_dir(f"out{c.n}")

    def m(cfg: dict[str, Any]) -> None:
        bind(cfg, out, "/out")
        if mutate:
            mutate(cfg)
    return c.bundle(m, args=["sh", "-c", cmd]), out


@test
def t_create(c: Ctx) -> None:
    b, out = _marker_bundle(c, "echo started >/out/started")
    cid = c.new_id()
    r = c.rt("create", "--bundle", b, "", timeout=20)
    c.t.ok(r.code != 0, "create with an empty ID is an error", "succeeded")
    r = c.create(cid, b)
    c.t.ok(r.code == 0, "create succeeds", str(r))
    st = c.state(cid)
    c.t.ok(bool(st and st.get("status") == "created"), "state after create is created",
           f"state: {st}")
    time.sleep(0.2)
    c.t.ok(not os.path.exists(os.path.join(out, "started")),
           "create does not run the user-specified program")
    b2, _ = _marker_bundle(c, "true")
    r = c.create(cid, b2)
    c.t.ok(r.code != 0, "create with an ID in use is an error", "succeeded")
    st2 = c.state(cid)
    c.t.ok(bool(st2 and st and st2.get("pid") == st.get("pid") and
                st2.get("status") == "created"),
           "a failed create with an ID in use has no effect on the container", f"{st2}")
    r = c.rt("start", cid)
    c.t.ok(r.code == 0, "start succeeds", str(r))
    st = c.wait_status(cid, "stopped")
    c.t.ok(os.path.exists(os.path.join(out, "started")), "start runs the user-specified program")
    c.rt("delete", cid)


@test
def t_start(c: Ctx) -> None:
    r = c.rt("start", c.new_id())
    c.t.ok(r.code != 0, "start of an unknown container is an error", "succeeded")
    b, out = _marker_bundle(c, "echo x >>/out/runs; sleep 2")
    cid = c.new_id()
    c.create(cid, b)
    r = c.rt("start", cid)
    c.t.ok(r.code == 0, "start of a created container succeeds", str(r))
    st = c.wait_status(cid, "running", 5)
    c.t.ok(bool(st and st["status"] == "running"), "state after start is running", f"{st}")
    r = c.rt("start", cid)
    c.t.ok(r.code != 0, "start of a running container is an error", "succeeded")
    st = c.wait_status(cid, "stopped", 10)
    c.t.ok(bool(st and st["status"] == "stopped"),
           "state is stopped after the process exits", f"{st}")
    r = c.rt("start", cid)
    c.t.ok(r.code != 0, "start of a stopped container is an error", "succeeded")
    c.t.ok(_read(os.path.join(out, "runs")).count("x") == 1,
           "a failed start has no effect: the program ran once", _read(os.path.join(out, "runs")))
    c.rt("delete", cid)


@test
def t_state(c: Ctx) -> None:
    r = c.rt("state", c.new_id())
    c.t.ok(r.code != 0, "state of an unknown container is an error", "succeeded")
    b, _ = _marker_bundle(c, "true", lambda cfg: cfg.update(annotations={"org.isobox.t": "v"}))
    cid = c.new_id()
    c.create(cid, b)
    st = c.state(cid) or {}
    c.t.ok(bool(st.get("ociVersion")), "state has ociVersion", f"{st}")
    c.t.ok(st.get("id") == cid, "state id is the container ID", f"{st}")
    c.t.ok(st.get("status") == "created", "state status is created", f"{st}")
    pid = st.get("pid")
    c.t.ok(isinstance(pid, int) and pid > 0 and os.path.exists(f"/proc/{pid}"),
           "state pid is the container process on the host", f"{st}")
    c.t.ok(st.get("bundle") == os.path.realpath(b), "state bundle is the absolute bundle path",
           f"{st}")
    c.t.ok(st.get("annotations") == {"org.isobox.t": "v"}, "state annotations are the config's",
           f"{st}")
    c.rt("start", cid)
    st = c.wait_status(cid, "stopped") or {}
    c.t.ok(st.get("status") == "stopped", "state status is stopped after exit", f"{st}")
    c.rt("delete", cid)


@test
def t_kill(c: Ctx) -> None:
    r = c.rt("kill", c.new_id(), "KILL")
    c.t.ok(r.code != 0, "kill of an unknown container is an error", "succeeded")
    b, out = _marker_bundle(c, "trap 'exit 0' TERM; touch /out/ready; "
                               "while true; do sleep 0.05; done")
    cid = c.new_id()
    c.create(cid, b)
    r = c.rt("kill", cid, "KILL")
    c.t.ok(r.code == 0, "kill of a created container succeeds", str(r))
    st = c.wait_status(cid, "stopped")
    c.t.ok(bool(st and st["status"] == "stopped"), "a created container killed is stopped",
           f"{st}")
    c.rt("delete", cid)
    cid = c.new_id()
    c.create(cid, b)
    c.rt("start", cid)
    _wait_file(os.path.join(out, "ready"))  # pid 1 of a namespace ignores TERM until trapped
    r = c.rt("kill", cid)
    c.t.ok(r.code == 0, "kill of a running container with the default signal succeeds", str(r))
    st = c.wait_status(cid, "stopped")
    c.t.ok(bool(st and st["status"] == "stopped"),
           "a running container killed with the default signal (TERM) is stopped", f"{st}")
    c.rt("delete", cid)


@test
def t_kill_no_effect(c: Ctx) -> None:
    b, _ = _marker_bundle(c, "true")
    cid = c.new_id()
    c.create(cid, b)
    c.rt("start", cid)
    c.wait_status(cid, "stopped")
    before = c.state(cid)
    r = c.rt("kill", cid, "KILL")
    c.t.ok(r.code != 0, "kill of a stopped container is an error", "succeeded")
    after = c.state(cid)
    c.t.ok(before == after, "kill of a stopped container has no effect", f"{before} {after}")
    c.rt("delete", cid)


@test
def t_killsig(c: Ctx) -> None:
    script = ("trap 'echo $n >>/out/sig' USR1; trap 'exit 0' TERM; n=0; touch /out/ready; "
              "while true; do n=$((n+1)); sleep 0.05; done")
    for spelling in ("USR1", "SIGUSR1", "10"):
        b, out = _marker_bundle(c, script)
        cid = c.new_id()
        c.create(cid, b)
        c.rt("start", cid)
        _wait_file(os.path.join(out, "ready"))
        r = c.rt("kill", cid, spelling)
        deadline = time.monotonic() + 5
        while not _read(os.path.join(out, "sig")) and time.monotonic() < deadline:
            time.sleep(0.05)
        c.t.ok(r.code == 0 and bool(_read(os.path.join(out, "sig"))),
               f"kill delivers a signal named {'by number' if spelling == '10' else spelling}",
               str(r))
        c.rt("kill", cid, "KILL")
        c.wait_status(cid, "stopped")
        c.rt("delete", cid)


@test
def t_delete(c: Ctx) -> None:
    r = c.rt("delete", c.new_id())
    c.t.ok(r.code != 0, "delete of an unknown container is an error", "succeeded")
    b, _ = _marker_bundle(c, "sleep 30")
    cid = c.new_id()
    c.create(cid, b)
    c.rt("start", cid)
    c.wait_status(cid, "running")
    r = c.rt("delete", cid)
    c.t.ok(r.code != 0, "delete of a running container is an error", "succeeded")
    st = c.state(cid)
    c.t.ok(bool(st and st["status"] == "running"), "a failed delete has no effect", f"{st}")
    c.rt("kill", cid, "KILL")
    c.wait_status(cid, "stopped")
    r = c.rt("delete", cid)
    c.t.ok(r.code == 0, "delete of a stopped container succeeds", str(r))
    c.t.ok(c.state(cid) is None, "a deleted container is unknown")
    r = c.create(cid, b)
    c.t.ok(r.code == 0, "the ID of a deleted container can be used again", str(r))
    c.rt("delete", "--force", cid)


def _cgroup_dirs(pid: int) -> dict[str, str]:
    """controller (or "" for v2) → directory of the process's cgroup."""
    dirs = {}
    for line in _read(f"/proc/{pid}/cgroup").splitlines():
        _, ctrls, path = line.split(":", 2)
        for ctrl in ctrls.split(",") if ctrls else [""]:
            ctrl = ctrl.removeprefix("name=")
            base = os.path.join(CGROUP_ROOT, ctrl or "unified")
            if not os.path.isdir(base):
                base = CGROUP_ROOT
            dirs[ctrl] = base + path
    return dirs


@test
def t_delete_resources(c: Ctx) -> None:
    b, _ = _marker_bundle(c, "sleep 30", lambda cfg: cfg["linux"].update(
        cgroupsPath=f"/{PREFIX}-{os.getpid()}-del"))
    cid = c.new_id()
    c.create(cid, b)
    st = c.state(cid) or {}
    pid = st.get("pid", 0)
    dirs = {k: v for k, v in _cgroup_dirs(pid).items() if f"{PREFIX}-" in v} if pid else {}
    c.t.ok(bool(dirs), "the container has its own cgroup", f"{_read(f'/proc/{pid}/cgroup')}")
    c.rt("kill", cid, "KILL")
    c.wait_status(cid, "stopped")
    r = c.rt("delete", cid)
    c.t.ok(r.code == 0, "delete succeeds", str(r))
    left = [d for d in dirs.values() if os.path.exists(d)]
    c.t.ok(not left, "delete removes the cgroups the runtime created", f"{left}")
    state = next((ln.split()[1] for ln in _read(f"/proc/{pid}/status").splitlines()
                  if ln.startswith("State:")), "gone") if pid else "gone"
    # a zombie waits for the host's init to reap it: not the runtime's
    c.t.ok(state in ("gone", "Z"), "delete leaves no container process", f"state {state}")


@test
def t_delete_only_create_resources(c: Ctx) -> None:
    holder = subprocess.Popen(["unshare", "--net", "--ipc", "--uts", "sleep", "60"],
                              stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.2)
        net = ns_inode(holder.pid, "net")
        path = f"/proc/{holder.pid}/ns/net"

        def m(cfg: dict[str, Any]) -> None:
            for ns in cfg["linux"]["namespaces"]:
                if ns["type"] == "network":
                    ns["path"] = path
        b, _ = _marker_bundle(c, "sleep 30", m)
        cid = c.new_id()
        r = c.create(cid, b)
        c.t.ok(r.code == 0, "create joining a network namespace succeeds", str(r))
        c.rt("kill", cid, "KILL")
        c.wait_status(cid, "stopped")
        r = c.rt("delete", cid)
        c.t.ok(r.code == 0, "delete succeeds", str(r))
        c.t.ok(holder.poll() is None and ns_inode(holder.pid, "net") == net,
               "delete leaves a namespace the runtime did not create")
    finally:
        holder.kill()
        holder.wait()


@test
def t_pidfile(c: Ctx) -> None:
    b, _ = _marker_bundle(c, "sleep 30")
    cid = c.new_id()
    pidfile = os.path.join(c.scratch, "pidfile")
    r = c.create(cid, b, "--pid-file", pidfile)
    c.t.ok(r.code == 0, "create with --pid-file succeeds", str(r))
    st = c.state(cid) or {}
    content = _read(pidfile).strip()
    c.t.ok(content == str(st.get("pid")), "the pid file holds the container process's pid",
           f"file {content!r}, state {st.get('pid')}")
    c.rt("delete", "--force", cid)


@test
def t_config_updates_without_affect(c: Ctx) -> None:
    b, out = _marker_bundle(c, "hostname >/out/hostname",
                            lambda cfg: cfg.update(hostname="before"))
    cid = c.new_id()
    c.create(cid, b)
    with open(os.path.join(b, "config.json")) as f:
        cfg = json.load(f)
    cfg["hostname"] = "after"
    cfg["process"]["args"] = ["sh", "-c", "echo changed >/out/hostname"]
    c.write_config(b, cfg)
    c.rt("start", cid)
    c.wait_status(cid, "stopped")
    got = _read(os.path.join(out, "hostname")).strip()
    c.t.ok(got == "before", "changes to config.json after create do not affect the container",
           f"got {got!r}")
    c.rt("delete", cid)


# hooks

HOOK_KINDS = ("prestart", "createRuntime", "poststart", "poststop")


def _hook(log: str, name: str, fail: bool = False) -> dict[str, Any]:
    cmd = f"echo {name} >>{log}" + ("; exit 1" if fail else "")
    return {"path": "/bin/sh", "args": ["sh", "-c", cmd]}


@test
def t_hooks(c: Ctx) -> None:
    log = os.path.join(c.host_dir("hooklog"), "log")

    def m(cfg: dict[str, Any]) -> None:
        cfg["hooks"] = {k: [_hook(log, k)] for k in HOOK_KINDS}
        # before pivot_root, in the container's mount namespace: host paths resolve
        cfg["hooks"]["createContainer"] = [_hook(log, "createContainer")]
        cfg["hooks"]["startContainer"] = [_hook("/out/log", "startContainer")]
    b, out = _marker_bundle(c, "echo process >>/out/log", m)
    cid = c.new_id()
    r = c.create(cid, b)
    c.t.ok(r.code == 0, "create with hooks succeeds", str(r))
    created = _read(log).split()
    c.t.ok(created[:2] in (["prestart", "createRuntime"], ["createRuntime", "prestart"]),
           "prestart and createRuntime hooks run during create", f"{created}")
    c.t.ok(created[2:3] == ["createContainer"],
           "createContainer hooks run during create, after createRuntime", f"{created}")
    c.t.ok("poststart" not in created, "poststart hooks do not run before start")
    c.rt("start", cid)
    c.wait_status(cid, "stopped")
    inner = _read(os.path.join(out, "log")).split()
    c.t.ok(inner[-2:] == ["startContainer", "process"],
           "startContainer hooks run before the user process, in the container", f"{inner}")
    c.t.ok("poststart" in _read(log).split(), "poststart hooks run after start", _read(log))
    c.t.ok("poststop" not in _read(log).split(), "poststop hooks do not run before delete")
    r = c.rt("delete", cid)
    c.t.ok(r.code == 0, "delete succeeds", str(r))
    c.t.ok(_read(log).split()[-1:] == ["poststop"], "poststop hooks run at delete", _read(log))


@test
def t_hooks_stdin(c: Ctx) -> None:
    d = c.host_dir("hookstdin")

    def m(cfg: dict[str, Any]) -> None:
        cfg["hooks"] = {k: [{"path": "/bin/sh", "args": ["sh", "-c", f"cat >{d}/{k}"]}]
                        for k in ("prestart", "poststart", "poststop")}
    b, _ = _marker_bundle(c, "sleep 0.5", m)
    cid = c.new_id()
    c.create(cid, b)
    c.rt("start", cid)
    c.wait_status(cid, "stopped")
    c.rt("delete", cid)
    for kind in ("prestart", "poststart", "poststop"):
        raw = _read(os.path.join(d, kind))
        try:
            st = json.loads(raw)
        except ValueError:
            st = {}
        c.t.ok(st.get("id") == cid and st.get("bundle") == os.path.realpath(b)
               and bool(st.get("ociVersion")),
               f"{kind} hooks get the state on stdin", raw[:500])
        if kind != "poststop":
            c.t.ok(isinstance(st.get("pid"), int) and st.get("pid", 0) > 0,
                   f"{kind} state has the pid", raw[:500])


@test
def t_prestart_fail(c: Ctx) -> None:
    log = os.path.join(c.host_dir("hooklog"), "log")

    def m(cfg: dict[str, Any]) -> None:
        cfg["hooks"] = {"prestart": [_hook(log, "prestart1", fail=True), _hook(log, "prestart2")],
                        "poststop": [_hook(log, "poststop")]}
    b, out = _marker_bundle(c, "echo ran >/out/ran", m)
    cid = c.new_id()
    r = c.create(cid, b)
    if r.code == 0:
        r = c.rt("start", cid)
    c.t.ok(r.code != 0, "a failing prestart hook is an error", "create and start succeeded")
    c.wait_status(cid, "stopped", 2)
    c.t.ok(not os.path.exists(os.path.join(out, "ran")),
           "a failing prestart hook stops the container before the user program runs")
    c.t.ok("prestart2" not in _read(log).split(), "hooks after a failing prestart hook do not run",
           _read(log))
    c.rt("delete", "--force", cid)


@test
def t_poststart_fail(c: Ctx) -> None:
    log = os.path.join(c.host_dir("hooklog"), "log")

    def m(cfg: dict[str, Any]) -> None:
        cfg["hooks"] = {"poststart": [_hook(log, "poststart1", fail=True),
                                      _hook(log, "poststart2")]}
    b, out = _marker_bundle(c, "echo ran >/out/ran; sleep 1", m)
    cid = c.new_id()
    c.create(cid, b)
    c.rt("start", cid)
    c.wait_status(cid, "stopped")
    c.t.ok(os.path.exists(os.path.join(out, "ran")),
           "a failing poststart hook does not stop the user program")
    c.t.ok("poststart2" in _read(log).split(),
           "hooks after a failing poststart hook still run", _read(log))
    c.rt("delete", "--force", cid)


@test
def t_poststop_fail(c: Ctx) -> None:
    log = os.path.join(c.host_dir("hooklog"), "log")

    def m(cfg: dict[str, Any]) -> None:
        cfg["hooks"] = {"poststop": [_hook(log, "poststop1", fail=True),
                                     _hook(log, "poststop2")]}
    b, _ = _marker_bundle(c, "true", m)
    cid = c.new_id()
    c.create(cid, b)
    c.rt("start", cid)
    c.wait_status(cid, "stopped")
    r = c.rt("delete", cid)
    c.t.ok(r.code == 0, "delete succeeds though a poststop hook fails", str(r))
    c.t.ok(c.state(cid) is None, "the container is deleted though a poststop hook fails")
    c.t.ok("poststop2" in _read(log).split(), "hooks after a failing poststop hook still run",
           _read(log))


# namespaces


def _ns_test(c: Ctx, mutate: Callable[[dict[str, Any]], None],
             check: Callable[[int], None]) -> None:
    b, _ = _marker_bundle(c, "sleep 30", mutate)
    cid = c.new_id()
    r = c.create(cid, b)
    if c.t.ok(r.code == 0, "create succeeds", str(r)):
        st = c.state(cid) or {}
        check(int(st.get("pid", 0)))
    c.rt("delete", "--force", cid)


@test
def t_linux_ns_nopath(c: Ctx) -> None:
    kinds = ["pid", "network", "ipc", "uts", "mount", "cgroup"]

    def m(cfg: dict[str, Any]) -> None:
        cfg["linux"]["namespaces"] = [{"type": k} for k in kinds]

    def check(pid: int) -> None:
        for k in kinds:
            mine, theirs = ns_inode("self", NS_FILE[k]), ns_inode(pid, NS_FILE[k])
            c.t.ok(not theirs.startswith("error") and mine != theirs,
                   f"a {k} namespace without path is new", f"{theirs} vs host {mine}")
    _ns_test(c, m, check)


@test
def t_linux_ns_itype(c: Ctx) -> None:
    kinds = ["network", "ipc", "uts", "cgroup"]

    def m(cfg: dict[str, Any]) -> None:
        cfg["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}]
        del cfg["hostname"]  # needs a UTS namespace
        for mnt in cfg["mounts"]:
            if mnt["destination"] == "/sys":  # sysfs of the host's network namespace
                mnt.update(type="bind", source="/sys", options=["rbind", "ro", "nosuid"])

    def check(pid: int) -> None:
        for k in kinds:
            mine, theirs = ns_inode("self", NS_FILE[k]), ns_inode(pid, NS_FILE[k])
            c.t.ok(mine == theirs, f"a {k} namespace not in the config is the runtime's",
                   f"{theirs} vs host {mine}")
    _ns_test(c, m, check)


@test
def t_linux_ns_path(c: Ctx) -> None:
    holder = subprocess.Popen(["unshare", "--net", "--ipc", "--uts", "--cgroup", "sleep", "60"],
                              stdin=subprocess.DEVNULL)
    kinds = ["network", "ipc", "uts", "cgroup"]
    try:
        time.sleep(0.2)

        def m(cfg: dict[str, Any]) -> None:
            cfg["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}] + [
                {"type": k, "path": f"/proc/{holder.pid}/ns/{NS_FILE[k]}"} for k in kinds]

        def check(pid: int) -> None:
            for k in kinds:
                want, have = ns_inode(holder.pid, NS_FILE[k]), ns_inode(pid, NS_FILE[k])
                c.t.ok(want == have, f"a {k} namespace with a path is joined",
                       f"{have} vs {want}")
        _ns_test(c, m, check)
    finally:
        holder.kill()
        holder.wait()


@test
def t_linux_ns_path_type(c: Ctx) -> None:
    holder = subprocess.Popen(["unshare", "--ipc", "sleep", "60"], stdin=subprocess.DEVNULL)
    try:
        time.sleep(0.2)

        def m(cfg: dict[str, Any]) -> None:
            for ns in cfg["linux"]["namespaces"]:
                if ns["type"] == "network":
                    ns["path"] = f"/proc/{holder.pid}/ns/ipc"
        b, _ = _marker_bundle(c, "true", m)
        cid = c.new_id()
        r = c.create(cid, b)
        if r.code == 0:
            r = c.rt("start", cid)
        c.t.ok(r.code != 0, "a namespace path of another type is an error", "succeeded")
        b, _ = _marker_bundle(c, "true", lambda cfg: cfg["linux"]["namespaces"][1].update(
            path="/nonexistent/ns/net"))
        cid = c.new_id()
        r = c.create(cid, b)
        if r.code == 0:
            r = c.rt("start", cid)
        c.t.ok(r.code != 0, "a namespace path that does not exist is an error", "succeeded")
    finally:
        holder.kill()
        holder.wait()


# cgroups (values read from the host, in the container's cgroup)

def _block_device() -> tuple[int, int]:
    """major, minor of a whole disk of this host (for the blkio limits)."""
    for dev in sorted(os.listdir("/sys/block")) if os.path.isdir("/sys/block") else []:
        if not dev.startswith(("loop", "ram", "zram")):
            major, minor = _read(f"/sys/block/{dev}/dev").strip().split(":")
            return int(major), int(minor)
    return 8, 0


_MAJ, _MIN = _block_device()

# name: (linux.resources, [(v1 controller, v1 file, v2 file, expected line)]); the v2 file
# is read in the unified hierarchy (hybrid hosts) when the v1 controller is not mounted.
CGROUP_CASES: dict[str, tuple[dict[str, Any], list[tuple[str, str, str, str]]]] = {
    "memory": ({"memory": {"limit": 52428800, "reservation": 26214400, "swap": 104857600,
                           "swappiness": 50, "disableOOMKiller": True}},
               [("memory", "memory.limit_in_bytes", "memory.max", "52428800"),
                ("memory", "memory.soft_limit_in_bytes", "memory.low", "26214400"),
                ("memory", "memory.memsw.limit_in_bytes", "", "104857600"),
                ("memory", "memory.swappiness", "", "50"),
                ("memory", "memory.oom_control", "", "oom_kill_disable 1")]),
    "cpus": ({"cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0",
                      "mems": "0"}},
             [("cpu", "cpu.shares", "", "512"), ("cpu", "cpu.cfs_quota_us", "", "50000"),
              ("cpu", "cpu.cfs_period_us", "", "100000"), ("cpuset", "cpuset.cpus", "", "0"),
              ("cpuset", "cpuset.mems", "", "0")]),
    "pids": ({"pids": {"limit": 1000}}, [("pids", "pids.max", "pids.max", "1000")]),
    "blkio": ({"blockIO": {"weight": 500, "throttleReadBpsDevice": [
        {"major": _MAJ, "minor": _MIN, "rate": 1048576}], "throttleWriteIOPSDevice": [
        {"major": _MAJ, "minor": _MIN, "rate": 300}]}},
              [("blkio", "blkio.bfq.weight", "io.bfq.weight", "500"),
               ("blkio", "blkio.throttle.read_bps_device", "", f"{_MAJ}:{_MIN} 1048576"),
               ("blkio", "blkio.throttle.write_iops_device", "", f"{_MAJ}:{_MIN} 300")]),
    "hugetlb": ({"hugepageLimits": [{"pageSize": "2MB", "limit": 2097152}]},
                [("hugetlb", "hugetlb.2MB.limit_in_bytes", "hugetlb.2MB.max", "2097152")]),
    "devices": ({"devices": [{"allow": False, "access": "rwm"},
                             {"allow": True, "type": "c", "major": 10, "minor": 229,
                              "access": "rw"},
                             {"allow": True, "type": "b", "major": 8, "minor": 0,
                              "access": "r"}]},
                [("devices", "devices.list", "", "c 10:229 rw"),
                 ("devices", "devices.list", "", "b 8:0 r")]),
    "network": ({"network": {"classID": 1048577, "priorities": [{"name": "lo", "priority": 2}]}},
                [("net_cls", "net_cls.classid", "", "1048577"),
                 ("net_prio", "net_prio.ifpriomap", "", "lo 2")]),
}


def _cgroup_test(name: str, relative: bool) -> Callable[[Ctx], None]:
    resources, checks = CGROUP_CASES[name]

    def run(c: Ctx) -> None:
        cg_name = f"{PREFIX}-{os.getpid()}-{name}"

        def m(cfg: dict[str, Any]) -> None:
            cfg["linux"]["resources"] = {**cfg["linux"]["resources"], **resources}
            if name == "devices":
                cfg["linux"]["resources"]["devices"] = resources["devices"]
            cfg["linux"]["cgroupsPath"] = cg_name if relative else "/" + cg_name

        def check(pid: int) -> None:
            dirs = _cgroup_dirs(pid)
            for ctrl, fname, v2name, want in checks:
                desc = f"linux.resources: {ctrl} {fname.split('.', 1)[1]} {want}"
                if os.path.isdir(os.path.join(CGROUP_ROOT, ctrl)):
                    path = os.path.join(dirs.get(ctrl, "/nonexistent"), fname)
                elif v2name and ctrl in _read(os.path.join(CGROUP_ROOT, "unified",
                                                           "cgroup.controllers")).split():
                    path = os.path.join(dirs.get("", "/nonexistent"), v2name)
                    want = want.replace(" ", "")  # hugetlb.2MB.max, io.bfq.weight
                else:
                    c.t.skip(desc, f"no {ctrl} controller on this host")
                    continue
                value = _read(path)
                lines = [ln.replace(" ", "") for ln in value.splitlines()]
                c.t.ok(want.replace(" ", "") in lines or "default" + want in lines,
                       desc, f"{path}: {value.strip()[:300]!r}")
            ok_path = any(d.endswith("/" + cg_name) for d in dirs.values())
            c.t.ok(ok_path, "linux.cgroupsPath is the container's cgroup",
                   f"{_read(f'/proc/{pid}/cgroup')}")
        _ns_test(c, m, check)
    return run


for _name in CGROUP_CASES:
    TESTS[f"linux_cgroups_{_name}"] = _cgroup_test(_name, relative=False)
    TESTS[f"linux_cgroups_relative_{_name}"] = _cgroup_test(_name, relative=True)


# --- running ------------------------------------------------------------------------------


def run_one(name: str, runtime: str, root: str, scratch: str, b: Build) -> None:
    """In the child process: one test, TAP on stdout."""
    t = Emitter()
    try:
        TESTS[name](Ctx(runtime, root, scratch, b, t))
    except Exception as e:  # a bug in the test or a runtime hang: one failing assertion
        t.ok(False, "the test ran to its end", f"{type(e).__name__}: {e}")
    t.end()


def _mounts_under(path: str) -> list[str]:
    found = []
    for line in _read("/proc/self/mountinfo").splitlines():
        mp = line.split()[4].replace("\\040", " ")
        if mp == path or mp.startswith(path + "/"):
            found.append(mp)
    return found


def _our_cgroups() -> list[str]:
    found = []
    for base, dirs, _ in os.walk(CGROUP_ROOT):
        for d in dirs:
            if d.startswith(f"{PREFIX}-"):
                found.append(os.path.join(base, d))
        if base.count("/") > 5:
            dirs[:] = []
    return found


def cleanup(runtime: str, root: str, scratch: str) -> list[str]:
    """Deletes every container left in ``root``, kills their processes, unmounts and removes
    ``scratch``, removes the cgroups named after this script; returns what it had to do."""
    done = []
    if os.path.isdir(root):
        for cid in os.listdir(root):
            subprocess.run([runtime, "--root", root, "delete", "--force", cid],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30, check=False)
            done.append(f"deleted container {cid}")
    # processes still running from a bundle of this test (e.g. after a runtime crash)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                exe_root = os.readlink(f"/proc/{pid}/root")
            except OSError:
                continue
            if exe_root.startswith(scratch + "/"):
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)
                done.append(f"killed process {pid}")
    for mp in sorted(_mounts_under(scratch) + _mounts_under(root), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], check=False, stderr=subprocess.DEVNULL)
        done.append(f"unmounted {mp}")
    for cg in sorted(_our_cgroups(), key=len, reverse=True):
        for _ in range(20):
            try:
                for sub, _, _ in sorted(os.walk(cg), key=lambda w: -len(w[0])):
                    os.rmdir(sub)
                break
            except FileNotFoundError:
                break
            except OSError:
                for p in _read(os.path.join(cg, "cgroup.procs")).split():
                    with contextlib.suppress(OSError):
                        os.kill(int(p), signal.SIGKILL)
                time.sleep(0.05)
        done.append(f"removed cgroup {cg}")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    return done


@dataclass
class Outcome:
    test: str
    runtime: str
    tap: Tap
    seconds: float
    leftovers: list[str]


def run_test(name: str, runtime: str, b: Build, timeout: float) -> Outcome:
    scratch = tempfile.mkdtemp(prefix=f"{PREFIX}-{name}-")
    os.chmod(scratch, 0o755)  # reachable by the IDs of a user namespace
    root = tempfile.mkdtemp(prefix=f"{PREFIX}-root-")
    cmd = [sys.executable, os.path.abspath(__file__), "--run-one", name, "--runtime", runtime,
           "--build-dir", b.directory, "--root-dir", root, "--scratch-dir", scratch]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        error = ""
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        error = f"timed out after {timeout:.0f}s"
    elapsed = time.monotonic() - t0
    leftovers = cleanup(runtime, root, scratch)
    tap = parse_tap(out)
    tap.error = error
    if error or not tap.results:
        tap.results["the test ran to its end"] = False
        tap.diagnostics["the test ran to its end"] = [error or out[-1500:]]
    return Outcome(name, runtime, tap, elapsed, leftovers)


def run_suite(runtimes: list[str], build_dir: str = DEFAULT_BUILD_DIR,
              tests: list[str] | None = None, timeout: float = 60,
              log: Callable[[str], None] = print) -> dict[str, dict[str, Outcome]]:
    """Every test against every runtime: {test: {runtime: Outcome}}."""
    b = build(build_dir, log)
    results: dict[str, dict[str, Outcome]] = {}
    for name in tests or list(TESTS):
        results[name] = {}
        for rt in runtimes:
            results[name][rt] = run_test(name, rt, b, timeout)
    return results


def regressions(results: dict[str, dict[str, Outcome]], reference: str, candidate: str
                ) -> Iterator[tuple[str, str, list[str]]]:
    """(test, assertion, candidate's diagnostics) for every assertion the reference passes
    and the candidate does not."""
    for name, by_rt in results.items():
        ref, cand = by_rt[reference].tap, by_rt[candidate].tap
        for desc, passed in ref.results.items():
            if passed and not cand.results.get(desc):
                yield name, desc, cand.diagnostics.get(desc, [])


def short(runtime: str) -> str:
    return os.path.basename(runtime)


def report(results: dict[str, dict[str, Outcome]], runtimes: list[str]) -> str:
    names = [short(r) for r in runtimes]
    width = max([len(n) for n in results] + [10])
    lines = [f"{'test':<{width}}  " + "  ".join(f"{n + ' pass/fail':>24}" for n in names)]
    totals = {r: [0, 0] for r in runtimes}
    for name, by_rt in results.items():
        cells = []
        for r in runtimes:
            o = by_rt[r]
            totals[r][0] += o.tap.passed
            totals[r][1] += o.tap.failed
            cells.append(f"{o.tap.passed:>4}/{o.tap.failed:<3} {o.seconds:5.1f}s".rjust(24))
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    lines.append(f"{'TOTAL':<{width}}  " + "  ".join(
        f"{totals[r][0]:>4}/{totals[r][1]:<3}".rjust(24) for r in runtimes))
    if len(runtimes) >= 2:
        ref = runtimes[0]
        for cand in runtimes[1:]:
            regs = list(regressions(results, ref, cand))
            lines.append("")
            lines.append(f"assertions {short(ref)} passes and {short(cand)} fails: {len(regs)}")
            for name, desc, diag in regs:
                lines.append(f"  {name}: {desc}")
                lines.extend(f"      # {d}" for d in diag[:6])
    for name, by_rt in results.items():
        for r, o in by_rt.items():
            if o.leftovers:
                lines.append(f"cleanup after {name} ({short(r)}): {'; '.join(o.leftovers)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runtime", action="append", help="runtime binary (repeatable); "
                   "default: runc and isobox-runtime; the first is the reference")
    p.add_argument("--build-dir", default=DEFAULT_BUILD_DIR)
    p.add_argument("--test", action="append", help="run only this test (repeatable)")
    p.add_argument("--timeout", type=float, default=60, help="seconds per test and runtime")
    p.add_argument("--json", help="write the per-assertion results here")
    p.add_argument("--list", action="store_true", help="list the tests")
    p.add_argument("--run-one", help=argparse.SUPPRESS)
    p.add_argument("--root-dir", help=argparse.SUPPRESS)
    p.add_argument("--scratch-dir", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.list:
        print("\n".join(TESTS))
        return 0
    if a.run_one:
        run_one(a.run_one, a.runtime[0], a.root_dir, a.scratch_dir, build(a.build_dir))
        return 0
    runtimes = [os.path.abspath(r) if os.path.sep in r else shutil.which(r) or r
                for r in (a.runtime or default_runtimes())]
    unknown = set(a.test or []) - set(TESTS)
    if unknown:
        p.error(f"unknown tests: {', '.join(sorted(unknown))}")
    t0 = time.monotonic()
    results = run_suite(runtimes, a.build_dir, a.test, a.timeout)
    print(report(results, runtimes))
    print(f"\n{len(results)} tests x {len(runtimes)} runtimes in {time.monotonic() - t0:.0f}s")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({n: {short(r): {"results": o.tap.results, "diagnostics":
                                      o.tap.diagnostics, "seconds": round(o.seconds, 2)}
                           for r, o in by_rt.items()} for n, by_rt in results.items()},
                      f, indent=1)
    return 1 if len(runtimes) >= 2 and any(regressions(results, runtimes[0], runtimes[1])) \
        else 0


if __name__ == "__main__":
    sys.exit(main())
