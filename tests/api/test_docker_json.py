"""Docker's create body → the engine's CreateOptions (pure translation, no containers)."""

from __future__ import annotations

import pytest

from isobox.api.docker_json import create_options, go_file_mode, parse_filters
from isobox.api.errors import ApiError
from isobox.engine.options import MountSpec, PortSpec, RestartPolicy


def test_docker_run_body_translates_field_by_field() -> None:
    body = {
        "Image": "busybox", "Cmd": ["sh", "-c", "true"], "Entrypoint": [""],
        "Env": ["A=1", "ONLY_KEY"], "WorkingDir": "/w", "User": "1:2", "Tty": True,
        "OpenStdin": True, "Labels": {"k": "v"}, "Hostname": "h",
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}}, "StopSignal": "SIGUSR1",
        "StopTimeout": 3,
        "HostConfig": {
            "Binds": ["/srv:/data:ro", "vol:/v"],
            "Mounts": [{"Type": "tmpfs", "Target": "/t", "TmpfsOptions": {"SizeBytes": 1024}}],
            "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
            "PublishAllPorts": True, "NetworkMode": "default", "Memory": 64 << 20,
            "NanoCpus": 500_000_000, "CpuShares": 512, "PidsLimit": 50, "AutoRemove": False,
            "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 2},
            "Privileged": False, "CapAdd": ["NET_ADMIN"], "CapDrop": ["MKNOD"],
            "ReadonlyRootfs": True, "Init": True, "Isolation": "vm",
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m"}},
            "ConsoleSize": [40, 100]},
    }
    o = create_options(body, "n")
    assert (o.image, o.name, o.command, o.entrypoint) == ("busybox", "n", ("sh", "-c", "true"),
                                                          ())
    assert o.env == ("A=1",) and (o.workdir, o.user, o.hostname) == ("/w", "1:2", "h")
    assert o.tty and o.open_stdin and o.labels == {"k": "v"}
    assert MountSpec(type="bind", target="/data", source="/srv", read_only=True) in o.mounts
    assert any(m.type == "volume" and m.source == "vol" for m in o.mounts)
    assert any(m.type == "tmpfs" and m.target == "/t" for m in o.mounts)
    assert PortSpec(80, "tcp", "127.0.0.1", 8080) in o.ports
    assert PortSpec(53, "udp") in o.ports  # -P: exposed, host port picked at start
    assert o.network == "bridge" and o.publish_all
    r = o.resources
    assert (r.memory, r.nano_cpus, r.cpu_shares, r.pids_limit) == (64 << 20, 500_000_000, 512,
                                                                   50)
    assert o.restart == RestartPolicy("on-failure", 2)
    assert o.cap_add == ("NET_ADMIN",) and o.cap_drop == ("MKNOD",)
    assert o.read_only and o.init and o.isolation == "vm"
    assert o.log_opts == {"max-size": "1m"}
    assert (o.stop_signal, o.stop_timeout) == ("SIGUSR1", 3)


def test_unset_fields_mean_the_image_defaults() -> None:
    o = create_options({"Image": "busybox", "Cmd": None, "Entrypoint": None,
                        "HostConfig": {"Isolation": "default", "Init": None}}, "")
    assert o.command is None and o.entrypoint is None
    assert o.isolation == "container" and not o.init


@pytest.mark.parametrize(("body", "text"), [
    ([], "expected a JSON object"),
    ({}, "Image: no image given"),
    ({"Image": "b", "Env": "A=1=2", "Cmd": 5}, "Cmd: expected a list of strings"),
    ({"Image": "b", "HostConfig": {"NanoCpus": 10**15}}, "HostConfig.NanoCpus: range"),
    ({"Image": "b", "HostConfig": {"Memory": 1024}}, "Minimum memory limit"),
    ({"Image": "b", "HostConfig": {"NetworkMode": "container:x"}}, "HostConfig.NetworkMode"),
    ({"Image": "b", "HostConfig": {"Mounts": [{"Type": "bind", "Target": "/x",
                                               "Source": "rel"}]}}, "HostConfig.Mounts[0]"),
    ({"Image": "b", "HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 2, "Hard": 1}]}},
     "HostConfig.Ulimits[0]"),
    ({"Image": "b", "Healthcheck": {"Test": ["SHELL", "x"]}}, "Healthcheck.Test"),
    ({"Image": "b", "HostConfig": {"Dns": ["8.8.8.8", "resolver"]}},
     "HostConfig.Dns: resolver is not an ip address"),
    ({"Image": "b", "Hostname": "h" * 65}, "Hostname: invalid hostname"),
])
def test_bad_values_name_their_field(body: object, text: str) -> None:
    with pytest.raises(ApiError) as e:
        create_options(body, "")
    assert e.value.status == 400 and text in e.value.message


def test_filters_both_shapes() -> None:
    assert parse_filters('{"name":{"a":true,"b":false},"label":["x=y"]}') == {
        "name": ["a"], "label": ["x=y"]}
    with pytest.raises(ApiError):
        parse_filters('["name"]')


def test_go_file_mode() -> None:
    assert go_file_mode(0o40755) == (1 << 31) | 0o755
    assert go_file_mode(0o120777) == (1 << 27) | 0o777
    assert go_file_mode(0o100644) == 0o644
