"""Docker's value parsers: every accepted form and every error message."""

from __future__ import annotations

import os
import resource
import signal

import pytest

from isobox.engine import parse
from isobox.engine.options import DeviceSpec, HealthConfig, PortSpec, RestartPolicy, Ulimit
from isobox.errors import ConfigError


def err(fn, *args, **kw) -> ConfigError:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        fn(*args, **kw)
    return info.value


@pytest.mark.parametrize(("text", "value"), [
    ("512m", 512 << 20), ("512M", 512 << 20), ("1.5g", 3 << 29), ("1024", 1024),
    ("10b", 10), ("4k", 4096), ("2GiB", 2 << 30), ("1t", 1 << 40), ("64MB", 64 << 20),
    ("1 g", 1 << 30),
])
def test_parse_bytes(text: str, value: int) -> None:
    assert parse.parse_bytes(text) == value


@pytest.mark.parametrize("text", ["x", "", "-1m", "12q", "1.2.3m", "m"])
def test_parse_bytes_errors(text: str) -> None:
    e = err(parse.parse_bytes, text, "--memory")
    assert e.where == "--memory" and e.message == f"invalid size: '{text}'"


def test_memory_swap() -> None:
    assert parse.parse_memory_swap("-1") == -1
    assert parse.parse_memory_swap("") == 0
    assert parse.parse_memory_swap("1g") == 1 << 30
    assert err(parse.parse_memory_swap, "zz").message == "invalid size: 'zz'"


def test_parse_cpus() -> None:
    assert parse.parse_cpus("0.5", host_cpus=2) == 500_000_000
    assert parse.parse_cpus("2", host_cpus=2) == 2_000_000_000
    assert parse.parse_cpus("0.01", host_cpus=2) == 10_000_000
    assert err(parse.parse_cpus, "x").message.startswith('invalid argument "x" for "--cpus"')
    assert err(parse.parse_cpus, "3", host_cpus=2).message == (
        "range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available")
    assert "too precise" in err(parse.parse_cpus, "0.0000000001").message
    ncpu = os.cpu_count() or 1
    assert f"only {ncpu} CPUs" in err(parse.parse_cpus, str(ncpu + 1)).message


@pytest.mark.parametrize(("spec", "ports"), [
    ("8080:80", (PortSpec(80, "tcp", "", 8080),)),
    ("127.0.0.1:8080:80", (PortSpec(80, "tcp", "127.0.0.1", 8080),)),
    ("127.0.0.1::80", (PortSpec(80, "tcp", "127.0.0.1", 0),)),
    ("80", (PortSpec(80),)),
    ("80/udp", (PortSpec(80, "udp"),)),
    ("53:53/UDP", (PortSpec(53, "udp", "", 53),)),
    ("[::1]:8080:80", (PortSpec(80, "tcp", "::1", 8080),)),
    ("8000-8001:80-81", (PortSpec(80, "tcp", "", 8000), PortSpec(81, "tcp", "", 8001))),
    ("80-81", (PortSpec(80), PortSpec(81))),
])
def test_parse_ports(spec: str, ports: tuple[PortSpec, ...]) -> None:
    assert parse.parse_ports([spec]) == ports


@pytest.mark.parametrize(("spec", "message"), [
    ("x", "invalid containerPort: x"),
    ("8080:x", "invalid containerPort: x"),
    ("0", "invalid containerPort: 0"),
    ("70000", "invalid containerPort: 70000"),
    ("y:80", "invalid hostPort: y"),
    ("80/icmp", "invalid proto: icmp"),
    ("1.2.3.4.5:80:80", "invalid ip address: 1.2.3.4.5"),
    ("a:b:c:d", "invalid port format: a:b:c:d"),
    ("", "invalid port format: "),
    ("8000-8002:80-81", "invalid ranges specified for container and host ports: "
                        "8000-8002:80-81"),
])
def test_parse_ports_errors(spec: str, message: str) -> None:
    e = err(parse.parse_ports, [spec])
    assert e.where == "--publish" and e.message == message


def test_parse_ports_duplicate_host_port() -> None:
    assert "published twice" in err(parse.parse_ports, ["8080:80", "8080:81"]).message


def test_parse_ulimit() -> None:
    assert parse.parse_ulimit("nofile=1024:2048") == Ulimit("nofile", 1024, 2048)
    assert parse.parse_ulimit("nproc=100") == Ulimit("nproc", 100, 100)
    assert parse.parse_ulimit("core=-1") == Ulimit("core", -1, -1)
    for name in ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                 "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack"):
        assert parse.parse_ulimit(f"{name}=1").name == name
    assert parse.rlimit_entry(Ulimit("nofile", 1, 2)) == {
        "type": "RLIMIT_NOFILE", "soft": 1, "hard": 2}
    assert parse.rlimit_entry(Ulimit("core", -1, -1))["hard"] == (1 << 64) - 1


@pytest.mark.parametrize(("spec", "message"), [
    ("bogus=1", "invalid ulimit type: bogus"),
    ("nofile", "invalid ulimit argument: nofile"),
    ("nofile=2048:1024", "ulimit soft limit must be less than or equal to hard limit: "
                         "2048 > 1024"),
    ("nofile=1:2:3", "too many limit value arguments - 1:2:3, can only have up to two, "
                     "`soft[:hard]`"),
    ("nofile=x", 'invalid ulimit argument: nofile=x: "x" is not an integer'),
])
def test_parse_ulimit_errors(spec: str, message: str) -> None:
    e = err(parse.parse_ulimit, spec)
    assert e.where == "--ulimit" and e.message == message


def test_check_ulimits_against_host_hard_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    parse.check_ulimits([Ulimit("nofile", 100, 200)])
    if hard == resource.RLIM_INFINITY:
        pytest.skip("the host's nofile hard limit is unlimited")
    e = err(parse.check_ulimits, [Ulimit("nofile", 1024, hard + 10000)])
    assert e.message == (f"ulimit nofile: hard limit {hard + 10000} is above the host's "
                         f"hard limit {hard}")
    e = err(parse.check_ulimits, [Ulimit("nofile", -1, -1)])
    assert "hard limit unlimited is above" in e.message


def test_parse_restart() -> None:
    assert parse.parse_restart("no") == RestartPolicy("no")
    assert parse.parse_restart("always") == RestartPolicy("always")
    assert parse.parse_restart("unless-stopped") == RestartPolicy("unless-stopped")
    assert parse.parse_restart("on-failure") == RestartPolicy("on-failure")
    assert parse.parse_restart("on-failure:3") == RestartPolicy("on-failure", 3)
    assert err(parse.parse_restart, "sometimes").message == "invalid restart policy: sometimes"
    assert err(parse.parse_restart, "always:3").message == (
        "maximum retry count cannot be used with restart policy 'always'")
    assert "must be an integer" in err(parse.parse_restart, "on-failure:x").message
    assert "cannot be negative" in err(parse.parse_restart, "on-failure:-1").message


def test_parse_env_file(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "env")
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf# comment\n\nA=1\n  B=spaced value \nEMPTY=\nFROMHOST\nUNSET\n"
                b"Q=\"quoted\" # not a comment\r\n")
    got = parse.parse_env_file(path, {"FROMHOST": "h"})
    assert got == ["A=1", "B=spaced value ", "EMPTY=", "FROMHOST=h", 'Q="quoted" # not a comment']


@pytest.mark.parametrize(("content", "line", "message"), [
    (b"A=1\nBAD KEY=2\n", 2, "variable 'BAD KEY' contains whitespaces"),
    (b"=x\n", 1, "no variable name on line '=x'"),
    (b"A=1\nB=\xff\n", 2, "contains invalid utf8 bytes at line 2"),
])
def test_parse_env_file_errors(tmp_path: os.PathLike[str], content: bytes, line: int,
                               message: str) -> None:
    path = os.path.join(tmp_path, "env")
    with open(path, "wb") as f:
        f.write(content)
    e = err(parse.parse_env_file, path, {})
    assert e.where == f"--env-file {path}:{line}" and message in e.message


def test_parse_env_file_missing(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "nope")
    e = err(parse.parse_env_file, path)
    assert path in str(e) and "No such file" in e.message


def test_resolve_env() -> None:
    assert parse.resolve_env(["A=1", "B", "C", "D="], {"B": "host"}) == ["A=1", "B=host", "D="]
    assert err(parse.resolve_env, ["=x"]).message == "invalid environment variable: =x"


def test_parse_labels() -> None:
    assert parse.parse_labels(["a=1", "b", "c=x=y"]) == {"a": "1", "b": "", "c": "x=y"}
    assert "empty key" in err(parse.parse_labels, ["=v"]).message


def test_parse_device() -> None:
    assert parse.parse_device("/dev/fuse") == DeviceSpec("/dev/fuse", "/dev/fuse", "rwm")
    assert parse.parse_device("/dev/fuse:/dev/f2") == DeviceSpec("/dev/fuse", "/dev/f2", "rwm")
    assert parse.parse_device("/dev/fuse:r") == DeviceSpec("/dev/fuse", "/dev/fuse", "r")
    assert parse.parse_device("/dev/fuse:/dev/x:rw") == DeviceSpec("/dev/fuse", "/dev/x", "rw")
    assert err(parse.parse_device, "/dev/a:/dev/b:rwx").message == "invalid device mode: rwx"
    assert err(parse.parse_device, "fuse").message == "bad format for path: fuse"
    assert err(parse.parse_device, "/a:/b:r:w").message == (
        "invalid device specification: /a:/b:r:w")
    assert err(parse.parse_device, "/dev/a:/../b").message == "bad format for path: /../b"


def test_parse_security_opts(tmp_path: os.PathLike[str]) -> None:
    assert parse.parse_security_opts([]) == ("", False)
    assert parse.parse_security_opts(["seccomp=unconfined"]) == ("unconfined", False)
    assert parse.parse_security_opts(["no-new-privileges"]) == ("", True)
    assert parse.parse_security_opts(["no-new-privileges:true"]) == ("", True)
    assert parse.parse_security_opts(["no-new-privileges=true",
                                      "no-new-privileges=false"]) == ("", False)
    assert parse.parse_security_opts(["label=disable", "apparmor=unconfined"]) == ("", False)
    path = os.path.join(tmp_path, "p.json")
    with open(path, "w") as f:
        f.write('{"defaultAction": "SCMP_ACT_ALLOW"}')
    assert parse.parse_security_opts([f"seccomp={path}"]) == (path, False)
    assert err(parse.parse_security_opts, ["x"]).message == 'invalid --security-opt 1: "x"'
    assert err(parse.parse_security_opts, ["foo=bar"]).message == (
        'invalid --security-opt 2: "foo=bar"')
    assert err(parse.parse_security_opts, ["no-new-privileges=maybe"]).message == (
        'invalid --security-opt 2: "no-new-privileges=maybe"')
    assert err(parse.parse_security_opts, ["apparmor=myprofile"]).message == (
        'invalid --security-opt 2: "apparmor=myprofile"')
    e = err(parse.parse_security_opts, [f"seccomp={tmp_path}/missing.json"])
    assert f"{tmp_path}/missing.json" in str(e)


def test_parse_add_host() -> None:
    assert parse.parse_add_host("name:1.2.3.4") == ("name", "1.2.3.4")
    assert parse.parse_add_host("name=1.2.3.4") == ("name", "1.2.3.4")
    assert parse.parse_add_host("v6:::1") == ("v6", "::1")
    assert parse.parse_add_host("v6=[::1]") == ("v6", "::1")
    assert err(parse.parse_add_host, "name").message == 'bad format for add-host: "name"'
    assert err(parse.parse_add_host, "name:1.2.3").message == (
        'invalid IP address in add-host: "1.2.3"')
    assert "host-gateway" in err(parse.parse_add_host, "h:host-gateway").message


@pytest.mark.parametrize(("text", "ns"), [
    ("30s", 30_000_000_000), ("1h30m", 5_400_000_000_000), ("1.5s", 1_500_000_000),
    ("300ms", 300_000_000), ("10us", 10_000), ("10µs", 10_000), ("5ns", 5), ("0", 0),
    ("-2s", -2_000_000_000), ("+1m", 60_000_000_000), (".5s", 500_000_000),
])
def test_parse_duration(text: str, ns: int) -> None:
    assert parse.parse_duration(text) == ns


@pytest.mark.parametrize(("text", "message"), [
    ("", 'time: invalid duration ""'),
    ("x", 'time: invalid duration "x"'),
    ("1", 'time: missing unit in duration "1"'),
    ("1x", 'time: unknown unit "x" in duration "1x"'),
    ("1s2", 'time: missing unit in duration "1s2"'),
    ("-", 'time: invalid duration "-"'),
])
def test_parse_duration_errors(text: str, message: str) -> None:
    assert err(parse.parse_duration, text, "--health-interval").message == message


def test_parse_healthcheck() -> None:
    assert parse.parse_healthcheck() is None
    assert parse.parse_healthcheck(None, None, None, None, None, False) is None
    assert parse.parse_healthcheck(no_healthcheck=True) == HealthConfig(("NONE",))
    hc = parse.parse_healthcheck("curl -f localhost", "30s", "5s", 3, "1m")
    assert hc == HealthConfig(("CMD-SHELL", "curl -f localhost"), 30_000_000_000,
                              5_000_000_000, 60_000_000_000, 3)
    assert err(parse.parse_healthcheck, "x", no_healthcheck=True).message == (
        "--no-healthcheck conflicts with --health-* options")
    assert err(parse.parse_healthcheck, "x", "-1s").message == (
        "--health-interval cannot be negative")
    assert err(parse.parse_healthcheck, "x", retries=-1).message == (
        "--health-retries cannot be negative")
    assert "less than 1ms" in err(parse.parse_healthcheck, "x", timeout="10us").message


@pytest.mark.parametrize(("text", "num"), [
    ("SIGTERM", 15), ("TERM", 15), ("term", 15), ("15", 15), ("SIGKILL", 9), ("HUP", 1),
    ("SIGUSR1", int(signal.SIGUSR1)), ("RTMIN+3", int(signal.SIGRTMIN) + 3),
])
def test_parse_signal(text: str, num: int) -> None:
    assert parse.parse_signal(text) == num


@pytest.mark.parametrize("text", ["SIGFOO", "0", "99", "", "RTMIN+99"])
def test_parse_signal_errors(text: str) -> None:
    assert err(parse.parse_signal, text).message == f"invalid signal: {text}"
