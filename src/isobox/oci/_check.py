"""Checker combinators for validating parsed JSON by table.

A checker is a function ``check(value, path)`` that returns ``None`` or raises
:class:`~isobox.errors.ConfigError` with ``where`` set to the JSON path of the bad value
(``process.rlimits[0].type``); the caller prefixes the file name. Checkers are built once,
at import, into a declarative schema (see :mod:`isobox.oci.config`), so validating a document
costs one call per present value. ``None`` (JSON ``null``) counts as "absent", as it does for
Go's decoder, which runc uses.

Start-up time matters: no :mod:`typing`, :mod:`re` or :mod:`json` at run time.
"""

from __future__ import annotations

from isobox.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Mapping
    from typing import Any, NoReturn

    Check = Callable[[Any, str], None]
    # A predicate on a valid string: returns an error message, or None when the value is fine.
    StrRule = Callable[[str], "str | None"]

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT16 = (0, 2**16 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)


def quote(s: str, limit: int = 200) -> str:
    """``s`` in double quotes, escaped like Go's ``%q`` closely enough for messages."""
    if len(s) > limit:
        s = s[:limit] + "..."
    if s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'
    return '"' + s.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def describe(v: object) -> str:
    """The JSON type of ``v``, with the value itself for scalars: ``number 5``."""
    if v is None:
        return "null"
    if v is True:
        return "boolean true"
    if v is False:
        return "boolean false"
    if isinstance(v, str):
        return "string " + quote(v, 60)
    if isinstance(v, int | float):
        return f"number {v!r}"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    return type(v).__name__


def fail(path: str, message: str) -> NoReturn:
    raise ConfigError(path, message)


def expected(path: str, what: str, v: object) -> NoReturn:
    raise ConfigError(path, f"expected {what}, got {describe(v)}")


def key_path(path: str, key: str) -> str:
    """Path of a map entry: ``linux.sysctl["net.ipv4.ip_forward"]``."""
    return f"{path}[{quote(key)}]"


# --- scalars -------------------------------------------------------------------------------


def string(v: Any, p: str) -> None:
    if type(v) is not str:
        expected(p, "a string", v)


def boolean(v: Any, p: str) -> None:
    if type(v) is not bool:
        expected(p, "a boolean", v)


def any_object(v: Any, p: str) -> None:
    if type(v) is not dict:
        expected(p, "an object", v)


def integer(lo: int, hi: int) -> Check:
    def check(v: Any, p: str) -> None:
        if type(v) is not int:  # bool is a subclass of int: excluded by the exact check
            expected(p, "an integer", v)
        if v < lo or v > hi:
            fail(p, f"{v} is out of range {lo}..{hi}")

    return check


def text(rule: StrRule) -> Check:
    """A string that also satisfies ``rule``."""

    def check(v: Any, p: str) -> None:
        if type(v) is not str:
            expected(p, "a string", v)
        err = rule(v)
        if err is not None:
            fail(p, err)

    return check


def enum(values: Collection[str], message: str) -> Check:
    """A string from ``values``; otherwise ``{message} "value"`` (and the choices, if few)."""
    allowed = frozenset(values)
    hint = f" (expected one of: {', '.join(sorted(allowed))})" if len(allowed) <= 8 else ""

    def check(v: Any, p: str) -> None:
        if type(v) is not str:
            expected(p, "a string", v)
        if v not in allowed:
            fail(p, f"{message} {quote(v)}{hint}")

    return check


# --- string rules --------------------------------------------------------------------------


def no_nul(s: str) -> str | None:
    return f"{quote(s)} contains a NUL character" if "\x00" in s else None


def host_path(s: str) -> str | None:
    """An absolute path on the host (hook binaries, namespace files)."""
    if not s.startswith("/"):
        return f"{quote(s)} is not an absolute path"
    return no_nul(s)


def container_path(s: str) -> str | None:
    """An absolute path inside the container that cannot climb out with ``..``."""
    if not s.startswith("/"):
        return f"{quote(s)} is not an absolute path"
    if ".." in s and ".." in s.split("/"):
        return f'{quote(s)} must not contain a ".." component'
    return no_nul(s)


def clean_path(s: str) -> str:
    """Lexically normalise an absolute path without ``..``: drop empty and ``.`` components."""
    if "//" not in s and "/." not in s and not s.endswith("/"):
        return s
    return "/" + "/".join(c for c in s.split("/") if c and c != ".")


# --- containers ----------------------------------------------------------------------------


def array(item: Check, what: str, after: Check | None = None) -> Check:
    """A JSON array whose items pass ``item``; ``after(array, path)`` then checks the whole."""

    def check(v: Any, p: str) -> None:
        if type(v) is not list:
            expected(p, what, v)
        for i, x in enumerate(v):
            item(x, f"{p}[{i}]")
        if after is not None:
            after(v, p)

    return check


def strings(rule: StrRule | None = None, what: str = "an array of strings") -> Check:
    """An array of strings, each passing ``rule``; item paths are built only on failure."""

    def check(v: Any, p: str) -> None:
        if type(v) is not list:
            expected(p, what, v)
        for i, x in enumerate(v):
            if type(x) is not str:
                expected(f"{p}[{i}]", "a string", x)
            if rule is not None:
                err = rule(x)
                if err is not None:
                    fail(f"{p}[{i}]", err)

    return check


def obj(
    fields: Mapping[str, Check],
    required: Iterable[str] = (),
    after: Check | None = None,
) -> Check:
    """A JSON object: known ``fields`` are checked, unknown ones ignored (runtime-spec rule)."""
    need = tuple(required)

    def check(v: Any, p: str) -> None:
        if type(v) is not dict:
            expected(p, "an object", v)
        prefix = p + "." if p else ""
        for k in need:
            if v.get(k) is None:
                fail(prefix + k, "required field is missing")
        for k, x in v.items():
            c = fields.get(k)
            if c is not None and x is not None:
                c(x, prefix + k)
        if after is not None:
            after(v, p)

    return check


def mapping(value: Check, key: StrRule | None = None) -> Check:
    """A JSON object used as a map; each key passes ``key``, each value passes ``value``."""

    def check(v: Any, p: str) -> None:
        if type(v) is not dict:
            expected(p, "an object", v)
        for k, x in v.items():
            if key is not None:
                err = key(k)
                if err is not None:
                    fail(key_path(p, k), err)
            value(x, key_path(p, k))

    return check


def string_map(key: StrRule | None = None) -> Check:
    """A map of string to string (annotations, sysctl, unified); paths built only on failure."""

    def check(v: Any, p: str) -> None:
        if type(v) is not dict:
            expected(p, "an object", v)
        for k, x in v.items():
            if type(x) is not str:
                expected(key_path(p, k), "a string", x)
            if key is not None:
                err = key(k)
                if err is not None:
                    fail(key_path(p, k), err)

    return check
