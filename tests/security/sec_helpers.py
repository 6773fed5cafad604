"""Shared pieces of the security regression suite (catalogue cases 1-26).

Loaded by every ``tests/security/test_*.py`` with ``pytest_plugins = ["sec_helpers"]`` (a
``harness.py`` here would shadow ``tests/harness.py``, which the tests import by name).

* ``probe``: a static C binary (``fixtures/probe.c``), the attacker's tool in the container;
* ``host_guard``: the catalogue's after-every-case checks (host canaries, core_pattern, the
  runtime's and python's files, the host mount table, stray files; leftover cgroups are
  checked by the ``runtime`` fixture), requested by each module through ``pytestmark``;
* Docker-like confinement for a bundle: Docker's 14 capabilities, moby's masked and
  read-only paths, and Docker's default seccomp profile (``fixtures/docker-default-seccomp
  .json``) turned into an OCI ``linux.seccomp`` object for a given capability set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from harness import REPO, RUN_PREFIX, Bundle, Result, Runtime, unique_id

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")

DOCKER_CAPS = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)
DOCKER_CAP_MASK = "00000000a80425fb"
MOBY_MASKED = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
    "/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
)
MOBY_READONLY = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
# Syscalls Docker's default profile refuses with EPERM (the probe's labels; case 17).
BLOCKED = ("keyctl", "add_key", "request_key", "bpf", "kexec_load", "kexec_file_load",
           "init_module", "finit_module", "delete_module", "mount", "umount2", "pivot_root",
           "setns", "unshare", "fsopen", "open_tree", "move_mount", "open_by_handle_at",
           "perf_event_open", "userfaultfd", "acct", "swapon", "reboot", "syslog", "iopl",
           "ioperm", "quotactl", "lookup_dcookie", "io_uring_setup", "io_uring_enter",
           "clock_settime", "settimeofday", "personality_0x40000", "socket_vsock",
           "socket_alg")


def thermal_throttle_paths() -> list[str]:
    base = "/sys/devices/system/cpu"
    return sorted(f"{base}/{c}/thermal_throttle" for c in os.listdir(base)
                  if c.startswith("cpu") and c[3:].isdigit()
                  and os.path.isdir(f"{base}/{c}/thermal_throttle"))


# -- the probe ----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def probe_binary() -> Iterator[str]:
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the probe")
    d = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-probe-")
    out = os.path.join(d, "probe")
    subprocess.run(["gcc", "-static", "-O1", "-o", out, os.path.join(FIXTURES, "probe.c")],
                   check=True, capture_output=True)
    yield out
    shutil.rmtree(d, ignore_errors=True)


def install(binary: str, rootfs: str, name: str = "probe", mode: int = 0o755) -> str:
    """Copy ``binary`` to ``/name`` in the rootfs; returns the container path."""
    dst = os.path.join(rootfs, name)
    shutil.copyfile(binary, dst)
    os.chown(dst, 0, 0)
    os.chmod(dst, mode)
    return "/" + name


@pytest.fixture
def probe(probe_binary: str, bundle: Bundle) -> str:
    return install(probe_binary, bundle.rootfs)


def parse(out: str) -> dict[str, str]:
    """The probe's ``LABEL OK n`` / ``LABEL ERR ENAME`` lines as {label: "OK" | "ENAME"}."""
    res: dict[str, str] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] in ("OK", "ERR"):
            res[parts[0]] = "OK" if parts[1] == "OK" else (parts[2] if len(parts) > 2 else "?")
    return res


def status_fields(out: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in
            (ln.partition(":") for ln in out.splitlines() if ":" in ln)}


# -- Docker-like confinement --------------------------------------------------------------

def load_docker_profile() -> dict[str, Any]:
    with open(os.path.join(FIXTURES, "docker-default-seccomp.json")) as f:
        doc: dict[str, Any] = json.load(f)
    return doc


def _kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def oci_seccomp(caps: tuple[str, ...] | list[str] = DOCKER_CAPS) -> dict[str, Any]:
    """Docker's profile as the OCI object dockerd hands a runtime for ``caps`` on amd64
    (moby's ``setupSeccomp``: arch map, caps includes/excludes, minKernel)."""
    prof = load_docker_profile()
    have = set(caps)
    out: dict[str, Any] = {"defaultAction": prof["defaultAction"],
                           "defaultErrnoRet": prof["defaultErrnoRet"], "syscalls": []}
    for a in prof["archMap"]:
        if a["architecture"] == "SCMP_ARCH_X86_64":
            out["architectures"] = [a["architecture"], *(a["subArchitectures"] or [])]
    for rule in prof["syscalls"]:
        inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
        if inc.get("arches") and "amd64" not in inc["arches"]:
            continue
        if "amd64" in (exc.get("arches") or ()):
            continue
        if inc.get("caps") and not set(inc["caps"]) <= have:
            continue
        if set(exc.get("caps") or ()) & have:
            continue
        if inc.get("minKernel"):
            want = tuple(int(x) for x in inc["minKernel"].split(".")[:2])
            if _kernel() < want:
                continue
        out["syscalls"].append({k: rule[k] for k in ("names", "action", "args", "errnoRet")
                                if rule.get(k) is not None})
    return out


def docker_like(bundle: Bundle, *args: str, caps: tuple[str, ...] = DOCKER_CAPS,
                seccomp: bool = True, nnp: bool = False, tmp: bool = True) -> Bundle:
    """What dockerd would ask for: Docker's caps (no inheritable/ambient), moby's masked and
    read-only paths, Docker's seccomp profile, NNP off (Docker's default), a tmpfs /tmp."""
    c = bundle.config
    p = c["process"]
    p["args"] = list(args)
    p["capabilities"] = {k: list(caps) for k in ("bounding", "effective", "permitted")}
    p["noNewPrivileges"] = nnp
    linux = c["linux"]
    linux["maskedPaths"] = [*MOBY_MASKED, *thermal_throttle_paths()]
    linux["readonlyPaths"] = list(MOBY_READONLY)
    if seccomp:
        linux["seccomp"] = oci_seccomp(caps)
    else:
        linux.pop("seccomp", None)
    if tmp:
        c["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                            "options": ["nosuid", "nodev", "mode=1777", "size=16m"]})
    bundle.save()
    return bundle


def add_bind(bundle: Bundle, source: str, dest: str, *options: str) -> None:
    bundle.config["mounts"].append({"destination": dest, "type": "bind", "source": source,
                                    "options": ["rbind", *options]})
    bundle.save()


def run(rt: Runtime, bundle: Bundle, *, timeout: float = 60) -> Result:
    return rt("run", "--bundle", bundle.path, unique_id(), check=False, timeout=timeout)


def mnt_points_host() -> set[str]:
    with open("/proc/1/mountinfo") as f:
        return {" ".join(ln.split()[3:]) for ln in f}


# -- after-every-case checks --------------------------------------------------------------

def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tree(path: str) -> dict[str, tuple[int, int, str]]:
    """{relative path: (mode, size, sha256 or link target)} of everything under ``path``."""
    out: dict[str, tuple[int, int, str]] = {}
    for base, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(base, name)
            st = os.lstat(p)
            if os.path.islink(p):
                what = "->" + os.readlink(p)
            elif os.path.isfile(p):
                what = _digest(p)
            else:
                what = ""
            out[os.path.relpath(p, path)] = (st.st_mode, st.st_size, what)
    return out


@pytest.fixture(scope="session")
def canary() -> Iterator[str]:
    """/var/tmp/<run>-canary/{file,dir/inner}: what every escape in this suite aims at."""
    d = f"/var/tmp/{RUN_PREFIX}-canary"
    os.makedirs(os.path.join(d, "dir"))
    with open(os.path.join(d, "file"), "w") as f:
        f.write("canary file: must never change\n")
    with open(os.path.join(d, "dir", "inner"), "w") as f:
        f.write("canary inner\n")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def critical_files() -> list[str]:
    """Host python (the interpreter the runtime runs on, its library) and the runtime's files."""
    py = os.path.realpath(os.path.join(REPO, ".venv", "bin", "python"))
    files = {py, os.path.realpath("/usr/bin/python3")}
    libdir = os.path.join(os.path.dirname(os.path.dirname(py)), "lib")
    if os.path.isdir(libdir):
        files |= {os.path.realpath(os.path.join(libdir, n)) for n in os.listdir(libdir)
                  if n.startswith("libpython") and n.endswith((".so", ".so.1.0"))}
    launcher = os.path.join(REPO, ".venv", "bin", "isobox-runtime")
    if os.path.exists(launcher):
        files.add(launcher)
    for base, _, names in os.walk(os.path.join(REPO, "src", "isobox")):
        files |= {os.path.join(base, n) for n in names if n.endswith(".py")}
    return sorted(files)


def digests(files: list[str]) -> dict[str, str]:
    return {p: _digest(p) for p in files}


def _stat_key(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


@pytest.fixture(scope="session")
def host_files() -> Iterator[dict[str, str]]:
    """sha256 of the critical files at the start; checked again at the end of the session."""
    files = [p for p in critical_files() if "/src/isobox/" not in p]  # sources: edited by others
    before = digests(files)
    yield before
    assert digests(files) == before, "host python or the runtime launcher changed"


# Not /tmp (the bundles live there) nor /run (daemons): other suites fill them meanwhile.
WATCHED_DIRS = ("/", "/root", "/etc", "/var/tmp", "/dev")


def _foreign(entry: str, base_temp: str) -> bool:
    """Entries other test sessions (other engineers on this host) may add meanwhile."""
    if RUN_PREFIX in entry or base_temp in entry:
        return False
    return "ibx" in entry or "pytest-of-" in entry or entry.startswith(
        ("tmp", "pytest", "storage", "podman", "buildah", "containers", "libpod"))


def _listing() -> set[str]:
    out = set()
    for d in WATCHED_DIRS:
        try:
            out |= {os.path.join(d, n) for n in os.listdir(d)}
        except OSError:
            pass
    return out


class HostGuard:
    def __init__(self, canary: str, base_temp: str) -> None:
        self.canary = canary
        self.base_temp = base_temp
        self.tree = _tree(canary)
        with open("/proc/sys/kernel/core_pattern") as f:
            self.core_pattern = f.read()
        self.stats = {p: _stat_key(p) for p in critical_files() if "/src/isobox/" not in p}
        self.mounts = mnt_points_host()
        self.files = _listing()

    def check(self) -> None:
        assert _tree(self.canary) == self.tree, "the host canary changed"
        with open("/proc/sys/kernel/core_pattern") as f:
            assert f.read() == self.core_pattern, "core_pattern changed"
        for p, key in self.stats.items():
            assert _stat_key(p) == key, f"{p} was modified"
        new_mounts = [m for m in mnt_points_host() - self.mounts
                      if not _foreign(m, self.base_temp)]
        assert not new_mounts, f"new host mounts: {new_mounts}"
        stray = [p for p in _listing() - self.files
                 if not _foreign(os.path.basename(p), self.base_temp)]
        assert not stray, f"stray files on the host: {stray}"


@pytest.fixture
def host_guard(canary: str, host_files: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostGuard]:
    guard = HostGuard(canary, str(tmp_path_factory.getbasetemp()))
    yield guard
    guard.check()


def wait_status(rt: Runtime, cid: str, status: str, timeout: float = 10) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        st = rt.state(cid)
        if st["status"] == status or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def drop_dev_mounts(bundle: Bundle, keep: tuple[str, ...] = ()) -> None:
    """Remove the config's mounts on /dev and below (so the image's /dev is used)."""
    bundle.config["mounts"] = [m for m in bundle.config["mounts"]
                               if not (m["destination"] == "/dev"
                                       or m["destination"].startswith("/dev/"))
                               or m["destination"] in keep]
    bundle.save()


def cgroup_dirs(rt: Runtime, cid: str) -> dict[str, str]:
    """The container's cgroup directory per hierarchy, from the runtime's state."""
    with open(os.path.join(rt.root, cid, "state.json")) as f:
        dirs: dict[str, str] = json.load(f)["cgroup"]["dirs"]
    return dirs


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()
