"""isobox.oci.ids: container IDs are checked before any use as a path (catalogue case 14)."""

from __future__ import annotations

import pytest

from isobox.errors import ConfigError
from isobox.oci.config import validate_container_id as from_config
from isobox.oci.ids import MAX_ID_LENGTH, validate_container_id


@pytest.mark.parametrize(
    ("cid", "message"),
    [
        ("this/is/invalid", 'invalid character "/" in container ID "this/is/invalid"'),
        ("../../var/tmp/canary", 'invalid character "/" in container ID "../../var/tmp/canary"'),
        ("foo bar", 'invalid character " " in container ID "foo bar"'),
        (".", 'invalid container ID "."'),
        ("..", 'invalid container ID ".."'),
        (".foo", 'container ID ".foo" must not start with "."'),
        ("", "container ID must not be empty"),
        ("a,b", 'invalid character "," in container ID "a,b"'),
        ("a\x00b", 'invalid character "\\x00" in container ID "a\\x00b"'),
        ("a\nb", 'invalid character "\\n" in container ID "a\\nb"'),
        ("caf\u00e9", 'invalid character "\u00e9" in container ID "caf\u00e9"'),
        ("a:b", 'invalid character ":" in container ID "a:b"'),
        ("a" * (MAX_ID_LENGTH + 1), "container ID is 1025 characters long, more than 1024"),
    ],
)
def test_invalid_ids(cid: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_container_id(cid)
    assert info.value.where == "container id"
    assert info.value.message == message
    assert str(info.value) == f"container id: {message}"


def test_non_string_id() -> None:
    with pytest.raises(ConfigError, match="must be a string, got number 5"):
        validate_container_id(5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "cid",
    ["abc-1_2.x+y", "a", "0", "A" * MAX_ID_LENGTH, "abc..def", "x.", "x-", "_x", "+x", "-x",
     "4f797c539e6c745de61a93ca3ff892358ecbcaccd8414d5db545c38428142970"],
)
def test_valid_ids(cid: str) -> None:
    validate_container_id(cid)
    from_config(cid)
