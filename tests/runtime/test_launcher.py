"""The lean launcher and its code bundle (scripts/launcher, scripts/build-code-bundle): a
bundled module is imported from the bundle while its source is unchanged, from its source
once edited, and a bundle for another interpreter is ignored."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _make_launcher(tmp: Path, bundle: Path, module: str = "pkgx.cli") -> Path:
    text = (REPO / "scripts" / "launcher").read_text()
    for key, value in (("@PYTHON@", sys.executable), ("@MODULE@", module),
                       ("@PKGDIR@", str(tmp)), ("@SITE@", ""), ("@BUNDLE@", str(bundle))):
        text = text.replace(key, value)
    launcher = tmp / "launcher"
    launcher.write_text(text)
    launcher.chmod(0o755)
    return launcher


def _write_module(path: Path, value: str) -> None:
    path.write_text(f"from pkgx import helper\n\n\ndef main():\n    print(helper.NAME, {value!r})\n"
                    "    return 3\n")


FORKER = """\
import os
import sys


def _bundle_fds():
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return [f for f in fds if f.endswith("code.bundle")]


def main():
    print("parent", len(_bundle_fds()))
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        held = len(_bundle_fds())
        from pkgx import late
        print("child", held, late.VALUE)
        sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    return 0
"""


def _setup(tmp: Path) -> tuple[Path, Path]:
    pkg = tmp / "pkgx"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("NAME = 'helper'\n")
    (pkg / "late.py").write_text("VALUE = 'AAA'\n")
    (pkg / "forker.py").write_text(FORKER)
    _write_module(pkg / "cli.py", "AAA")
    bundle = tmp / "code.bundle"
    _build(tmp, bundle)
    return _make_launcher(tmp, bundle), bundle


def _build(tmp: Path, bundle: Path) -> None:
    subprocess.run([str(REPO / "scripts" / "build-code-bundle"), str(tmp), str(bundle), "pkgx"],
                   check=True)


def _swap_keeping_stat(path: Path, write: Callable[[], object]) -> None:
    """Other bytes of the same size under the same mtime: only a bundle built before still
    has the old code."""
    st = path.stat()
    write()
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _run(launcher: Path) -> tuple[int, str]:
    p = subprocess.run([str(launcher)], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout.strip()


def test_bundle_serves_unchanged_modules(tmp_path: Path) -> None:
    launcher, _ = _setup(tmp_path)
    cli = tmp_path / "pkgx" / "cli.py"
    _swap_keeping_stat(cli, lambda: _write_module(cli, "BBB"))
    assert _run(launcher) == (3, "helper AAA")


def test_edited_source_is_imported_from_source(tmp_path: Path) -> None:
    launcher, _ = _setup(tmp_path)
    cli = tmp_path / "pkgx" / "cli.py"
    st = cli.stat()
    _write_module(cli, "BBB")
    os.utime(cli, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert _run(launcher) == (3, "helper BBB")
    cli.write_text("from pkgx import helper\n\n\ndef main():\n    print('longer source')\n"
                   "    return 4\n")
    assert _run(launcher) == (4, "longer source")


def test_forked_child_holds_no_fd_on_the_bundle(tmp_path: Path) -> None:
    """A child (the container's init is one) closes the bundle at fork, and still imports
    from it: the unchanged ``late`` module's source says BBB, the bundle AAA."""
    _, bundle = _setup(tmp_path)
    late = tmp_path / "pkgx" / "late.py"
    _swap_keeping_stat(late, lambda: late.write_text("VALUE = 'BBB'\n"))
    launcher = _make_launcher(tmp_path, bundle, "pkgx.forker")
    assert _run(launcher) == (0, "parent 1\nchild 0 AAA")
    # Replaced since the parent opened it (make rebuilt it): the child imports from source.
    launcher2 = _make_launcher(tmp_path, bundle, "pkgx.forker")
    text = launcher2.read_text().replace("from pkgx.forker import main",
                                         "import os\nos.utime(BUNDLE, ns=(0, 0))\n"
                                         "from pkgx.forker import main")
    launcher2.write_text(text)
    assert _run(launcher2) == (0, "parent 1\nchild 0 BBB")


def test_future_annotations_are_a_compiler_flag_in_the_bundle(tmp_path: Path) -> None:
    """``from __future__ import annotations`` keeps its meaning (annotations are strings, so an
    undefined name in one is fine) without importing :mod:`__future__` at run time."""
    _, bundle = _setup(tmp_path)
    (tmp_path / "pkgx" / "lazy.py").write_text(
        '"""doc"""\n\nfrom __future__ import annotations\n\nimport sys\n\n\n'
        "def f(x: Undefined) -> Other:\n    return x\n\n\n"
        "def main():\n    print(f.__annotations__, '__future__' in sys.modules, __doc__)\n"
        "    return 0\n")
    _build(tmp_path, bundle)
    launcher = _make_launcher(tmp_path, bundle, "pkgx.lazy")
    assert _run(launcher) == (0, "{'x': 'Undefined', 'return': 'Other'} False doc")


def test_bundle_of_another_interpreter_is_ignored(tmp_path: Path) -> None:
    launcher, bundle = _setup(tmp_path)
    cli = tmp_path / "pkgx" / "cli.py"
    _swap_keeping_stat(cli, lambda: _write_module(cli, "BBB"))
    data = bytearray(bundle.read_bytes())
    data[8:12] = b"\x00\x00\r\n"  # another bytecode magic
    bundle.write_bytes(bytes(data))
    assert _run(launcher) == (3, "helper BBB")
    bundle.write_bytes(b"not a bundle")
    assert _run(launcher) == (3, "helper BBB")
    bundle.unlink()
    assert _run(launcher) == (3, "helper BBB")


def test_installed_runtime_bundle_is_fresh() -> None:
    """`make` built the runtime's bundle from the current sources, for the launcher."""
    launcher = REPO / ".venv" / "bin" / "isobox-runtime"
    text = launcher.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("BUNDLE = "))
    bundle = Path(line.split('"')[1])
    import marshal

    raw = bundle.read_bytes()
    importer_size = int.from_bytes(raw[12:16], "little")
    index_size = int.from_bytes(raw[16:24], "little")
    index = marshal.loads(raw[24 + importer_size:24 + importer_size + index_size])
    assert "isobox.runtime.container_create" in index and "isobox.linux.syscalls" in index
    stale = [name for name, (_, path, mtime_ns, size_, *_) in index.items()
             if (os.stat(path).st_mtime_ns, os.stat(path).st_size) != (mtime_ns, size_)]
    assert stale == []
