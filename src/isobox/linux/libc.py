"""The few C types and C functions of the running program that ``isobox.linux`` calls, bound
straight on ``_ctypes`` (the C half of :mod:`ctypes`).

``import ctypes`` costs 3-4 ms here (it builds some thirty C types, checks their sizes with
:mod:`struct`, and imports ``ctypes._endian`` for byte-swapped structures nobody here uses),
and ``isobox-runtime create`` pays it on every container. The classes below are exactly what
ctypes defines under the same names (a ``_SimpleCData`` subclass per type code, a
``CFuncPtr`` subclass per calling convention), so values, structures and arrays made from
them behave as ctypes' own: ``c_uint32 * 6``, ``byref``, ``sizeof`` all work.

:func:`function` is ``ctypes.CDLL(None, use_errno=True).NAME`` (the GIL released during the
call; ``get_errno()`` reads the errno the call left), :func:`api_function` is
``ctypes.PyDLL(None, use_errno=True).NAME`` (the GIL held: needed around ``fork``-like calls).
Arguments follow ctypes' defaults: ``int`` is passed as a C ``int``, ``bytes`` and ``None`` as
pointers; wrap wider integers in :class:`c_ulong`.
"""

from _ctypes import (
    FUNCFLAG_CDECL,
    FUNCFLAG_PYTHONAPI,
    FUNCFLAG_USE_ERRNO,
    CFuncPtr,
    Structure,
    _SimpleCData,
    addressof,
    byref,
    dlopen,
    get_errno,
    sizeof,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    _Int: TypeAlias = _SimpleCData[int]
else:
    _Int = _SimpleCData  # not subscriptable at run time

__all__ = ["Structure", "addressof", "api_function", "byref", "c_int", "c_int32", "c_long",
           "c_size_t", "c_uint", "c_uint32", "c_uint64", "c_ulong", "function", "get_errno",
           "sizeof"]


class c_int(_Int):  # ctypes' names
    _type_ = "i"


class c_uint(_Int):
    _type_ = "I"


class c_long(_Int):
    _type_ = "l"


class c_ulong(_Int):
    _type_ = "L"


# x86_64 / LP64, as ctypes aliases them
c_int32 = c_int
c_uint32 = c_uint
c_uint64 = c_ulong
c_size_t = c_ulong


class _Function(CFuncPtr):
    """A C function called with the GIL released and errno captured (``CDLL(..., use_errno)``)."""

    _flags_ = FUNCFLAG_CDECL | FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class _ApiFunction(CFuncPtr):
    """A C function called with the GIL held (``PyDLL``), errno captured."""

    _flags_ = FUNCFLAG_CDECL | FUNCFLAG_PYTHONAPI | FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class _Program:
    """``dlopen(NULL)``: the running program and the libraries it has loaded (libc; libpython
    or the interpreter itself for ``Py*`` symbols). ``CFuncPtr`` reads ``_handle``."""

    _handle = dlopen(None)  # type: ignore[arg-type]  # NULL: the program itself


_PROGRAM: "Any" = _Program  # stands in for a ctypes.CDLL: only its _handle is read


def function(name: str, restype: type[_Int] = c_int) -> CFuncPtr:
    """The C function ``name`` (AttributeError if the program has no such symbol)."""
    func = _Function((name, _PROGRAM))
    func.restype = restype
    return func


def api_function(name: str, restype: type[_Int] = c_int) -> CFuncPtr:
    """The C function ``name``, called with the GIL held (for ``Py*`` and ``fork``-like calls)."""
    func = _ApiFunction((name, _PROGRAM))
    func.restype = restype
    return func
