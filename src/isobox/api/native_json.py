"""The native API's JSON (``/isobox/v1``): request bodies checked field by field (a wrong type
is a 400 naming the field) and the engine's VM and snapshot records in the shape the OpenAPI
document (:mod:`isobox.api.openapi`) describes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from isobox.api.errors import ApiError

if TYPE_CHECKING:
    from isobox.engine.instance_snapshots import InstanceSnapshot


class Body:
    """A JSON object from a request; each getter checks the type of one field."""

    def __init__(self, data: Any) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ApiError(400, "request body: expected a JSON object")
        self.data: dict[str, Any] = data

    def _get(self, key: str, kinds: type | tuple[type, ...], what: str, default: Any) -> Any:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, kinds) or (isinstance(value, bool) and kinds is int):
            raise ApiError(400, f"{key}: expected {what}")
        return value

    def text(self, key: str, default: str = "") -> str:
        return str(self._get(key, str, "a string", default))

    def count(self, key: str, default: int = 0) -> int:
        value = int(self._get(key, int, "an integer", default))
        if value < 0:
            raise ApiError(400, f"{key}: must not be negative")
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        return bool(self._get(key, bool, "a boolean", default))

    def strs(self, key: str) -> list[str]:
        value = self._get(key, list, "an array of strings", [])
        if not all(isinstance(v, str) for v in value):
            raise ApiError(400, f"{key}: expected an array of strings")
        return list(value)


def snapshot_json(snap: InstanceSnapshot) -> dict[str, Any]:
    return {"Name": snap.name, "Created": snap.created, "Kind": snap.kind,
            "Memory": snap.memory, "Size": snap.size}
