"""Helpers shared by the network tests (a module of its own: ``conftest`` is ambiguous
on sys.path when several test packages have one)."""

from __future__ import annotations

import socket

from harness import RUN_PREFIX
from isobox.network import NetworkManager

NETP = f"{RUN_PREFIX}n"       # bridges NETP0, NETP1…; nft table NETP


def our_links(nm: NetworkManager) -> list[str]:
    return [n for _, n in socket.if_nameindex()
            if n.startswith(NETP) or n.startswith(nm.veth_tag)]


def make_manager(state_dir: str) -> NetworkManager:
    return NetworkManager(state_dir, bridge_prefix=NETP, nft_table=NETP,
                          default_bridge=f"{NETP}0")
