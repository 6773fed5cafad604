"""The lean launcher and its code bundle (scripts/launcher, scripts/build-code-bundle,
scripts/bundle_importer.py): a bundled module is imported from the bundle while its source
is unchanged, from its source once edited; a bundle that cannot be used (another
interpreter's, truncated, corrupt, on fd 0) is skipped without error; a forked child holds
no descriptor on it."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "scripts" / "build-code-bundle"


def _make_launcher(tmp: Path, bundle: Path, module: str = "pkgx.cli", extra: str = "") -> Path:
    """The launcher template for ``module``; ``extra`` runs just before the module's import."""
    text = (REPO / "scripts" / "launcher").read_text()
    for key, value in (("@PYTHON@", sys.executable), ("@MODULE@", module),
                       ("@PKGDIR@", str(tmp)), ("@SITE@", extra), ("@BUNDLE@", str(bundle))):
        text = text.replace(key, value)
    launcher = tmp / f"launcher-{module}"
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
    return len([f for f in fds if "code.bundle" in f])


def main():
    print("parent", _bundle_fds())
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        held = _bundle_fds()
        from pkgx import late
        print("child", held, late.VALUE, _bundle_fds())
        sys.stdout.flush()
        os._exit(0)
    os.waitpid(pid, 0)
    return 0
"""


def _age(tmp: Path) -> None:
    """Sources older than the builder's "recently written" window (a same-size edit within
    one timestamp tick of the build would otherwise go unseen)."""
    old = time.time_ns() - 60_000_000_000
    for path in tmp.rglob("*.py"):
        os.utime(path, ns=(old, old))


def _build(tmp: Path, bundle: Path) -> None:
    _age(tmp)
    subprocess.run([str(BUILD), str(tmp), str(bundle), "pkgx"], check=True)


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


def _swap_keeping_stat(path: Path, write: Callable[[], object]) -> None:
    """Other bytes of the same size under the same mtime: only a bundle built before still
    has the old code."""
    st = path.stat()
    write()
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _run(launcher: Path) -> tuple[int, str]:
    p = subprocess.run([str(launcher)], capture_output=True, text=True, timeout=30)
    assert p.stderr == "", p.stderr
    return p.returncode, p.stdout.strip()


def _index(bundle: Path) -> tuple[dict[str, tuple], int]:
    raw = bundle.read_bytes()
    importer_size = int.from_bytes(raw[12:16], "little")
    index_size = int.from_bytes(raw[16:24], "little")
    base = 24 + importer_size + index_size
    return marshal.loads(raw[24 + importer_size:base]), base


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
    # The same mtime but another size: from source too.
    cli.write_text("from pkgx import helper\n\n\ndef main():\n    print('longer source')\n"
                   "    return 4\n")
    os.utime(cli, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _run(launcher) == (4, "longer source")


def test_recently_written_sources_are_left_out(tmp_path: Path) -> None:
    _, bundle = _setup(tmp_path)
    (tmp_path / "pkgx" / "late.py").write_text("VALUE = 'new'\n")  # mtime: now
    subprocess.run([str(BUILD), str(tmp_path), str(bundle), "pkgx"], check=True)
    index, _ = _index(bundle)
    assert "pkgx.cli" in index and "pkgx.late" not in index


def test_forked_child_holds_no_fd_on_the_bundle(tmp_path: Path) -> None:
    """A child (the container's init is one) closes the bundle at fork, and still imports
    from it, closing what it opened: the unchanged ``late`` module's source says BBB, the
    bundle AAA."""
    _, bundle = _setup(tmp_path)
    late = tmp_path / "pkgx" / "late.py"
    _swap_keeping_stat(late, lambda: late.write_text("VALUE = 'BBB'\n"))
    launcher = _make_launcher(tmp_path, bundle, "pkgx.forker")
    assert _run(launcher) == (0, "parent 1\nchild 0 AAA 0")


@pytest.mark.parametrize("how", ["touched", "replaced"])
def test_child_does_not_read_a_bundle_changed_since(tmp_path: Path, how: str) -> None:
    """The parent keeps its descriptor; a child reopens by path, and a file that is not the
    one the parent opened (new mtime, or another inode with the same mtime) is not read."""
    _, bundle = _setup(tmp_path)
    late = tmp_path / "pkgx" / "late.py"
    _swap_keeping_stat(late, lambda: late.write_text("VALUE = 'BBB'\n"))
    if how == "touched":
        change = "import os\nos.utime(BUNDLE, ns=(0, 0))"
    else:  # what make does: a new file renamed over it, here with the old mtime
        change = ("import os, shutil\nst = os.stat(BUNDLE)"
                  "\nshutil.copyfile(BUNDLE, BUNDLE + '.new')"
                  "\nos.utime(BUNDLE + '.new', ns=(st.st_atime_ns, st.st_mtime_ns))"
                  "\nos.replace(BUNDLE + '.new', BUNDLE)")
    launcher = _make_launcher(tmp_path, bundle, "pkgx.forker", extra=change)
    assert _run(launcher) == (0, "parent 1\nchild 0 BBB 0")


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
    assert "pkgx.lazy" in _index(bundle)[0]
    launcher = _make_launcher(tmp_path, bundle, "pkgx.lazy")
    assert _run(launcher) == (0, "{'x': 'Undefined', 'return': 'Other'} False doc")


def test_misplaced_future_import_stays_an_error(tmp_path: Path) -> None:
    """Only a ``__future__`` import in its legal place is turned into a flag: one after other
    statements is the SyntaxError it is from source; the build fails and leaves no file."""
    _, bundle = _setup(tmp_path)
    before = bundle.read_bytes()
    (tmp_path / "pkgx" / "bad.py").write_text("import sys\nfrom __future__ import annotations\n")
    _age(tmp_path)
    p = subprocess.run([str(BUILD), str(tmp_path), str(bundle), "pkgx"], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "from __future__ imports must occur" in p.stderr
    assert bundle.read_bytes() == before
    assert sorted(f.name for f in tmp_path.iterdir() if f.name.startswith("code.bundle")) == [
        "code.bundle"]


def test_unusable_bundles_are_skipped(tmp_path: Path) -> None:
    """Another interpreter's magic, a file that is not a bundle, a truncated one (at every
    part of it), a corrupt module, a missing file: the launcher runs from source, without a
    traceback, and keeps no descriptor on a bundle it does not use."""
    launcher, bundle = _setup(tmp_path)
    cli = tmp_path / "pkgx" / "cli.py"
    _swap_keeping_stat(cli, lambda: _write_module(cli, "BBB"))
    good = bundle.read_bytes()
    assert _run(launcher) == (3, "helper AAA")
    index, base = _index(bundle)
    cli_offset, cli_length = index["pkgx.cli"][4:]

    def with_bundle(data: bytes) -> tuple[int, str]:
        bundle.write_bytes(data)
        return _run(launcher)

    assert with_bundle(good[:8] + b"\x00\x00\r\n" + good[12:]) == (3, "helper BBB")
    assert with_bundle(b"not a bundle") == (3, "helper BBB")
    for cut in (12, 16, 20, 24, 100, base - 10, base + cli_offset + cli_length // 2,
                len(good) - 1):
        assert with_bundle(good[:cut]) == (3, "helper BBB"), cut
    assert with_bundle(good + b"trailing") == (3, "helper BBB")
    corrupt = bytearray(good)
    corrupt[base + cli_offset:base + cli_offset + cli_length] = b"\xff" * cli_length
    assert with_bundle(bytes(corrupt)) == (3, "helper BBB")  # that module from source
    huge = bytearray(good)
    huge[12:16] = (0xFFFFFFFF).to_bytes(4, "little")
    assert with_bundle(bytes(huge)) == (3, "helper BBB")
    bundle.unlink()
    assert _run(launcher) == (3, "helper BBB")


def test_bundle_never_takes_fd_0(tmp_path: Path) -> None:
    """Started with stdin closed, the bundle would be opened as fd 0 (and read as the
    container's input by `run`'s console): it is not used then, and fd 0 stays closed."""
    _, bundle = _setup(tmp_path)
    (tmp_path / "pkgx" / "fd0.py").write_text(
        "import os\n\n\ndef main():\n    try:\n        print(os.readlink('/proc/self/fd/0'))\n"
        "    except OSError:\n        print('closed')\n    return 0\n")
    _build(tmp_path, bundle)
    launcher = _make_launcher(tmp_path, bundle, "pkgx.fd0")
    p = subprocess.run(f"exec {launcher} <&-", shell=True, capture_output=True, text=True,
                       timeout=30)
    assert (p.returncode, p.stdout.strip(), p.stderr) == (0, "closed", "")


def test_installed_runtime_bundle_is_usable() -> None:
    """`make` built the runtime's bundle for the launcher: it covers the runtime's packages
    and names existing sources (a stale entry is harmless: imported from source)."""
    launcher = REPO / ".venv" / "bin" / "isobox-runtime"
    line = next(ln for ln in launcher.read_text().splitlines() if ln.startswith("BUNDLE = "))
    bundle = Path(line.split('"')[1])
    index, base = _index(bundle)
    assert {"isobox.runtime.container_create", "isobox.linux.syscalls", "isobox.cgroups",
            "isobox.oci.config"} <= set(index)
    assert base + max(e[4] + e[5] for e in index.values()) == bundle.stat().st_size
    assert all(os.path.isfile(e[1]) for e in index.values())
