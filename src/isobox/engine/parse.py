"""Docker's CLI/API value parsers: ``-m 512m``, ``--cpus``, ``-p``, ``--ulimit``, ``--restart``,
``--env-file``, ``--device``, ``--security-opt``, ``--add-host``, durations, signals, labels.

Each raises :class:`isobox.errors.ConfigError` ``(flag, message)`` with Docker's wording
(moby ``opts``/``runconfig``, go-units, go-connections ``nat``, Go's ``time``).
"""

from __future__ import annotations

import os
import re
import resource
import signal
from collections.abc import Iterable

from isobox.engine.options import DeviceSpec, HealthConfig, PortSpec, RestartPolicy, Ulimit
from isobox.errors import ConfigError

# --------------------------------------------------------------------------- sizes, cpus

_SIZE = re.compile(r"^(\d+(?:\.\d+)*) ?([kmgtp])?i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


INT64_MAX = (1 << 63) - 1  # Docker's numbers are Go int64s


def parse_bytes(text: str, flag: str = "--memory") -> int:
    """go-units RAMInBytes: ``512m``, ``1.5g``, ``1024``, ``2GiB`` -> bytes (binary units)."""
    from fractions import Fraction  # (with decimal and numbers: 2-3 ms; only for a flag)

    m = _SIZE.match(text.strip())
    if m is None or m.group(1).count(".") > 1:
        raise ConfigError(flag, f"invalid size: '{text}'")
    size = int(Fraction(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    if size > INT64_MAX:
        raise ConfigError(flag, f"invalid size: '{text}': value out of range")
    return size


def parse_memory_swap(text: str) -> int:
    """``--memory-swap``: ``-1`` unlimited, a size, or "" (0: Docker's default)."""
    if text.strip() in ("", "0"):
        return 0
    if text.strip() == "-1":
        return -1
    return parse_bytes(text, "--memory-swap")


def parse_cpus(text: str, host_cpus: int | None = None) -> int:
    """``--cpus 1.5`` -> nano CPUs (1_500_000_000), checked against the host's CPU count."""
    from fractions import Fraction

    try:
        value = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError("--cpus", f'invalid argument "{text}" for "--cpus" flag: failed to '
                          f"parse {text} as a rational number") from None
    nano = value * 1_000_000_000
    if nano.denominator != 1:
        raise ConfigError("--cpus", f'invalid argument "{text}" for "--cpus" flag: value is '
                          "too precise")
    ncpu = host_cpus if host_cpus is not None else (os.cpu_count() or 1)
    if nano < 0 or nano > ncpu * 1_000_000_000:
        raise ConfigError("--cpus", f"range of CPUs is from 0.01 to {ncpu}.00, as there are "
                          f"only {ncpu} CPUs available")
    return int(nano)


# --------------------------------------------------------------------------- ports

def _port_range(text: str, what: str, spec: str) -> tuple[int, int]:
    lo, sep, hi = text.partition("-")
    try:
        start = int(lo)
        end = int(hi) if sep else start
    except ValueError:
        raise ConfigError("--publish", f"invalid {what}: {text}") from None
    if not (0 <= start <= 65535 and 0 <= end <= 65535) or end < start \
            or (what == "containerPort" and start == 0):
        raise ConfigError("--publish", f"invalid {what}: {text}")
    return start, end


def _split_ip(spec: str) -> tuple[str, str]:
    """(host ip, rest) of ``[ip:]rest``; an IPv6 address is bracketed: ``[::1]:80:80``."""
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0 or spec[end + 1:end + 2] != ":":
            raise ConfigError("--publish", f"invalid port format: {spec}")
        return spec[1:end], spec[end + 2:]
    parts = spec.split(":")
    if len(parts) == 3:
        return parts[0], f"{parts[1]}:{parts[2]}"
    if len(parts) > 3:
        raise ConfigError("--publish", f"invalid port format: {spec}")
    return "", spec


def parse_port(spec: str) -> tuple[PortSpec, ...]:
    """One ``-p``: ``[ip:][hostPort:]containerPort[/proto]``; port ranges of equal length."""
    raw, slash, proto = spec.partition("/")
    proto = proto.lower() if slash else "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise ConfigError("--publish", f"invalid proto: {proto}")
    if proto == "sctp":
        raise ConfigError("--publish", "invalid proto: sctp (not supported)")
    if not raw:
        raise ConfigError("--publish", f"invalid port format: {spec}")
    ip, rest = _split_ip(raw)
    if ip:
        import ipaddress

        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise ConfigError("--publish", f"invalid ip address: {ip}") from None
    host, _, container = rest.rpartition(":")
    if ":" in host:
        raise ConfigError("--publish", f"invalid port format: {spec}")
    c_lo, c_hi = _port_range(container, "containerPort", spec)
    if host:
        h_lo, h_hi = _port_range(host, "hostPort", spec)
    else:
        h_lo = h_hi = 0
    n = c_hi - c_lo
    if host and h_hi - h_lo != n:
        raise ConfigError("--publish", "invalid ranges specified for container and host "
                          f"ports: {spec}")
    return tuple(PortSpec(container_port=c_lo + i, protocol=proto, host_ip=ip,
                          host_port=h_lo + i if host else 0) for i in range(n + 1))


def parse_ports(specs: Iterable[str]) -> tuple[PortSpec, ...]:
    """Every ``-p``; the same host ip/port/proto published twice is refused."""
    out: list[PortSpec] = []
    seen: set[tuple[str, int, str]] = set()
    for spec in specs:
        for p in parse_port(spec):
            if p.host_port:
                key = (p.host_ip, p.host_port, p.protocol)
                if key in seen:
                    raise ConfigError("--publish", f"host port {p.host_port}/{p.protocol} is "
                                      "published twice")
                seen.add(key)
            out.append(p)
    return tuple(out)


# --------------------------------------------------------------------------- ulimits

#: Docker's --ulimit names -> resource.RLIMIT_* (go-units ulimit.go).
ULIMIT_NAMES: dict[str, int] = {
    "core": resource.RLIMIT_CORE,
    "cpu": resource.RLIMIT_CPU,
    "data": resource.RLIMIT_DATA,
    "fsize": resource.RLIMIT_FSIZE,
    "locks": 10,  # RLIMIT_LOCKS (not exported by the resource module)
    "memlock": resource.RLIMIT_MEMLOCK,
    "msgqueue": resource.RLIMIT_MSGQUEUE,
    "nice": resource.RLIMIT_NICE,
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "rss": resource.RLIMIT_RSS,
    "rtprio": resource.RLIMIT_RTPRIO,
    "rttime": resource.RLIMIT_RTTIME,
    "sigpending": resource.RLIMIT_SIGPENDING,
    "stack": resource.RLIMIT_STACK,
}
UNLIMITED = -1  # --ulimit core=-1: RLIM_INFINITY


def _limit_value(text: str, spec: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise ConfigError("--ulimit", f'invalid ulimit argument: {spec}: "{text}" is not an '
                          "integer") from None
    if value < UNLIMITED:
        raise ConfigError("--ulimit", f"invalid ulimit argument: {spec}: negative value")
    return value


RLIM_INFINITY_U64 = (1 << 64) - 1  # OCI rlimits are uint64; Python's RLIM_INFINITY is -1


def _as_rlim(v: int) -> int:
    return RLIM_INFINITY_U64 if v == UNLIMITED else v


def parse_ulimits(specs: Iterable[str]) -> tuple[Ulimit, ...]:
    """Several ``--ulimit``: a name given twice keeps the last value, as Docker's map does."""
    by_name = {u.name: u for u in map(parse_ulimit, specs)}
    return tuple(by_name.values())


def parse_ulimit(spec: str) -> Ulimit:
    """``nofile=1024[:2048]`` (soft[:hard]; -1 = unlimited)."""
    name, sep, values = spec.partition("=")
    if not sep:
        raise ConfigError("--ulimit", f"invalid ulimit argument: {spec}")
    if name not in ULIMIT_NAMES:
        raise ConfigError("--ulimit", f"invalid ulimit type: {name}")
    parts = values.split(":")
    if len(parts) > 2:
        raise ConfigError("--ulimit", f"too many limit value arguments - {values}, can only "
                          "have up to two, `soft[:hard]`")
    soft = _limit_value(parts[0], spec)
    hard = _limit_value(parts[1], spec) if len(parts) == 2 else soft
    if hard != UNLIMITED and (soft == UNLIMITED or soft > hard):
        raise ConfigError("--ulimit", "ulimit soft limit must be less than or equal to hard "
                          f"limit: {parts[0]} > {parts[1]}")
    return Ulimit(name=name, soft=soft, hard=hard)


def check_ulimits(ulimits: Iterable[Ulimit]) -> None:
    """Refuse a hard limit above this process's own: raising it needs CAP_SYS_RESOURCE,
    which the host does not give us (the runtime's setrlimit would fail at start)."""
    for u in ulimits:
        host_hard = resource.getrlimit(ULIMIT_NAMES[u.name])[1]
        if host_hard == resource.RLIM_INFINITY:
            continue
        if u.hard == UNLIMITED or u.hard > host_hard:
            shown = "unlimited" if u.hard == UNLIMITED else str(u.hard)
            raise ConfigError("--ulimit", f"ulimit {u.name}: hard limit {shown} is above the "
                              f"host's hard limit {host_hard}")


def rlimit_entry(u: Ulimit) -> dict[str, object]:
    """The OCI ``process.rlimits`` entry of ``u``."""
    return {"type": f"RLIMIT_{u.name.upper()}", "soft": _as_rlim(u.soft), "hard": _as_rlim(u.hard)}


# --------------------------------------------------------------------------- restart, env

def parse_restart(text: str) -> RestartPolicy:
    """``no`` | ``always`` | ``unless-stopped`` | ``on-failure[:N]``."""
    name, sep, count = text.partition(":")
    if name not in ("no", "always", "unless-stopped", "on-failure") or (text and not name):
        raise ConfigError("--restart", f"invalid restart policy: {text}")
    if not sep:
        return RestartPolicy(name=name)
    if name != "on-failure":
        raise ConfigError("--restart", "maximum retry count cannot be used with restart "
                          f"policy '{name}'")
    try:
        retries = int(count)
    except ValueError:
        raise ConfigError("--restart", f"invalid restart policy: {text}: maximum retry count "
                          "must be an integer") from None
    if retries < 0:
        raise ConfigError("--restart", "maximum retry count cannot be negative")
    return RestartPolicy(name=name, maximum_retry_count=retries)


def _env_line(line: str, where: str, environ: dict[str, str]) -> str | None:
    """One ``KEY=value`` / ``KEY`` (the host's value, dropped when unset)."""
    key, sep, value = line.partition("=")
    if not key:
        raise ConfigError(where, f"no variable name on line '{line}'")
    if any(ch.isspace() for ch in key):
        raise ConfigError(where, f"variable '{key}' contains whitespaces")
    if sep:
        return f"{key}={value}"
    return f"{key}={environ[key]}" if key in environ else None


def parse_env_file(path: str, environ: dict[str, str] | None = None) -> list[str]:
    """Docker's ``--env-file``: ``#`` comments, blank lines skipped, leading space trimmed,
    ``KEY`` alone takes the host's value (dropped if unset), the value is kept verbatim."""
    env = dict(os.environ) if environ is None else environ
    try:
        with open(path, "rb") as f:
            data = f.read(16 * 1024 * 1024 + 1)
    except OSError as e:
        raise ConfigError(f"--env-file {path}", f"open {path}: {e.strerror}") from None
    if len(data) > 16 * 1024 * 1024:
        raise ConfigError(f"--env-file {path}", "file is larger than 16 MiB")
    out: list[str] = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"--env-file {path}:{n}", f"env file {path} contains invalid "
                              f"utf8 bytes at line {n}") from None
        line = text.rstrip("\r").lstrip()
        if not line or line.startswith("#"):
            continue
        item = _env_line(line, f"--env-file {path}:{n}", env)
        if item is not None:
            out.append(item)
    return out


def resolve_env(texts: Iterable[str], environ: dict[str, str] | None = None) -> list[str]:
    """``-e KEY=value`` as given; ``-e KEY`` takes the host's value (dropped when unset)."""
    env = dict(os.environ) if environ is None else environ
    out: list[str] = []
    for text in texts:
        key = text.partition("=")[0]
        if not key:
            raise ConfigError("--env", f"invalid environment variable: {text}")
        item = _env_line(text, "--env", env)
        if item is not None:
            out.append(item)
    return out


def parse_labels(texts: Iterable[str]) -> dict[str, str]:
    """``-l key=value`` / ``-l key`` (empty value)."""
    out: dict[str, str] = {}
    for text in texts:
        key, _, value = text.partition("=")
        if not key.strip():
            raise ConfigError("--label", f"invalid label: {text!r}: empty key")
        out[key] = value
    return out


# --------------------------------------------------------------------------- devices, security

def parse_device(text: str) -> DeviceSpec:
    """``/dev/fuse[:/dev/fuse][:rwm]``."""
    parts = text.split(":")
    perms = "rwm"
    if len(parts) == 3 or (len(parts) == 2 and _valid_mode(parts[1])):
        perms = parts.pop()
    if len(parts) > 2 or not parts[0]:
        raise ConfigError("--device", f"invalid device specification: {text}")
    src = parts[0]
    dst = parts[1] if len(parts) == 2 and parts[1] else src
    if not _valid_mode(perms):
        raise ConfigError("--device", f"invalid device mode: {perms}")
    for p in (src, dst):
        if not p.startswith("/") or "\0" in p:
            raise ConfigError("--device", f"bad format for path: {p}")
    if ".." in dst.split("/"):
        raise ConfigError("--device", f"bad format for path: {dst}")
    return DeviceSpec(host_path=os.path.normpath(src), container_path=os.path.normpath(dst),
                      permissions=perms)


def _valid_mode(mode: str) -> bool:
    return 0 < len(mode) <= 3 and len(set(mode)) == len(mode) and set(mode) <= set("rwm")


_TRUE = ("1", "t", "T", "true", "TRUE", "True")
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


def parse_security_opts(opts: Iterable[str]) -> tuple[str, bool]:
    """``--security-opt`` list -> (seccomp profile: "" | "unconfined" | path, no_new_privileges).

    ``label=…`` (SELinux) and ``apparmor=unconfined`` are accepted and have no effect: the
    host enforces neither. A seccomp profile file is loaded now so a bad one fails early."""
    seccomp, nnp = "", False
    for opt in opts:
        if opt == "no-new-privileges":
            nnp = True
            continue
        if opt == "disable":
            continue
        if "=" in opt:
            key, value = opt.split("=", 1)
        elif ":" in opt:
            key, value = opt.split(":", 1)
        else:
            raise ConfigError("--security-opt", f'invalid --security-opt 1: "{opt}"')
        if key == "label":
            continue
        if key == "apparmor" and value == "unconfined":
            continue
        if key == "seccomp":
            if value in ("unconfined", ""):
                seccomp = "unconfined" if value else ""
            elif value == "builtin":
                seccomp = ""
            else:
                from isobox.engine.seccomp_profile import load_profile

                load_profile(value)
                seccomp = os.path.abspath(value)
            continue
        if key == "no-new-privileges":
            if value in _TRUE:
                nnp = True
            elif value in _FALSE:
                nnp = False
            else:
                raise ConfigError("--security-opt", f'invalid --security-opt 2: "{opt}"')
            continue
        raise ConfigError("--security-opt", f'invalid --security-opt 2: "{opt}"')
    return seccomp, nnp


_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")


def parse_add_host(text: str) -> tuple[str, str]:
    """``--add-host name:1.2.3.4`` (or ``name=ip``; IPv6 may be bracketed) -> (name, ip)."""
    sep = "=" if "=" in text else ":"
    name, found, ip = text.partition(sep)
    if not found or not name or not ip:
        raise ConfigError("--add-host", f'bad format for add-host: "{text}"')
    if not _HOSTNAME.match(name):
        raise ConfigError("--add-host", f'invalid hostname in add-host: "{text}"')
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if ip == "host-gateway":
        raise ConfigError("--add-host", f'host-gateway is not supported: "{text}"')
    import ipaddress

    try:
        return name, str(ipaddress.ip_address(ip))
    except ValueError:
        raise ConfigError("--add-host", f'invalid IP address in add-host: "{ip}"') from None


def parse_dns(text: str) -> str:
    """``--dns 1.1.1.1``: a name server's IP address (IPv4 or IPv6), as Docker validates it."""
    import ipaddress

    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise ConfigError("--dns", f"{text} is not an ip address") from None


# sethostname(2) takes at most 64 bytes; the runtime would refuse a longer one only at start.
HOSTNAME_MAX = 64


def parse_hostname(text: str) -> str:
    """``--hostname``: at most 64 bytes, no NUL, no "/" (it names /etc/hostname's content)."""
    if len(text.encode()) > HOSTNAME_MAX:
        raise ConfigError("--hostname", f"invalid hostname {text[:80]!r}: longer than "
                                        f"{HOSTNAME_MAX} bytes")
    if "\0" in text or "/" in text or "\n" in text:
        raise ConfigError("--hostname", f"invalid hostname {text[:80]!r}")
    return text


# --------------------------------------------------------------------------- durations, signals

_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000,
                   "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?([^\d.]*)")


def parse_duration(text: str, flag: str = "duration") -> int:
    """Go's time.ParseDuration (``1h30m``, ``1.5s``, ``300ms``, ``-2s``, ``0``) -> ns."""
    s = text
    neg = s[:1] == "-"
    if s[:1] in "+-" and s:
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise ConfigError(flag, f'time: invalid duration "{text}"')
    from fractions import Fraction

    total = Fraction(0)
    while s:
        m = _DURATION_PART.match(s)
        assert m is not None
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise ConfigError(flag, f'time: invalid duration "{text}"')
        if not unit:
            raise ConfigError(flag, f'time: missing unit in duration "{text}"')
        if unit not in _DURATION_UNITS:
            # Go stops the unit at the next digit or '.': the regex did the same
            raise ConfigError(flag, f'time: unknown unit "{unit}" in duration "{text}"')
        total += Fraction(f"{whole or '0'}.{frac or '0'}") * _DURATION_UNITS[unit]
        s = s[m.end():]
    ns = int(total)
    if ns > (1 << 63) - 1:
        raise ConfigError(flag, f'time: invalid duration "{text}"')
    return -ns if neg else ns


def parse_healthcheck(cmd: str | None = "", interval: str | None = "",
                      timeout: str | None = "", retries: int | None = 0,
                      start_period: str | None = "", no_healthcheck: bool = False
                      ) -> HealthConfig | None:
    """The ``--health-*`` flags -> HealthConfig; None when none is given (the image's).
    Unset flags may be given as "" / 0 or None (click's defaults)."""
    retries = retries or 0
    given = bool(cmd or interval or timeout or retries or start_period)
    if no_healthcheck:
        if given:
            raise ConfigError("--no-healthcheck", "--no-healthcheck conflicts with --health-* "
                              "options")
        return HealthConfig(test=("NONE",))
    if not given:
        return None
    values: dict[str, int] = {}
    for flag, text in (("--health-interval", interval), ("--health-timeout", timeout),
                       ("--health-start-period", start_period)):
        ns = parse_duration(text, flag) if text else 0
        if ns < 0:
            raise ConfigError(flag, f"{flag} cannot be negative")
        if 0 < ns < 1_000_000:
            raise ConfigError(flag, f"{flag} cannot be less than 1ms")
        values[flag] = ns
    if retries < 0:
        raise ConfigError("--health-retries", "--health-retries cannot be negative")
    return HealthConfig(test=("CMD-SHELL", cmd) if cmd else (),
                        interval_ns=values["--health-interval"],
                        timeout_ns=values["--health-timeout"],
                        start_period_ns=values["--health-start-period"], retries=retries)


_SIGRTMIN, _SIGRTMAX = int(signal.SIGRTMIN), int(signal.SIGRTMAX)


def parse_signal(text: str, flag: str = "--stop-signal") -> int:
    """``SIGTERM`` | ``term`` | ``15`` | ``RTMIN+3`` -> the signal number."""
    raw = text.strip()
    if raw.isdigit():
        n = int(raw)
        if 1 <= n <= _SIGRTMAX:
            return n
        raise ConfigError(flag, f"invalid signal: {text}")
    name = raw.upper()
    name = name[3:] if name.startswith("SIG") else name
    m = re.fullmatch(r"RTM(IN|AX)([+-]\d+)?", name)
    if m:
        base = _SIGRTMIN if m.group(1) == "IN" else _SIGRTMAX
        n = base + int(m.group(2) or 0)
        if _SIGRTMIN <= n <= _SIGRTMAX:
            return n
        raise ConfigError(flag, f"invalid signal: {text}")
    try:
        sig = signal.Signals[f"SIG{name}"]
    except KeyError:
        raise ConfigError(flag, f"invalid signal: {text}") from None
    return int(sig)
