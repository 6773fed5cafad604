"""isobox.linux.pathnames against the os.path functions it stands in for."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest

from isobox.linux import pathnames

PARTS = ["", "/", "//", "///", ".", "..", "a", "b.", "..c", "a/", "/a", "a//b", "./a", "a/..",
         "../..", "a/./b/../c/", "/../x", "//x/../..", "x/../../y"]


def _paths() -> list[str]:
    out = set(PARTS)
    for a, b in itertools.product(PARTS, repeat=2):
        out.add(a + b)
        out.add(f"{a}/{b}")
    return sorted(out)


def test_normpath_matches_posixpath_on_every_combination() -> None:
    for path in _paths():
        assert pathnames.normpath(path) == os.path.normpath(path), path


def test_join_matches_posixpath() -> None:
    for a, b, c in itertools.product(PARTS, repeat=3):
        assert pathnames.join(a, b, c) == os.path.join(a, b, c), (a, b, c)
    assert pathnames.join("x") == os.path.join("x")


def test_abspath_and_split_match_posixpath(tmp_path: object, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    monkeypatch.chdir(str(tmp_path))
    for path in _paths():
        if path:
            assert pathnames.abspath(path) == os.path.abspath(path), path
        assert pathnames.split(path) == os.path.split(path), path


def test_isdir_and_exists(tmp_path: object) -> None:
    d = str(tmp_path)
    f = os.path.join(d, "file")
    open(f, "w").close()
    os.symlink("file", os.path.join(d, "link"))
    os.symlink("missing", os.path.join(d, "dangling"))
    for path in (d, f, os.path.join(d, "link"), os.path.join(d, "dangling"),
                 os.path.join(d, "none"), os.path.join(f, "below"), "bad\0path"):
        assert pathnames.isdir(path) == os.path.isdir(path), path
        assert pathnames.exists(path) == os.path.exists(path), path


def test_makedirs_creates_parents_and_accepts_an_existing_directory(tmp_path: object) -> None:
    d = os.path.join(str(tmp_path), "a", "b", "c")
    pathnames.makedirs(d, 0o711)
    assert os.path.isdir(d)
    assert os.stat(d).st_mode & 0o777 == 0o711 & ~_umask()
    pathnames.makedirs(d, 0o711)  # exists: fine
    pathnames.makedirs(d + "/", 0o711)
    f = os.path.join(str(tmp_path), "file")
    open(f, "w").close()
    with pytest.raises(FileExistsError):
        pathnames.makedirs(f)
    with pytest.raises(NotADirectoryError):
        pathnames.makedirs(os.path.join(f, "below"))
    dangling = os.path.join(str(tmp_path), "dangling")
    os.symlink("missing", dangling)
    for target in (dangling, os.path.join(dangling, "x")):  # the same error as os.makedirs
        with pytest.raises(OSError) as ours:
            pathnames.makedirs(target)
        with pytest.raises(OSError) as theirs:
            os.makedirs(target, exist_ok=True)
        assert type(ours.value) is type(theirs.value), target


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_the_runtime_create_path_does_not_import_os() -> None:
    """The reason for the module: a fresh interpreter that imports what ``create`` imports
    (the launcher's own ``-IS`` interpreter) does not load ``os``."""
    code = ("import sys\n"
            "import isobox.runtime.cli, isobox.runtime.container_create, isobox.runtime.init\n"
            "import isobox.runtime.rootfs, isobox.runtime.process, isobox.runtime.spawn\n"
            "import isobox.cgroups, isobox.runtime.devices_policy, isobox.oci.config\n"
            "import isobox.runtime.seccomp_cache\n"
            "print(sorted(m for m in ('os', 'posixpath', '_collections_abc', 'resource')"
            " if m in sys.modules))\n")
    src = os.path.dirname(os.path.dirname(os.path.dirname(pathnames.__file__)))
    out = subprocess.run([sys.executable, "-IS", "-c", f"import sys; sys.path.insert(0, {src!r})\n"
                          + code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
