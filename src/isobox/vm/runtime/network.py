"""The guest's network: a tap device in the container's network namespace, joined to the
namespace's ``eth0`` (the veth the engine plugged into a bridge) by two tc ``mirred``
redirects, as Kata Containers does. The guest NIC takes eth0's MAC and address, so the
bridge, IPAM, DNS-by-name and published ports work for a VM exactly as for a container."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

from isobox.errors import SystemSetupError

TAP = "tap0"
VETH = "eth0"


@dataclass
class GuestNet:
    mac: str
    address: str      # "10.88.0.5/16"
    gateway: str      # "" when the namespace has no default route
    mtu: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _in_netns(netns: str, argv: list[str]) -> str:
    from isobox.linux.syscalls import CLONE_NEWNET, setns

    def enter() -> None:  # pragma: no cover - runs in the child
        import os

        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        setns(fd, CLONE_NEWNET)
        os.close(fd)

    try:
        proc = subprocess.run(argv, capture_output=True, text=True, preexec_fn=enter,
                              check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SystemSetupError(f"cannot run {argv[0]} in {netns}: {e}") from None
    if proc.returncode != 0:
        raise SystemSetupError(f"{' '.join(argv)} in {netns}: {proc.stderr.strip()}")
    return proc.stdout


def wire(netns: str) -> GuestNet | None:
    """Make tap0 and the redirects; None when the namespace has no eth0 (``--network none``)."""
    links = json.loads(_in_netns(netns, ["ip", "-j", "addr", "show"]) or "[]")
    eth = next((link for link in links if link.get("ifname") == VETH), None)
    if eth is None:
        return None
    addr = next((a for a in eth.get("addr_info") or [] if a.get("family") == "inet"), None)
    if addr is None:
        raise SystemSetupError(f"{VETH} in {netns} has no IPv4 address for the guest")
    routes = json.loads(_in_netns(netns, ["ip", "-j", "route", "show", "default"]) or "[]")
    gateway = str(routes[0].get("gateway", "")) if routes else ""
    redirect = "protocol all u32 match u32 0 0 action mirred egress redirect dev"
    script = (f"ip link del {TAP} 2>/dev/null; tc qdisc del dev {VETH} ingress 2>/dev/null; "
              f"ip tuntap add dev {TAP} mode tap && "
              f"ip link set {TAP} mtu {eth.get('mtu', 1500)} up && "
              f"tc qdisc add dev {VETH} ingress && "
              f"tc filter add dev {VETH} parent ffff: {redirect} {TAP} && "
              f"tc qdisc add dev {TAP} ingress && "
              f"tc filter add dev {TAP} parent ffff: {redirect} {VETH}")
    _in_netns(netns, ["/bin/sh", "-c", script])
    return GuestNet(mac=str(eth["address"]), address=f"{addr['local']}/{addr['prefixlen']}",
                    gateway=gateway, mtu=int(eth.get("mtu", 1500)))


def qemu_args(net: GuestNet) -> list[str]:
    return ["-netdev", f"tap,id=net0,ifname={TAP},script=no,downscript=no",
            "-device", f"virtio-net-device,netdev=net0,mac={net.mac}"]
