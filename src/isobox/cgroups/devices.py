"""Device rules (``linux.resources.devices``): validation, the v1 ``devices`` controller, and
the kernel's rule semantics for the eBPF filter of cgroup v2 (:mod:`isobox.cgroups.ebpf`).

The rules always start from deny-all, whatever the list says: the v1 driver writes ``a`` to
``devices.deny`` first and then each rule, in order, to ``devices.allow`` or
``devices.deny``; the v2 program is compiled from :func:`emulate`, which follows the same
kernel semantics. A caller that wants runc's defaults appends :data:`DEFAULT_RULES`.

A rule of type ``a`` with wildcard numbers and full ``rwm`` access resets the list (allow-all
or deny-all). Any other type-``a`` rule is split into a ``c`` and a ``b`` rule: the kernel
would read ``a 1:3 rwm`` as "all devices", which is never what such a rule means.
"""

from __future__ import annotations

from isobox.cgroups import fs
from isobox.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

WHERE = "config.json: linux.resources.devices"
WILDCARD = -1
_MAX_NUM = (1 << 32) - 2

# runc's AllowedDevices, which runc appends after the spec's rules: mknod of anything, the
# standard nodes and /dev/pts. c 10:200 (/dev/net/tun) is left out (CATALOGUE case 20).
DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},   # /dev/null
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},   # /dev/zero
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},   # /dev/full
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},   # /dev/random
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},   # /dev/urandom
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},   # /dev/tty
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},   # /dev/console
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},   # /dev/ptmx
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},             # /dev/pts/*
)


class Rule:
    """One normalised rule; ``major``/``minor`` are :data:`WILDCARD` for ``*``."""

    __slots__ = ("access", "allow", "major", "minor", "type")

    def __init__(self, allow: bool, type_: str, major: int, minor: int, access: str) -> None:
        self.allow = allow
        self.type = type_
        self.major = major
        self.minor = minor
        self.access = access

    @property
    def is_reset(self) -> bool:
        """``a *:* rwm``: switches the default (allow-all / deny-all) and drops exceptions."""
        return (self.type == "a" and self.major == WILDCARD and self.minor == WILDCARD
                and self.access == "rwm")

    def cgroup_string(self) -> str:
        if self.is_reset:
            return "a"
        major = "*" if self.major == WILDCARD else str(self.major)
        minor = "*" if self.minor == WILDCARD else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"

    def key(self) -> tuple[str, int, int]:
        return (self.type, self.major, self.minor)

    def __repr__(self) -> str:
        return f"Rule({'allow' if self.allow else 'deny'} {self.cgroup_string()})"


def _num(value: Any, where: str) -> int:
    if value is None:
        return WILDCARD
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, "must be an integer")
    if value == WILDCARD:
        return WILDCARD
    if not 0 <= value <= _MAX_NUM:
        raise ConfigError(where, f"must be -1 (any) or between 0 and {_MAX_NUM}")
    return value


def normalize(rules: Any, where: str = WHERE) -> list[Rule]:
    """Validate OCI device rules; type-``a`` rules that are not resets become ``c`` + ``b``."""
    if not isinstance(rules, list):
        raise ConfigError(where, "must be an array")
    out: list[Rule] = []
    for i, raw in enumerate(rules):
        w = f"{where}[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(w, "must be an object")
        allow = raw.get("allow")
        if not isinstance(allow, bool):
            raise ConfigError(f"{w}.allow", "must be true or false")
        type_ = raw.get("type") or "a"
        if type_ not in ("a", "b", "c"):
            raise ConfigError(f"{w}.type", f'unknown device type "{type_}" (want a, b or c)')
        major = _num(raw.get("major"), f"{w}.major")
        minor = _num(raw.get("minor"), f"{w}.minor")
        access = raw.get("access")
        if access is None or access == "":
            access = "rwm"
        if not isinstance(access, str) or not access or set(access) - set("rwm"):
            raise ConfigError(f"{w}.access", f'"{access}" is not a combination of r, w and m')
        access = "".join(c for c in "rwm" if c in access)
        rule = Rule(allow, type_, major, minor, access)
        if type_ == "a" and not rule.is_reset:
            out.append(Rule(allow, "c", major, minor, access))
            out.append(Rule(allow, "b", major, minor, access))
        else:
            out.append(rule)
    return out


def apply_v1(cgroup_dir: str, rules: list[Rule]) -> None:
    """Deny-all, then each rule in order (the v1 kernel keeps the list)."""
    allow = cgroup_dir + "/devices.allow"
    deny = cgroup_dir + "/devices.deny"
    fs.write(deny, "a")
    for rule in rules:
        fs.write(allow if rule.allow else deny, rule.cgroup_string())


def emulate(rules: list[Rule]) -> tuple[bool, list[Rule]]:
    """What the v1 kernel would hold after deny-all + ``rules``: ``(default_allow,
    exceptions)``. With a deny default the exceptions are allowed; with an allow default they
    are denied. A rule against the current default removes access bits from the exception
    with exactly the same type and numbers (``dev_exception_rm``)."""
    default_allow = False
    exc: dict[tuple[str, int, int], str] = {}
    for rule in rules:
        if rule.is_reset:
            default_allow = rule.allow
            exc.clear()
            continue
        key = rule.key()
        if rule.allow != default_allow:  # add an exception
            old = exc.get(key, "")
            exc[key] = "".join(c for c in "rwm" if c in old or c in rule.access)
        elif key in exc:  # remove access from an existing exception
            left = "".join(c for c in exc[key] if c not in rule.access)
            if left:
                exc[key] = left
            else:
                del exc[key]
    return default_allow, [Rule(not default_allow, t, ma, mi, acc)
                           for (t, ma, mi), acc in exc.items()]
