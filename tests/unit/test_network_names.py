"""The bridge and nft-table names belong to the root (engine.network_settings): recorded on
first use from ISOBOX_NET_PREFIX, read back by processes started without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from isobox.engine.engine import network_settings
from isobox.errors import ConfigError


def test_prefix_is_recorded_and_read_back(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    state = str(tmp_path / "network")
    monkeypatch.setenv("ISOBOX_NET_PREFIX", "ibq1")
    named = {"bridge_prefix": "ibq1", "nft_table": "ibq1", "default_bridge": "ibq10"}
    assert network_settings(state) == named
    monkeypatch.delenv("ISOBOX_NET_PREFIX")  # an exit hook, `system boot` under systemd
    assert network_settings(state) == named
    monkeypatch.setenv("ISOBOX_NET_PREFIX", "other")
    with pytest.raises(ConfigError, match=r"ISOBOX_NET_PREFIX.*'other'.*'ibq1'"):
        network_settings(state)


def test_default_names_stay_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "network"
    monkeypatch.delenv("ISOBOX_NET_PREFIX", raising=False)
    assert network_settings(str(state)) == {}
    assert not state.exists()  # nothing recorded for the default
    state.mkdir()
    (state / "networks.json").write_text("{}")  # networks made with the default names
    monkeypatch.setenv("ISOBOX_NET_PREFIX", "late")
    with pytest.raises(ConfigError, match="the default names"):
        network_settings(str(state))
