"""The dataclasses' methods compiled ahead (src/isobox/dataclass_code.py): recorded code is run
instead of compiling the same text, classes behave exactly as without it, a class edited
since the recording compiles what changed, and a file that cannot be used changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import isobox.dataclass_code as dc

SRC = str(Path(dc.__file__).resolve().parents[1])

VALUES = '''
from __future__ import annotations
from dataclasses import dataclass, field

@dataclass(frozen=True)
class Port:
    """A value."""
    number: int
    protocol: str = "tcp"
    labels: tuple[str, ...] = ()

@dataclass
class Box:
    """A mutable one."""
    name: str
    ports: list[Port] = field(default_factory=list)
'''

# Counts the compiles of generated methods (exec of a text raises the "compile" audit event,
# exec of recorded code does not; dataclasses wraps each in a function `__create_fn__`),
# then shows how the classes behave.
PROBE = '''
import sys
compiles = []
def count(event, args):
    if event == "compile" and b"__create_fn__" in (args[0] if isinstance(args[0], bytes)
                                                     else str(args[0]).encode()):
        compiles.append(1)
sys.addaudithook(count)
from isobox import dataclass_code
installed = dataclass_code.install(sys.argv[1]) if sys.argv[1] != "-" else False
compiles.clear()
import pkgdc.values as v
made = len(compiles)
import dataclasses
p = v.Port(80)
try:
    p.number = 1
    frozen = "no"
except dataclasses.FrozenInstanceError as e:
    frozen = str(e)
b = v.Box("x")
b.ports.append(p)
print(installed, made)
print(repr(p), p == v.Port(80), p == v.Port(81), hash(p) == hash(v.Port(80)), frozen)
print(repr(b), b == v.Box("x", [v.Port(80)]), v.Box("y").ports is not v.Box("y").ports)
print(sorted(f.name for f in dataclasses.fields(v.Port)), dataclasses.replace(p, number=1))
import inspect
for cls in (v.Port, v.Box):
    for name in ("__init__", "__repr__", "__eq__", "__setattr__", "__hash__"):
        fn = cls.__dict__.get(name)
        if callable(fn):
            print(cls.__name__, name, fn.__qualname__, fn.__annotations__,
                  fn.__code__.co_filename, fn.__code__.co_flags)
    print(inspect.signature(cls))
'''


def _package(tmp: Path, source: str = VALUES) -> None:
    pkg = tmp / "pkgdc"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "values.py").write_text(source)


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{SRC}",
            "PYTHONDONTWRITEBYTECODE": "1"}


def _build(tmp: Path) -> Path:
    out = tmp / "dc.code"
    subprocess.run([sys.executable, "-m", "isobox.dataclass_code", str(out), "pkgdc"],
                   env=_env(tmp), check=True, capture_output=True)
    return out


def _probe(tmp: Path, code_file: Path | str) -> tuple[bool, int, str]:
    p = subprocess.run([sys.executable, "-c", PROBE, str(code_file)], env=_env(tmp),
                       capture_output=True, text=True, check=True)
    first, _, rest = p.stdout.partition("\n")
    installed, made = first.split()
    return installed == "True", int(made), rest


def test_recorded_code_is_run_and_classes_behave_the_same(tmp_path: Path) -> None:
    _package(tmp_path)
    code_file = _build(tmp_path)
    installed, compiles, behaviour = _probe(tmp_path, code_file)
    plain_installed, plain_compiles, plain_behaviour = _probe(tmp_path, "-")
    assert installed and not plain_installed
    # frozen Port: __init__, __repr__, __eq__, __hash__, __setattr__, __delattr__; Box: 3
    assert plain_compiles >= 9
    assert compiles == 0
    assert behaviour == plain_behaviour
    assert "cannot assign to field 'number'" in behaviour


def test_a_class_edited_since_compiles_what_changed(tmp_path: Path) -> None:
    _package(tmp_path)
    code_file = _build(tmp_path)
    _package(tmp_path, VALUES.replace('    labels: tuple[str, ...] = ()\n',
                                      '    labels: tuple[str, ...] = ()\n    note: str = ""\n'))
    installed, compiles, behaviour = _probe(tmp_path, code_file)
    _, _, plain_behaviour = _probe(tmp_path, "-")
    assert installed
    assert compiles >= 4  # Port's methods that name its fields; Box's are unchanged
    assert behaviour == plain_behaviour
    assert "note=''" in behaviour


def test_an_entry_that_is_not_code_is_compiled_from_its_text(tmp_path: Path) -> None:
    """An index entry whose bytes unmarshal to something other than a code object (here a
    text that would run if exec'd) is never executed: the method's own text is compiled."""
    import marshal

    _package(tmp_path)
    code_file = _build(tmp_path)
    data = code_file.read_bytes()
    head = len(dc.HEADER) + 4
    index_size = int.from_bytes(data[head:head + 8], "little")
    index = marshal.loads(data[head + 8:head + 8 + index_size])
    blob = marshal.dumps("print('not a generated method')")
    bad_index = marshal.dumps({text: (0, len(blob)) for text in index})
    code_file.write_bytes(data[:head] + len(bad_index).to_bytes(8, "little") + bad_index + blob)
    installed, compiles, behaviour = _probe(tmp_path, code_file)
    assert installed
    assert compiles >= 9
    assert "not a generated method" not in behaviour
    assert behaviour == _probe(tmp_path, "-")[2]


@pytest.mark.parametrize("damage", ["other interpreter", "truncated", "garbage", "missing"])
def test_a_file_that_cannot_be_used_changes_nothing(tmp_path: Path, damage: str) -> None:
    _package(tmp_path)
    code_file = _build(tmp_path)
    data = code_file.read_bytes()
    if damage == "other interpreter":
        head = len(dc.HEADER)
        code_file.write_bytes(data[:head] + b"\0\0\r\n" + data[head + 4:])
    elif damage == "truncated":
        code_file.write_bytes(data[:len(dc.HEADER) + 10])
    elif damage == "garbage":
        code_file.write_bytes(data[:len(dc.HEADER) + 4] + os.urandom(64))
    else:
        code_file.unlink()
    installed, compiles, behaviour = _probe(tmp_path, code_file)
    assert not installed
    assert compiles >= 9
    assert behaviour == _probe(tmp_path, "-")[2]


RUN_PATH = ("import isobox.cli.main, isobox.cli.container_cmds, isobox.engine.engine\n"
            "import isobox.engine.start, isobox.engine.spec, isobox.engine.monitor\n"
            "print(len(compiles))")


def test_the_build_covers_the_cli_run_path(tmp_path: Path) -> None:
    """Every dataclass `isobox run` makes is in a file built from the package (the build
    records the classes of modules it imports after `isobox.cli`, too)."""
    out = tmp_path / "isobox.code"
    subprocess.run([sys.executable, "-m", "isobox.dataclass_code", str(out), "isobox"],
                   check=True, capture_output=True)
    probe = (PROBE.split("from isobox import")[0]
             + f"from isobox import dataclass_code\nassert dataclass_code.install({str(out)!r})\n"
             + RUN_PATH)
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       check=True)
    assert p.stdout.strip() == "0", p.stdout


def test_the_installed_file_is_used_by_the_cli() -> None:
    """`isobox.cli` installs the file `make pyc` built (a dataclass edited since compiles its
    methods again: run `make pyc`)."""
    path = dc.default_path()
    if not os.path.exists(path):
        pytest.skip(f"{path} is not built (make pyc)")
    probe = PROBE.split("from isobox import")[0] + RUN_PATH
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                       check=True)
    assert p.stdout.strip() == "0", f"{p.stdout.strip()} methods compiled: run `make pyc`"
