"""Docker's ``--filter`` semantics shared by the object lists and prunes (networks, volumes,
containers): ``key=value`` texts grouped by key, label and name matching, ``until``."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Iterable, Mapping

from isobox.errors import ConfigError

Filters = dict[str, list[str]]


def group(texts: Iterable[str], allowed: Iterable[str], where: str = "--filter") -> Filters:
    """``["label=a", "name=x"]`` (the CLI's ``--filter``) → {"label": ["a"], "name": ["x"]}."""
    out: Filters = {}
    for text in texts:
        key, sep, value = text.partition("=")
        if not sep:
            raise ConfigError(where, f"bad format of filter (expected name=value): {text}")
        out.setdefault(key, []).append(value)
    check_keys(out, allowed, where)
    return out


def check_keys(filters: Mapping[str, object], allowed: Iterable[str],
               where: str = "filters") -> None:
    unknown = sorted(set(filters) - set(allowed))
    if unknown:
        raise ConfigError(where, f"invalid filter '{unknown[0]}'")


def label_matches(labels: Mapping[str, str], text: str) -> bool:
    """``key`` (present) or ``key=value`` (present with that value)."""
    key, sep, value = text.partition("=")
    return key in labels and (not sep or labels[key] == value)


def labels_match(labels: Mapping[str, str], wanted: Iterable[str]) -> bool:
    """Every ``label`` filter must match (Docker's MatchKVList)."""
    return all(label_matches(labels, w) for w in wanted)


def text_matches(pattern: str, value: str) -> bool:
    """Docker's ``Match`` for names and ids: equal, or the filter as a regular expression
    found in the value (a plain name is then a substring match)."""
    if pattern == value:
        return True
    try:
        return re.search(pattern, value) is not None
    except re.error:
        return pattern in value


def parse_bool(key: str, text: str) -> bool:
    low = text.lower()
    if low in ("1", "true"):
        return True
    if low in ("0", "false"):
        return False
    raise ConfigError("filters", f"invalid filter '{key}={text}'")


def until_time(values: list[str]) -> float | None:
    """The ``until`` filter (unix seconds, RFC 3339 or a duration ago such as ``10m``)."""
    from isobox.engine.events import parse_time

    if not values:
        return None
    if len(values) > 1:
        raise ConfigError("filters", "more than one until filter specified")
    try:
        return parse_time(values[0], time.time())
    except ConfigError:
        raise ConfigError("filters", f"invalid until filter {values[0]!r}: expected a "
                          "timestamp, an RFC 3339 date or a duration") from None


def rfc3339_time(text: str) -> float | None:
    """Unix seconds of an RFC 3339 time (UTC when it names no zone); None if unparsable."""
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()
