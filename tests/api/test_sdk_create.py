"""The SDK's create body (client_create.create_body) is the exact inverse of the server's
parser (docker_json.create_options): what `isobox --host … run` parsed is what the remote
engine gets."""

from __future__ import annotations

import pytest

from isobox.api.client_create import create_body
from isobox.api.docker_json import create_options
from isobox.engine.mountspec import parse_tmpfs
from isobox.engine.options import (
    CreateOptions,
    DeviceSpec,
    HealthConfig,
    MountSpec,
    PortSpec,
    Resources,
    RestartPolicy,
    Ulimit,
)
from isobox.errors import ConfigError

CASES = [
    CreateOptions(image="busybox"),
    CreateOptions(image="busybox", command=("sh", "-c", "echo hi"), entrypoint=(),
                  name="web", hostname="h1", user="1000:1000", workdir="/srv",
                  env=("A=1", "B=two words"), labels={"x": "y"}, tty=True, open_stdin=True),
    CreateOptions(
        image="busybox", entrypoint=("/bin/sh",),
        mounts=(MountSpec("bind", "/data", "/tmp", read_only=True),
                MountSpec("volume", "/v", "named"), MountSpec("volume", "/anon"),
                MountSpec("volume", "/nc", "vol2", volume_nocopy=True),
                parse_tmpfs("/run:size=1m")),
        ports=(PortSpec(80, "tcp", "127.0.0.1", 8080), PortSpec(53, "udp"),
               PortSpec(443, "tcp", "", 8443)),
        network="mynet", network_aliases=("db", "db2"),
        add_hosts=(("other", "10.1.2.3"),), dns=("1.1.1.1",), dns_search=("example.org",),
        dns_options=("ndots:2",)),
    CreateOptions(
        image="busybox",
        resources=Resources(memory=64 << 20, memory_swap=128 << 20, nano_cpus=500_000_000,
                            cpu_shares=512, cpuset_cpus="0", pids_limit=50,
                            ulimits=(Ulimit("nofile", 100, 200),)),
        read_only=True, cap_add=("NET_ADMIN",), cap_drop=("MKNOD",),
        seccomp_profile="unconfined", no_new_privileges=True, privileged=False,
        devices=(DeviceSpec("/dev/null", "/dev/n2", "r"),), init=True,
        restart=RestartPolicy("on-failure", 3), stop_signal="SIGUSR1", stop_timeout=7,
        healthcheck=HealthConfig(("CMD-SHELL", "true"), 2_000_000_000, 1_000_000_000, 0, 3),
        auto_remove=True, log_opts={"max-size": "1m", "max-file": "2"}, isolation="vm"),
    CreateOptions(image="busybox", publish_all=True, network="none"),
]


@pytest.mark.parametrize("opts", CASES, ids=range(len(CASES)))
def test_round_trip(opts: CreateOptions) -> None:
    assert create_options(create_body(opts), opts.name) == opts


def test_own_kernel_is_refused() -> None:
    with pytest.raises(ConfigError, match="--kernel"):
        create_body(CreateOptions(image="busybox", isolation="vm", vm_kernel="/boot/k"))
