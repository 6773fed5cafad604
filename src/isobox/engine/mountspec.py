"""Docker's mount flags (``-v``/``Binds``, ``--mount``, ``--tmpfs``) parsed into
:class:`~isobox.engine.options.MountSpec`, checked, and turned into OCI mounts.

Error messages follow moby's ``volume/mounts/linux_parser.go`` and the CLI's
``opts/mount.go`` so Docker tooling sees the text it expects. Parsing never touches the
host; :func:`validate_mounts` only stats bind sources (it never creates them).
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Callable, Iterable
from typing import Any

from isobox.engine.options import MountSpec
from isobox.errors import ConfigError

VOLUME_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")
DEFAULT_PROPAGATION = "rprivate"
_LABELS = ("z", "Z")
_ACCESS = ("ro", "rw")
_COPY = ("nocopy",)
_CONSISTENCY = ("consistent", "cached", "delegated")  # Docker Desktop's; no effect on Linux

# runc's checkProcMount exceptions: file binds lxcfs makes over procfs files.
PROC_BIND_EXCEPTIONS = frozenset(
    ["/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
     "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/sys/kernel/ns_last_pid",
     "/proc/sys/crypto/fips_enabled"])

# Mount flags tmpfs accepts (moby pkg/mount ParseTmpfsOptions) and its data options.
_TMPFS_FLAGS = frozenset(
    ["rw", "ro", "exec", "noexec", "suid", "nosuid", "dev", "nodev", "sync", "async",
     "dirsync", "mand", "nomand", "atime", "noatime", "diratime", "nodiratime", "relatime",
     "norelatime", "strictatime", "nostrictatime", *PROPAGATIONS])
_TMPFS_DATA = ("size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol")
_TMPFS_VALUE = {"uid": r"\d+", "gid": r"\d+", "nr_inodes": r"\d+[kKmMgG]?",
                "nr_blocks": r"\d+[kKmMgG]?", "mpol": r"[a-z]+(?:[=:][0-9,:-]*)*"}

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def _err(message: str) -> ConfigError:
    return ConfigError("", message)


def ram_in_bytes(text: str) -> int:
    """Docker's ``units.RAMInBytes``: ``64m``, ``1.5g``, ``10MiB``, ``512`` (binary units)."""
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise ValueError(f"invalid size: '{text}'")
    try:
        number = float(m.group(1))
    except ValueError:
        raise ValueError(f"invalid size: '{text}'") from None
    return int(number * _UNITS[(m.group(2) or "").lower()])


def _mount_error(kind: str, why: str) -> ConfigError:
    return _err(f'invalid mount config for type "{kind}": {why}')


def _clean_target(kind: str, target: str) -> str:
    """Absolute, not ``/``, no ``..`` climbing above the root; returned normalised."""
    if not target:
        raise _mount_error(kind, "field Target must not be empty")
    if not target.startswith("/"):
        raise _mount_error(kind, f"invalid mount path: '{target}' mount path must be absolute")
    depth = 0
    for comp in target.split("/"):
        if comp == "..":
            depth -= 1
            if depth < 0:
                raise _mount_error(kind, f"invalid mount path: '{target}' leaves the "
                                   "container's root through '..'")
        elif comp not in ("", "."):
            depth += 1
    cleaned = posixpath.normpath(target)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    if cleaned == "/":
        raise _mount_error(kind, "invalid specification: destination can't be '/'")
    return cleaned


def check_mount(spec: MountSpec) -> MountSpec:
    """moby's validateMountConfig for one mount (no host access); returns it with target
    (and bind source) normalised. Use it on an image's ``Volumes`` before copy-up too."""
    kind = spec.type
    if kind not in ("bind", "volume", "tmpfs"):
        raise _err(f'invalid mount config for type "{kind}": mount type unknown')
    target = _clean_target(kind, spec.target)
    source = spec.source
    if kind == "bind":
        if not source:
            raise _mount_error(kind, "field Source must not be empty")
        if not source.startswith("/"):
            raise _mount_error(kind, f"invalid mount path: '{source}' mount path must be "
                               "absolute")
        source = posixpath.normpath(source)
        if source.startswith("//"):
            source = "/" + source.lstrip("/")
        props = [o for o in spec.options if o in PROPAGATIONS]
        if len(props) > 1:
            raise _mount_error(kind, f"invalid propagation mode: {','.join(props)}")
        if spec.volume_nocopy:
            raise _mount_error(kind, "field VolumeOptions must not be specified")
    elif kind == "volume":
        if len(source) == 1:
            raise _err(f"create {source}: volume name is too short, names should be at least "
                       "two alphanumeric characters")
        if source and not VOLUME_NAME_RE.fullmatch(source):
            raise _err(f'create {source}: "{source}" includes invalid characters for a local '
                       f'volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you '
                       "intended to pass a host directory, use absolute path")
        if spec.read_only and not source:
            raise _mount_error(kind, "must not set ReadOnly mode when using anonymous volumes")
        if any(o in PROPAGATIONS for o in spec.options):
            raise _mount_error(kind, "field BindOptions must not be specified")
    else:
        if source:
            raise _mount_error(kind, "field Source must not be specified")
        _tmpfs_options(",".join(spec.options))
    if target == spec.target and source == spec.source:
        return spec
    return MountSpec(type=kind, target=target, source=source, read_only=spec.read_only,
                     options=spec.options, volume_nocopy=spec.volume_nocopy)


# -- -v / Binds ---------------------------------------------------------------------------

def _valid_mode(mode: str) -> bool:
    """moby's ValidMountMode: at most one of each group, nothing unknown."""
    if not mode:
        return True
    counts = {"access": 0, "label": 0, "prop": 0, "copy": 0, "consistency": 0}
    for opt in mode.split(","):
        if opt in _ACCESS:
            counts["access"] += 1
        elif opt in _LABELS:
            counts["label"] += 1
        elif opt in PROPAGATIONS:
            counts["prop"] += 1
        elif opt in _COPY:
            counts["copy"] += 1
        elif opt in _CONSISTENCY:
            counts["consistency"] += 1
        else:
            return False
    return all(n <= 1 for n in counts.values())


def parse_volume(text: str) -> MountSpec:
    """``-v``/``--volume``/``Binds``: ``[src:]dst[:opts]``; a ``/`` source is a bind, another
    source a named volume, no source an anonymous volume."""
    invalid = _err(f"invalid volume specification: '{text}'")
    parts = text.split(":")
    if not parts[0]:
        raise invalid
    mode = ""
    if len(parts) == 1:
        source, target = "", parts[0]
    elif len(parts) == 2:
        if _valid_mode(parts[1]):
            raise invalid          # "/foo:rw": a destination with a mode but no source
        source, target = parts
    elif len(parts) == 3:
        source, target, mode = parts
    else:
        raise invalid
    if not _valid_mode(mode):
        raise _err(f"invalid mode: {mode}")
    opts = [o for o in mode.split(",") if o]
    kind = "bind" if source.startswith("/") else "volume"
    nocopy = "nocopy" in opts
    if nocopy and kind == "bind":
        raise _mount_error(kind, "field VolumeOptions must not be specified")
    options = tuple(o for o in opts if o in _LABELS or o in PROPAGATIONS)
    return check_mount(MountSpec(type=kind, target=target, source=source,
                                 read_only="ro" in opts, options=options,
                                 volume_nocopy=nocopy))


# -- --mount ------------------------------------------------------------------------------

_TRUE = ("1", "t", "T", "TRUE", "true", "True")
_FALSE = ("0", "f", "F", "FALSE", "false", "False")


def _parse_bool(key: str, val: str) -> bool:
    if val in _TRUE:
        return True
    if val in _FALSE:
        return False
    raise _err(f"invalid value for {key}: {val}")


def _split_csv(text: str) -> list[str]:
    """Go's csv reader for one record: commas separate, double quotes group."""
    fields: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == '"' and text[i + 1:i + 2] == '"':
                cur.append('"')
                i += 1
            elif ch == '"':
                quoted = False
            else:
                cur.append(ch)
        elif ch == '"':
            quoted = True
        elif ch == ",":
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    if quoted:
        raise _err(f'invalid mount specification {text!r}: extraneous or missing " in '
                   "quoted-field")
    fields.append("".join(cur))
    return fields


def parse_mount(text: str) -> MountSpec:
    """``--mount type=bind|volume|tmpfs,source=,target=,readonly,…`` (Docker CLI rules)."""
    kind = "volume"
    source = target = ""
    read_only = nocopy = False
    bind_opts: list[str] = []
    volume_set = tmpfs_set = False
    tmpfs_opts: list[str] = []
    for field in _split_csv(text):
        key, sep, val = field.partition("=")
        key = key.lower()
        if not sep:
            if key in ("readonly", "ro"):
                read_only = True
            elif key == "volume-nocopy":
                nocopy = volume_set = True
            else:
                raise _err(f"invalid field '{field}' must be a key=value pair")
            continue
        if key == "type":
            kind = val.lower()
        elif key in ("source", "src"):
            source = val
        elif key in ("target", "dst", "destination"):
            target = val
        elif key in ("readonly", "ro"):
            read_only = _parse_bool(key, val)
        elif key == "bind-propagation":
            prop = val.lower()
            if prop not in PROPAGATIONS:
                raise _mount_error("bind", f"invalid propagation mode: {val}")
            bind_opts = [prop]
        elif key == "volume-nocopy":
            nocopy = _parse_bool(key, val)
            volume_set = True
        elif key == "consistency":  # accepted and ignored on Linux, as Docker
            if val.lower() not in ("default", *_CONSISTENCY):
                raise _err(f"invalid value for {key}: {val}")
        elif key == "tmpfs-size":
            try:
                size = ram_in_bytes(val)
            except ValueError:
                raise _err(f"invalid value for {key}: {val}") from None
            tmpfs_opts = [o for o in tmpfs_opts if not o.startswith("size=")]
            tmpfs_opts.append(f"size={size}")
            tmpfs_set = True
        elif key == "tmpfs-mode":
            try:
                mode = int(val, 8)
            except ValueError:
                raise _err(f"invalid value for {key}: {val}") from None
            if not 0 <= mode <= 0o7777:
                raise _err(f"invalid value for {key}: {val}")
            tmpfs_opts = [o for o in tmpfs_opts if not o.startswith("mode=")]
            tmpfs_opts.append(f"mode={mode:o}")
            tmpfs_set = True
        else:
            raise _err(f"unexpected key '{key}' in '{field}'")
    if not kind:
        raise _err("type is required")
    if not target:
        raise _err("target is required")
    if volume_set and kind != "volume":
        raise _err(f"cannot mix 'volume-*' options with mount type '{kind}'")
    if bind_opts and kind != "bind":
        raise _err(f"cannot mix 'bind-*' options with mount type '{kind}'")
    if tmpfs_set and kind != "tmpfs":
        raise _err(f"cannot mix 'tmpfs-*' options with mount type '{kind}'")
    options = tuple(bind_opts if kind == "bind" else tmpfs_opts if kind == "tmpfs" else ())
    return check_mount(MountSpec(type=kind, target=target, source=source,
                                 read_only=read_only, options=options,
                                 volume_nocopy=nocopy))


# -- --tmpfs ------------------------------------------------------------------------------

def _tmpfs_options(text: str) -> tuple[list[str], bool]:
    """(normalised options without ro/rw, read_only) of a tmpfs option string."""
    out: list[str] = []
    read_only = False
    for opt in (o.strip() for o in text.split(",")):
        if not opt:
            continue
        key, sep, val = opt.partition("=")
        if sep:
            if key not in _TMPFS_DATA:
                raise _err(f'invalid tmpfs option "{opt}"')
            if key == "size" and re.fullmatch(r"\d{1,3}%", val):
                pass                               # a share of RAM, as tmpfs takes it
            elif key == "size":
                try:
                    val = str(ram_in_bytes(val))
                except ValueError:
                    raise _err(f'invalid tmpfs option "{opt}"') from None
            elif key == "mode":
                try:
                    if not 0 <= int(val, 8) <= 0o7777:
                        raise ValueError(val)
                except ValueError:
                    raise _err(f'invalid tmpfs option "{opt}"') from None
            elif not re.fullmatch(_TMPFS_VALUE.get(key, ".*"), val):
                raise _err(f'invalid tmpfs option "{opt}"')
            out = [o for o in out if not o.startswith(key + "=")]
            out.append(f"{key}={val}")
        elif opt in ("ro", "rw"):
            read_only = opt == "ro"
        elif opt in _TMPFS_FLAGS:
            out.append(opt)
        else:
            raise _err(f'invalid tmpfs option "{opt}"')
    return out, read_only


def parse_tmpfs(text: str) -> MountSpec:
    """``--tmpfs /run[:rw,size=64m,mode=1777,exec]``."""
    target, _, opts = text.partition(":")
    options, read_only = _tmpfs_options(opts)
    return check_mount(MountSpec(type="tmpfs", target=target, read_only=read_only,
                                 options=tuple(options)))


# -- checks against each other and the host -----------------------------------------------

def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _check_kernel_fs_target(spec: MountSpec) -> None:
    t = spec.target
    if t == "/proc":
        raise _err(f'"{t}" cannot be mounted because it is not of type proc')
    if _inside(t, "/proc"):
        if spec.type == "bind" and t in PROC_BIND_EXCEPTIONS:
            return
        raise _err(f'"{t}" cannot be mounted because it is inside /proc')
    if _inside(t, "/sys"):
        raise _err(f'"{t}" cannot be mounted because it is inside /sys')


def propagation(spec: MountSpec) -> str:
    """The bind propagation the user asked for, or ""."""
    return next((o for o in spec.options if o in PROPAGATIONS), "")


def source_in_data_root(source: str, data_root: str) -> bool:
    """True when a bind ``source`` is inside ``data_root`` or contains it (moby's
    validateBindDaemonRoot), compared after resolving symlinks."""
    src = os.path.realpath(source)
    root = os.path.realpath(data_root)
    return _inside(src, root) or _inside(root, src)


def validate_mounts(specs: Iterable[MountSpec], *, data_root: str) -> None:
    """Refuse what cannot be mounted safely. Never creates anything on the host.

    A bind whose source is inside (or contains) ``data_root`` must use rslave/rshared
    propagation; with none given :func:`oci_mounts` applies rslave, as moby does."""
    seen: set[str] = set()
    for raw in specs:
        spec = check_mount(raw)
        if spec.target in seen:
            raise _err(f"Duplicate mount point: {spec.target}")
        seen.add(spec.target)
        _check_kernel_fs_target(spec)
        if spec.type != "bind":
            continue
        try:
            st = os.stat(spec.source)
        except FileNotFoundError:
            raise _mount_error("bind", f"bind source path does not exist: {spec.source}"
                               ) from None
        except OSError as e:
            raise _mount_error("bind", f"bind source path {spec.source}: "
                               f"{os.strerror(e.errno or 0)}") from None
        if stat.S_ISSOCK(st.st_mode):
            import logging  # only here: with its imports 4-6 ms of every `isobox run`

            logging.getLogger(__name__).warning(
                "bind-mounting the socket %s into a container gives it whatever that socket "
                "controls", spec.source)
        prop = propagation(spec)
        if source_in_data_root(spec.source, data_root) and prop not in ("", "rslave",
                                                                        "rshared"):
            raise _err('invalid mount config: must use either propagation mode "rslave" or '
                       '"rshared" when mount source is within the daemon root, daemon root: '
                       f'"{data_root}", bind mount source: "{spec.source}", propagation: '
                       f'"{prop}"')


# -- OCI ----------------------------------------------------------------------------------

def _depth(target: str) -> int:
    return len([c for c in target.split("/") if c])


def oci_mounts(specs: Iterable[MountSpec], *, volume_path: Callable[[str], str],
               data_root: str = "") -> list[dict[str, Any]]:
    """OCI runtime-spec ``mounts`` entries, parents before children.

    ``volume_path(name)`` gives a volume's host directory (anonymous volumes must have been
    created and named by then). With ``data_root`` set, a bind from inside it without an
    explicit propagation gets rslave (moby's rule)."""
    out: list[tuple[int, int, dict[str, Any]]] = []
    for i, raw in enumerate(specs):
        spec = check_mount(raw)
        access = "ro" if spec.read_only else "rw"
        if spec.type in ("bind", "volume"):
            if spec.type == "bind":
                source = spec.source
            else:
                if not spec.source:
                    raise _mount_error("volume", f"the anonymous volume for {spec.target} "
                                       "was not created")
                source = volume_path(spec.source)
            prop = propagation(spec)
            if not prop:
                prop = ("rslave" if spec.type == "bind" and data_root
                        and source_in_data_root(source, data_root) else DEFAULT_PROPAGATION)
            entry = {"destination": spec.target, "type": "bind", "source": source,
                     "options": ["rbind", access, prop]}
        else:
            opts = list(spec.options)
            flags = ["nosuid", "nodev"]
            if "exec" not in opts and "noexec" not in opts:
                flags.append("noexec")
            opts = [o for o in opts if o not in ("nosuid", "nodev")]
            entry = {"destination": spec.target, "type": "tmpfs", "source": "tmpfs",
                     "options": [*flags, *opts, access]}
        out.append((_depth(spec.target), i, entry))
    out.sort(key=lambda t: (t[0], t[1]))
    return [e for _, _, e in out]
