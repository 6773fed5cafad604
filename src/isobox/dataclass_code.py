"""The code of the methods :mod:`dataclasses` generates, compiled ahead of time.

Why: each method a dataclass gets (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, and
``__setattr__``/``__delattr__`` when frozen) is a ``compile()`` of its source text when the
class is made, ~0.1 ms each here: 21 ms for the 25 dataclasses an ``isobox run`` imports,
about a tenth of the whole run. ``make pyc`` records, for every text the package's
dataclasses generate, the code compiled from it (:func:`build`); the CLI then has
:mod:`dataclasses` execute that code rather than compile the same text again
(:func:`install`).

Safe by construction: an entry is keyed by the exact text and holds what ``exec`` would
have compiled from it (``dataclasses`` has no ``__future__`` flags to inherit), so a stale
or partial file only costs its misses, and a file of another interpreter (bytecode magic)
is ignored. The one intrusion: ``dataclasses.exec`` shadows the builtin for that module.
"""

from __future__ import annotations

import builtins
import dataclasses
import marshal
import sys
from types import CodeType
from typing import Any

HEADER = b"ISOBOXDC"
FILE_NAME = "isobox-dataclasses.code"


def _magic() -> bytes:
    return bytes(sys.modules["_frozen_importlib_external"].MAGIC_NUMBER)


def default_path() -> str:
    """Beside the virtualenv's interpreter: ``<venv>/isobox-dataclasses.code``."""
    return f"{sys.prefix}/{FILE_NAME}"


def _exec(source: Any, globals: Any, locals: Any) -> None:
    """``exec`` as called from :mod:`dataclasses`: a text is compiled without this module's
    ``__future__`` flags (``exec`` of a text inherits its caller's; with this module's
    ``annotations`` the generated methods' annotations would become strings)."""
    if isinstance(source, (str, bytes)):
        source = compile(source, "<string>", "exec", dont_inherit=True)
    builtins.exec(source, globals, locals)


def install(path: str | None = None) -> bool:
    """Let :mod:`dataclasses` run the recorded code; False (nothing changed) without a
    usable file, or when ``dataclasses.exec`` is already set (installed before, or a
    :func:`build` recording). Only the index is unmarshalled up front; a method's code
    when its class is made."""
    if "exec" in vars(dataclasses):
        return False
    try:
        with open(path or default_path(), "rb") as f:
            data = f.read()
    except OSError:
        return False
    head = HEADER + _magic()
    start = len(head) + 8
    if not data.startswith(head) or len(data) < start:
        return False
    index_end = start + int.from_bytes(data[len(head):start], "little")
    try:
        index = marshal.loads(data[start:index_end])
    except (EOFError, ValueError, TypeError):
        return False
    if not isinstance(index, dict):
        return False
    blobs = memoryview(data)[index_end:]

    def exec_recorded(source: Any, globals: Any = None, locals: Any = None, /) -> None:
        code = None
        if type(source) is str:
            try:
                offset, length = index[source]
                code = marshal.loads(blobs[offset:offset + length])
            except Exception:  # not recorded, or a damaged entry: compile the text
                code = None
        _exec(code if type(code) is CodeType else source, globals, locals)

    dataclasses.exec = exec_recorded  # type: ignore[attr-defined]
    return True


def build(path: str, packages: list[str]) -> int:
    """Import every module of ``packages``, record the code of each generated method, and
    write the file (header, index length, index: text -> (offset, length), the marshalled
    code objects); the number of entries."""
    import importlib
    import os
    import pkgutil

    table: dict[str, CodeType] = {}

    def exec_recording(source: Any, globals: Any = None, locals: Any = None, /) -> None:
        if type(source) is str:
            source_text: str = source
            code = table.get(source_text)
            if code is None:
                code = table[source_text] = compile(source_text, "<string>", "exec",
                                                    dont_inherit=True)
            builtins.exec(code, globals, locals)
        else:
            _exec(source, globals, locals)

    dataclasses.exec = exec_recording  # type: ignore[attr-defined]
    try:
        for package in packages:
            pkg = importlib.import_module(package)
            for info in pkgutil.walk_packages(pkg.__path__, package + "."):
                if info.name.rpartition(".")[2] == "__main__":  # runs a command when imported
                    continue
                try:
                    importlib.import_module(info.name)
                except Exception as e:  # an optional module that cannot load here
                    print(f"dataclass code: skipped {info.name}: {e}", file=sys.stderr)
    finally:
        del dataclasses.exec  # type: ignore[attr-defined]
    index: dict[str, tuple[int, int]] = {}
    blobs = []
    offset = 0
    for text, code in table.items():
        blob = marshal.dumps(code)
        index[text] = (offset, len(blob))
        blobs.append(blob)
        offset += len(blob)
    packed_index = marshal.dumps(index)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(HEADER + _magic() + len(packed_index).to_bytes(8, "little") + packed_index)
        f.writelines(blobs)
    os.replace(tmp, path)
    return len(table)


if __name__ == "__main__":  # python -m isobox.dataclass_code OUT PACKAGE...
    print(f"{build(sys.argv[1], sys.argv[2:])} dataclass methods recorded in {sys.argv[1]}")
