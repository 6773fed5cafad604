"""The OCI ``config.json`` of a container: image config + run options + moby's confinement.

Only argv, env, cwd, user, stop signal, volumes and exposed ports come from the image; the
rest (capabilities, seccomp, masks, mounts, devices, namespaces, resources) comes from the
options the caller gave and Docker's defaults, so image metadata (``Labels``, annotations,
odd ``Volumes``) can never weaken the sandbox (catalogue case 41).
"""

from __future__ import annotations

import os
import posixpath
import re
import socket
import stat
from dataclasses import dataclass
from typing import Any

from isobox.engine.options import CreateOptions, DeviceSpec, Resources
from isobox.engine.parse import check_ulimits, rlimit_entry
from isobox.engine.seccomp_profile import default_profile, load_profile
from isobox.errors import ConfigError
from isobox.images.userdb import lookup_user
from isobox.linux import capabilities
from isobox.oci.defaults import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    DOCKER_DEFAULT_CAPS,
    THERMAL_THROTTLE_PATTERN,
    default_spec,
)

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_PATH = "/sbin/docker-init"
CPU_PERIOD = 100_000
MIN_MEMORY = 6 * 1024 * 1024  # moby's linuxMinMemory
#: Statically linked inits, in order (Debian's tini package ships /usr/bin/tini-static).
INIT_CANDIDATES = ("/usr/bin/tini-static", "/usr/libexec/docker/docker-init",
                   "/usr/bin/docker-init", "/usr/local/bin/tini-static")
_SKIP_DEV_DIRS = ("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev")


@dataclass(frozen=True)
class SpecInputs:
    """Everything :func:`build_spec` turns into one container's OCI config."""

    container_id: str
    options: CreateOptions
    image_config: dict[str, Any]  # the image config's "config" object; may be {}
    rootfs: str  # the mounted overlay root
    netns_path: str | None  # None: host network; "": a new empty netns; else a path to join
    etc_files: dict[str, str]  # container path -> host file (/etc/hosts, resolv.conf, hostname)
    extra_mounts: list[dict[str, Any]]  # OCI mounts the engine made (volumes, binds, tmpfs)
    cgroups_path: str
    init_binary: str = ""  # host path of the --init binary (tini), bound at /sbin/docker-init


# --------------------------------------------------------------------------- image parts

def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):  # old Docker configs: a shell string
        return ["/bin/sh", "-c", value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(where, "must be an array of strings")
    return list(value)


def argv(options: CreateOptions, image_config: dict[str, Any]) -> list[str]:
    """Entrypoint + Cmd as Docker combines them: ``--entrypoint`` drops the image's Cmd."""
    if options.entrypoint is not None:
        entry = list(options.entrypoint)
        cmd = list(options.command or ())
    else:
        entry = _strings(image_config.get("Entrypoint"), "image config: Entrypoint")
        cmd = list(options.command) if options.command is not None else \
            _strings(image_config.get("Cmd"), "image config: Cmd")
    args = entry + cmd
    if not args:
        raise ConfigError("command", "no command specified")
    return args


def _merge_env(base: list[str], over: list[str]) -> list[str]:
    out = list(base)
    index = {e.partition("=")[0]: i for i, e in enumerate(out)}
    for item in over:
        key = item.partition("=")[0]
        if key in index:
            out[index[key]] = item
        else:
            index[key] = len(out)
            out.append(item)
    return out


def environment(options: CreateOptions, image_config: dict[str, Any], hostname: str
                ) -> list[str]:
    """PATH (when missing) and HOSTNAME, TERM=xterm with -t, then the image's Env, then -e."""
    user_env = _merge_env(_strings(image_config.get("Env"), "image config: Env"),
                          list(options.env))
    defaults = [] if any(e.startswith("PATH=") for e in user_env) else [DEFAULT_PATH]
    defaults.append(f"HOSTNAME={hostname}")
    if options.tty:
        defaults.append("TERM=xterm")
    return _merge_env(defaults, user_env)


def working_dir(options: CreateOptions, image_config: dict[str, Any]) -> str:
    cwd = options.workdir or image_config.get("WorkingDir") or "/"
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise ConfigError("--workdir", f"the working directory '{cwd}' is invalid, it needs "
                          "to be an absolute path")
    return posixpath.normpath(cwd)


def resolve_user(rootfs: str, user: str) -> tuple[int, int, list[int]]:
    """``--user``/``User`` (``name``, ``uid``, ``name:group``, ``uid:gid``; "" = root) ->
    (uid, gid, additional gids), looked up in the image's /etc/passwd and /etc/group."""
    u = lookup_user(rootfs, user or "0")
    return u.uid, u.gid, list(u.additional_gids)


def image_volumes(image_config: dict[str, Any]) -> list[str]:
    """The image's ``Volumes`` as normalised absolute targets; ``..`` is refused (case 42)."""
    vols = image_config.get("Volumes") or {}
    if not isinstance(vols, dict):
        raise ConfigError("image config: Volumes", "must be an object")
    out: list[str] = []
    for raw in vols:
        if not isinstance(raw, str) or not raw.startswith("/") or "\0" in raw:
            raise ConfigError("image config: Volumes", f'invalid volume path "{raw}": must '
                              "be absolute")
        if ".." in raw.split("/"):
            raise ConfigError("image config: Volumes", f'invalid volume path "{raw}": ".." '
                              "is not allowed")
        path = posixpath.normpath(raw)
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        if path == "/":
            raise ConfigError("image config: Volumes", f'invalid volume path "{raw}": the '
                              "root cannot be a volume")
        if path not in out:
            out.append(path)
    return sorted(out)


# --------------------------------------------------------------------------- capabilities

def _cap_name(name: str) -> str:
    """moby's NormalizeLegacyCapabilities: ``all`` in any case is ALL; ``cap_all`` is not."""
    upper = name.upper()
    return upper if upper == "ALL" or upper.startswith("CAP_") else f"CAP_{upper}"


def _all_caps() -> list[str]:
    try:
        last = capabilities.last_cap()
    except OSError:
        last = len(capabilities.NAMES) - 1
    return [capabilities.NAMES[i] for i in range(min(last + 1, len(capabilities.NAMES)))]


def _host_caps() -> set[str]:
    """The capabilities this process can hand on (its bounding set): ``--privileged`` and
    ``--cap-add ALL`` mean "all of these" (this host withholds e.g. CAP_SYS_RESOURCE)."""
    try:
        bnd = capabilities.read_status()["CapBnd"]
    except (OSError, KeyError):
        return set(_all_caps())
    return {capabilities.name(c) for c in capabilities.from_mask(bnd)}


def capability_set(options: CreateOptions) -> list[str]:
    """moby's TweakCapabilities: defaults - cap_drop + cap_add; ``ALL`` in either."""
    known = _all_caps()
    held = _host_caps()
    if options.privileged:
        return [c for c in known if c in held]
    adds = [_cap_name(c) for c in options.cap_add]
    drops = [_cap_name(c) for c in options.cap_drop]
    for cap in (*adds, *drops):
        if cap != "ALL" and cap not in known:
            raise ConfigError("--cap-add" if cap in adds else "--cap-drop",
                              f'unknown capability: "{cap}"')
    for cap in adds:
        if cap != "ALL" and cap not in held and cap not in drops:
            raise ConfigError("--cap-add", f'capability "{cap}" is not available: the host '
                              "does not grant it to isobox")
    if "ALL" in adds:
        caps = [c for c in known if c not in drops and c in held]
    elif "ALL" in drops:
        caps = [c for c in adds if c != "ALL"]
    else:
        caps = [c for c in DOCKER_DEFAULT_CAPS if c not in drops] + adds
    return [c for c in known if c in set(caps)]  # dedup, kernel order


# --------------------------------------------------------------------------- resources

_CPUSET = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def _cpuset(text: str) -> set[int]:
    if not _CPUSET.match(text):
        raise ConfigError("--cpuset-cpus", f"invalid value {text} for cpuset cpus")
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        if int(hi or lo) < int(lo):  # "1-0": no CPU at all, which the kernel refuses
            raise ConfigError("--cpuset-cpus", f"invalid value {text} for cpuset cpus")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def linux_resources(res: Resources) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if res.memory < 0 or (res.memory and res.memory < MIN_MEMORY):
        raise ConfigError("--memory", "Minimum memory limit allowed is 6MB")
    memory: dict[str, Any] = {}
    if res.memory:
        memory["limit"] = res.memory
        if res.memory_swap == 0:
            memory["swap"] = 2 * res.memory
        elif res.memory_swap == -1:
            memory["swap"] = -1
        elif res.memory_swap < res.memory:
            raise ConfigError("--memory-swap", "Minimum memoryswap limit should be larger "
                              "than memory limit, see usage")
        else:
            memory["swap"] = res.memory_swap
    elif res.memory_swap > 0:
        raise ConfigError("--memory-swap", "You should always set the Memory limit when "
                          "using Memoryswap limit, see usage")
    if memory:
        out["memory"] = memory
    cpu: dict[str, Any] = {}
    if res.nano_cpus:
        quota = res.nano_cpus * CPU_PERIOD // 1_000_000_000
        if quota < 1000:
            raise ConfigError("--cpus", "CPU cfs quota can not be less than 1ms (i.e. 1000)")
        cpu.update(quota=quota, period=CPU_PERIOD)
    if res.cpu_shares:
        if res.cpu_shares < 0:
            raise ConfigError("--cpu-shares", f"invalid CPU shares {res.cpu_shares}")
        cpu["shares"] = res.cpu_shares
    if res.cpuset_cpus:
        wanted = _cpuset(res.cpuset_cpus)
        avail = os.sched_getaffinity(0)
        if not wanted <= avail:
            shown = ",".join(str(c) for c in sorted(avail))
            raise ConfigError("--cpuset-cpus", f"Requested CPUs are not available - "
                              f"requested {res.cpuset_cpus}, available: {shown}")
        cpu["cpus"] = res.cpuset_cpus
    if cpu:
        out["cpu"] = cpu
    if res.pids_limit > 0:
        out["pids"] = {"limit": res.pids_limit}
    return out


# --------------------------------------------------------------------------- devices

def _device_entry(host: str, container: str, st: os.stat_result) -> dict[str, Any]:
    return {"path": container, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
            "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
            "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


def _is_device(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)


def custom_devices(devs: tuple[DeviceSpec, ...]) -> tuple[list[dict[str, Any]],
                                                          list[dict[str, Any]]]:
    """(linux.devices entries, device cgroup allow rules) for ``--device``; a directory
    adds every device node below it, as Docker."""
    entries: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for d in devs:
        where = f'error gathering device information while adding custom device "{d.host_path}"'
        try:
            st = os.stat(d.host_path)
        except OSError as e:
            raise ConfigError("--device", f"{where}: {(e.strerror or '').lower()}") from None
        found: list[tuple[str, os.stat_result]] = []
        if _is_device(st):
            found.append((d.container_path, st))
        elif stat.S_ISDIR(st.st_mode):
            for base, _, files in os.walk(d.host_path):
                for name in sorted(files):
                    p = os.path.join(base, name)
                    try:
                        fst = os.stat(p)
                    except OSError:
                        continue
                    if _is_device(fst):
                        rel = os.path.relpath(p, d.host_path)
                        found.append((posixpath.join(d.container_path, rel), fst))
        if not found:
            raise ConfigError("--device", f"{where}: not a device node")
        for path, fst in found:
            entry = _device_entry(path, path, fst)
            entries.append(entry)
            rules.append({"allow": True, "type": entry["type"], "major": entry["major"],
                          "minor": entry["minor"], "access": d.permissions})
    return entries, rules


def host_devices() -> list[dict[str, Any]]:
    """Every device node under the host's /dev (``--privileged``), as moby's HostDevices."""
    out: list[dict[str, Any]] = []
    for base, dirs, files in os.walk("/dev"):
        if base == "/dev":
            dirs[:] = [d for d in dirs if d not in _SKIP_DEV_DIRS]
        for name in sorted(files):
            path = os.path.join(base, name)
            if path == "/dev/console":
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if _is_device(st):
                out.append(_device_entry(path, path, st))
    return out


def thermal_throttle_paths() -> list[str]:
    base = "/sys/devices/system/cpu"
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    out = []
    for name in names:
        if name.startswith("cpu") and name[3:].isdigit():
            path = THERMAL_THROTTLE_PATTERN.format(name[3:])
            if os.path.isdir(path):
                out.append(path)
    return out


# --------------------------------------------------------------------------- the spec

def find_init_binary() -> str:
    """The host's static init for ``--init`` (bound into any image, so it must be static)."""
    for path in INIT_CANDIDATES:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise ConfigError("--init", "no init binary found: install Debian's tini package "
                      "(/usr/bin/tini-static)")


def _seccomp(options: CreateOptions, caps: list[str]) -> dict[str, Any] | None:
    if options.privileged or options.seccomp_profile == "unconfined":
        return None
    if options.seccomp_profile:
        return load_profile(options.seccomp_profile, caps)
    return default_profile(caps)


def _hostname(inputs: SpecInputs) -> str:
    if inputs.options.hostname:
        return inputs.options.hostname
    if inputs.netns_path is None:  # --network host: the host's name, as Docker
        return socket.gethostname()
    return inputs.container_id[:12]


def _mounts(inputs: SpecInputs, privileged: bool) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = default_spec()["mounts"]
    for m in mounts:
        if m["destination"] == "/proc":  # moby's default spec (runc spec's has no options)
            m["options"] = ["nosuid", "noexec", "nodev"]
        if privileged and m["destination"] in ("/sys", "/sys/fs/cgroup"):
            m["options"] = [o for o in m["options"] if o != "ro"] + ["rw"]
    if inputs.netns_path is None:  # sysfs needs a netns of its own: bind the host's
        for m in mounts:
            if m["destination"] == "/sys":
                m.update(type="bind", source="/sys",
                         options=["rbind", "nosuid", "noexec", "nodev",
                                  "rw" if privileged else "ro"])
    for dest, source in sorted(inputs.etc_files.items()):
        opts = ["rbind", "rprivate", "nosuid", "nodev", "noexec"]
        opts.append("ro" if inputs.options.read_only else "rw")
        mounts.append({"destination": dest, "type": "bind", "source": source,
                       "options": opts})
    if inputs.options.init:
        source = inputs.init_binary or find_init_binary()
        mounts.append({"destination": INIT_PATH, "type": "bind", "source": source,
                       "options": ["bind", "ro", "nosuid", "nodev"]})
    mounts.extend(dict(m) for m in inputs.extra_mounts)
    return mounts


def build_spec(inputs: SpecInputs) -> dict[str, Any]:
    """The container's OCI runtime config. Raises ConfigError (bad option) or
    ImageError (unusable user database) before anything is made."""
    o = inputs.options
    img = inputs.image_config or {}
    if not isinstance(img, dict):
        raise ConfigError("image config", "must be an object")
    check_ulimits(o.resources.ulimits)
    args = argv(o, img)
    if o.init:
        args = [INIT_PATH, "--", *args]
    hostname = _hostname(inputs)
    uid, gid, extra = resolve_user(inputs.rootfs, o.user or _image_user(img))
    caps = capability_set(o)
    held = caps if uid == 0 else []  # moby: a non-root user keeps the bounding set only

    spec = default_spec(args=args)
    spec.pop("annotations", None)
    process = spec["process"]
    process["terminal"] = o.tty
    process["env"] = environment(o, img, hostname)
    process["cwd"] = working_dir(o, img)
    user: dict[str, Any] = {"uid": uid, "gid": gid}
    if extra:
        user["additionalGids"] = extra
    process["user"] = user
    process["capabilities"] = {"bounding": list(caps), "effective": list(held),
                               "permitted": list(held)}
    process["noNewPrivileges"] = o.no_new_privileges
    rlimits = [rlimit_entry(u) for u in o.resources.ulimits]
    if rlimits:
        process["rlimits"] = rlimits
    else:
        process.pop("rlimits", None)
    process.pop("oomScoreAdj", None)

    spec["root"] = {"path": inputs.rootfs, "readonly": o.read_only}
    spec["hostname"] = hostname
    spec["mounts"] = _mounts(inputs, o.privileged)

    linux: dict[str, Any] = {}
    resources = linux_resources(o.resources)
    if o.privileged:
        resources["devices"] = [{"allow": True, "access": "rwm"}]
        linux["devices"] = host_devices()
    else:
        entries, rules = custom_devices(o.devices)
        if entries:
            linux["devices"] = entries
            resources["devices"].extend(rules)
    linux["resources"] = resources
    linux["cgroupsPath"] = inputs.cgroups_path
    namespaces: list[dict[str, Any]] = [{"type": t} for t in ("pid", "ipc", "uts", "mount",
                                                              "cgroup")]
    if inputs.netns_path == "":
        namespaces.append({"type": "network"})
    elif inputs.netns_path is not None:
        namespaces.append({"type": "network", "path": inputs.netns_path})
    linux["namespaces"] = namespaces
    if o.privileged:
        linux["maskedPaths"] = []
        linux["readonlyPaths"] = []
    else:
        linux["maskedPaths"] = [*DEFAULT_MASKED_PATHS, *thermal_throttle_paths()]
        linux["readonlyPaths"] = list(DEFAULT_READONLY_PATHS)
    seccomp = _seccomp(o, caps)
    if seccomp is not None:
        linux["seccomp"] = seccomp
    spec["linux"] = linux
    return spec


def _image_user(img: dict[str, Any]) -> str:
    user = img.get("User") or ""
    if not isinstance(user, str):
        raise ConfigError("image config: User", "must be a string")
    return user
