"""Container IDs: checked before an ID is ever used as a path component (catalogue case 14).

Runs on every ``isobox-runtime`` call, so it uses ``str``/``frozenset`` methods, not :mod:`re`.

The rule is runc's ``^[\\w+-.]+$`` read as intended (ASCII letters, digits, ``_ + . -``; runc's
character class also lets ``,`` through by accident of its ``+-.`` range, isobox does not), plus:
not empty, at most 1024 characters, and no leading ``.``. runc refuses ``.`` and ``..`` but
accepts ``.foo``; isobox refuses every leading dot so that no ID can name a hidden entry of the
state directory (where the runtime may keep lock or temporary files) and ``.``/``..`` need no
special case. Docker names and containerd IDs cannot start with a dot either.
"""

from __future__ import annotations

from isobox.errors import ConfigError

MAX_ID_LENGTH = 1024

_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+.-")


def validate_container_id(cid: str) -> None:
    """Raise :class:`ConfigError` ``("container id", …)`` unless ``cid`` is a safe container ID."""
    if (
        type(cid) is str
        and 0 < len(cid) <= MAX_ID_LENGTH
        and cid[0] != "."
        and _ID_CHARS.issuperset(cid)
    ):
        return
    raise ConfigError("container id", _id_problem(cid))


def _id_problem(cid: object) -> str:
    from isobox.oci._check import describe, quote

    if not isinstance(cid, str):
        return f"container ID must be a string, got {describe(cid)}"
    if not cid:
        return "container ID must not be empty"
    if len(cid) > MAX_ID_LENGTH:
        return f"container ID is {len(cid)} characters long, more than {MAX_ID_LENGTH}"
    for ch in cid:
        if ch not in _ID_CHARS:
            return f"invalid character {quote(ch)} in container ID {quote(cid)}"
    if cid in (".", ".."):
        return f"invalid container ID {quote(cid)}"
    return f'container ID {quote(cid)} must not start with "."'
