"""Which cgroup hierarchies this host has, from ``/proc/self/mountinfo`` (never hard-coded).

* ``v1``: only ``cgroup`` mounts (one per controller group, plus named ones like
  ``name=systemd``);
* ``v2``: one ``cgroup2`` mount holding every controller;
* ``hybrid``: v1 controller mounts plus a ``cgroup2`` mount (usually
  ``/sys/fs/cgroup/unified``) that processes join too, and that may own the controllers no v1
  hierarchy has (``hugetlb`` on some hosts).
"""

from __future__ import annotations

from isobox.errors import SystemSetupError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Superblock options of a v1 mount that are not controller names.
_V1_FLAGS = frozenset({"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode",
                       "none", "all", "favordynmods"})


class Hierarchy:
    """One mounted cgroup hierarchy.

    ``key`` names it under ``/sys/fs/cgroup`` (``cpu,cpuacct``, ``systemd``, ``unified``; ``""``
    for a pure-v2 host whose ``cgroup2`` is the whole tree). ``options`` are what ``mount -t
    cgroup -o`` needs to mount it again (``cpu,cpuacct``, ``name=systemd``; ``""`` for cgroup2).
    ``root`` is the mount's root inside the hierarchy (``/`` except for bind mounts).
    """

    __slots__ = ("controllers", "fstype", "key", "mountpoint", "options", "root")

    def __init__(self, key: str, mountpoint: str, fstype: str, options: str, root: str = "/",
                 controllers: tuple[str, ...] = ()) -> None:
        self.key = key
        self.mountpoint = mountpoint
        self.fstype = fstype
        self.options = options
        self.root = root
        self.controllers = controllers

    @property
    def is_v2(self) -> bool:
        return self.fstype == "cgroup2"

    def to_list(self) -> list[Any]:
        return [self.key, self.mountpoint, self.fstype, self.options, self.root,
                list(self.controllers)]

    @classmethod
    def from_list(cls, data: list[Any]) -> Hierarchy:
        key, mountpoint, fstype, options, root, controllers = data
        return cls(str(key), str(mountpoint), str(fstype), str(options), str(root),
                   tuple(str(c) for c in controllers))

    def __repr__(self) -> str:
        return f"Hierarchy({self.key!r}, {self.mountpoint!r}, {self.fstype!r}, {self.options!r})"


def _unescape(field: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as ``\ooo``."""
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _basename(path: str) -> str:
    return path.rstrip("/").rpartition("/")[2]


def parse_mountinfo(text: str) -> list[Hierarchy]:
    """The cgroup hierarchies in a mountinfo text, one per superblock (bind mounts dropped).

    A hierarchy mounted twice keeps the mount whose root is ``/`` (the whole tree), else the
    first. For cgroup2, ``controllers`` is left empty: they are in ``cgroup.controllers``.
    """
    by_dev: dict[str, Hierarchy] = {}
    order: list[str] = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        if not sep:
            continue
        rest = tail.split(" ")
        if len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2"):
            continue
        fields = head.split(" ")
        if len(fields) < 5:
            continue
        dev, root, mountpoint = fields[2], _unescape(fields[3]), _unescape(fields[4])
        fstype = rest[0]
        if fstype == "cgroup":
            ctls: list[str] = []
            named = ""
            for opt in rest[2].split(","):
                if opt.startswith("name="):
                    named = opt
                elif opt not in _V1_FLAGS and "=" not in opt:
                    ctls.append(opt)
            options = ",".join([*ctls, named] if named else ctls)
            if not options:
                continue
            h = Hierarchy(_basename(mountpoint), mountpoint, fstype, options, root, tuple(ctls))
        else:
            h = Hierarchy(_basename(mountpoint), mountpoint, fstype, "", root)
        old = by_dev.get(dev)
        if old is None:
            by_dev[dev] = h
            order.append(dev)
        elif old.root != "/" and root == "/":
            by_dev[dev] = h
    hiers = [by_dev[d] for d in order]
    v2 = [h for h in hiers if h.is_v2]
    v1 = [h for h in hiers if not h.is_v2]
    if len(v2) > 1:  # two cgroup2 mounts of different namespaces' views: keep the first
        hiers = [h for h in hiers if not h.is_v2 or h is v2[0]]
    if v2 and not any(h.controllers for h in v1):
        # Pure v2 (a stray named v1 mount does not make it hybrid): the tree's key is "".
        v2[0].key = ""
        hiers = [v2[0]]
    seen: set[str] = set()
    for h in hiers:  # make keys unique (two mounts with the same base name)
        if h.key in seen:
            h.key = h.options or h.mountpoint
        seen.add(h.key)
    return hiers


def layout_of(hiers: list[Hierarchy]) -> str:
    has_v2 = any(h.is_v2 for h in hiers)
    has_v1 = any(not h.is_v2 for h in hiers)
    if has_v1 and has_v2:
        return "hybrid"
    if has_v2:
        return "v2"
    if has_v1:
        return "v1"
    raise SystemSetupError("no cgroup filesystem is mounted (see /proc/self/mountinfo)")


_cache: list[Hierarchy] | None = None


def hierarchies() -> list[Hierarchy]:
    """The host's hierarchies (parsed once per process)."""
    global _cache
    if _cache is None:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            _cache = parse_mountinfo(f.read())
    return _cache


def detect_layout() -> str:
    """``"v1"``, ``"v2"`` or ``"hybrid"``."""
    return layout_of(hierarchies())


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` as ``{hierarchy options: path}``; the v2 line is under ``""``.

    Keys use the same form as :attr:`Hierarchy.options` (``cpu,cpuacct``, ``name=systemd``),
    with the controllers in the kernel's order.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def own_cgroup(h: Hierarchy, own: dict[str, str]) -> str:
    """The calling process's cgroup in hierarchy ``h`` relative to the mount's root, from
    :func:`parse_proc_cgroup` output; ``/`` when unknown."""
    path: str | None
    if h.is_v2:
        path = own.get("")
    else:
        path = own.get(h.options)
        if path is None:
            want = set(h.options.split(","))
            for k, v in own.items():
                if k and set(k.split(",")) == want:
                    path = v
                    break
    if not path:
        return "/"
    if path.endswith(" (deleted)"):
        path = path[: -len(" (deleted)")]
    if h.root != "/" and (path == h.root or path.startswith(h.root + "/")):
        path = path[len(h.root):] or "/"
    return path
