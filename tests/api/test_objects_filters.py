"""Docker's filter rules as the engine applies them to object lists, prunes and events (pure
logic: no engine, no server)."""

from __future__ import annotations

import time

import pytest

from isobox.engine import filters as flt
from isobox.engine.events import matches
from isobox.engine.prune import (
    CONTAINER_PRUNE_FILTERS,
    VOLUME_PRUNE_FILTERS,
    PruneFilters,
    prune_filters,
)
from isobox.engine.state import Event
from isobox.errors import ConfigError


def test_names_ids_and_labels() -> None:
    assert flt.text_matches("web", "my-web-1") and flt.text_matches("^my", "my-web-1")
    assert not flt.text_matches("^web", "my-web-1")
    assert flt.text_matches("a[", "xa[y")  # not a regex: a substring
    labels = {"tier": "db", "team": ""}
    assert flt.labels_match(labels, ["tier", "tier=db", "team"])
    assert not flt.labels_match(labels, ["tier=db", "tier=web"])  # every one must match
    assert flt.group(["label=a=b", "label!=c", "name=x"], ("label", "label!", "name")) == \
        {"label": ["a=b"], "label!": ["c"], "name": ["x"]}
    with pytest.raises(ConfigError, match="invalid filter 'colour'"):
        flt.group(["colour=red"], ("name",))
    with pytest.raises(ConfigError, match="expected name=value"):
        flt.group(["dangling"], ("dangling",))


def test_prune_filters() -> None:
    f = prune_filters({"until": ["1h"], "label": ["keep=no"]}, CONTAINER_PRUNE_FILTERS)
    now = time.time()
    assert f.until is not None and abs(f.until - (now - 3600)) < 5
    assert f.allows(now - 7200, {"keep": "no"})
    assert not f.allows(now - 60, {"keep": "no"})             # too new
    assert not f.allows(now - 7200, {"keep": "yes"})          # label differs
    assert prune_filters({"until": ["2024-01-02T00:00:00Z"]}, CONTAINER_PRUNE_FILTERS
                         ).until == 1704153600.0
    no = PruneFilters(not_labels=("keep",))
    assert no.allows(None, {}) and not no.allows(None, {"keep": "1"})
    assert prune_filters({"all": ["true"]}, VOLUME_PRUNE_FILTERS).all_volumes
    assert not prune_filters({"all": ["0"]}, VOLUME_PRUNE_FILTERS).all_volumes
    for bad, allowed, text in [({"until": ["soon"]}, CONTAINER_PRUNE_FILTERS, "until"),
                               ({"until": ["1h", "2h"]}, CONTAINER_PRUNE_FILTERS, "more than"),
                               ({"all": ["maybe"]}, VOLUME_PRUNE_FILTERS, "all=maybe"),
                               ({"until": ["1h"]}, VOLUME_PRUNE_FILTERS, "invalid filter")]:
        with pytest.raises(ConfigError, match=text):
            prune_filters(bad, allowed)


def test_event_filters_for_networks_volumes_and_images() -> None:
    net = Event(1, 0.0, "network", "create", "f" * 64, {"name": "appnet", "type": "bridge"})
    vol = Event(2, 0.0, "volume", "destroy", "data", {"driver": "local"})
    ctr = Event(3, 0.0, "container", "start", "c" * 64, {"name": "web", "image": "busybox"})
    img = Event(4, 0.0, "image", "tag", "sha256:" + "a" * 64, {"name": "reg:5000/bb:v1"})
    assert matches(net, {"network": ["appnet"]}) and matches(net, {"network": ["f" * 64]})
    assert not matches(ctr, {"network": ["appnet"]})
    assert matches(vol, {"volume": ["data"]}) and not matches(net, {"volume": ["data"]})
    assert matches(ctr, {"image": ["busybox"]})
    assert not matches(ctr, {"image": ["busybox:latest"]})    # dockerd: the filter is exact
    assert matches(img, {"image": ["reg:5000/bb"]}) and matches(img, {"image": ["reg:5000/bb:v1"]})
    assert not matches(img, {"image": ["reg"]})
