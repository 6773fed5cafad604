"""JSON through CPython's C accelerator without importing :mod:`json`.

``import json`` pulls in :mod:`re` and :mod:`enum` (about 9 ms here), paid on every call of
``isobox-runtime``; start-up time is a benchmark, so the runtime's hot paths use this module.
Output matches ``json.dumps(obj, separators=(",", ":"))``; errors are ``json``'s own
(:class:`json.JSONDecodeError`, a ``ValueError``), produced by re-parsing with :mod:`json`.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WS = " \t\n\r"

_json: Any
try:
    import _json
except ImportError:  # pragma: no cover - non-CPython
    _json = None


class _Context:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict[str, str] = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return float({"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}[name])


_scan = _json.make_scanner(_Context()) if _json is not None else None  # reads its attributes


def _slow_loads(s: str) -> Any:
    import json

    return json.loads(s)


def loads(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        # = decode("utf-8-sig"), without importing that codec's module (0.3 ms a call)
        s = (text[3:] if text.startswith(b"\xef\xbb\xbf") else text).decode()
    else:
        s = text
    if _scan is None:
        return _slow_loads(s)
    start = len(s) - len(s.lstrip(_WS))
    try:
        obj, end = _scan(s, start)
    except (StopIteration, SystemError):
        return _slow_loads(s)  # raises json.JSONDecodeError with line and column
    finally:
        _Context.memo.clear()
    if s[end:].strip(_WS):
        return _slow_loads(s)
    return obj


def _reject(o: object) -> object:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


def dumps(obj: Any) -> str:
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(obj, separators=(",", ":"))
    enc = _json.make_encoder(
        {}, _reject, _json.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    return "".join(enc(obj, 0))
