"""COPY/ADD from the build context or another stage, and ``--chown``/``USER`` lookups in the
image (catalogue cases 28-29, 32 and 43 applied to ``isobox.images.build.context``).

Layout of every test: ``box/ctx`` (the build context, or a stage's root), ``box/rootfs`` (the
snapshot being built), ``box/victim`` (a host canary directory beside them, which no copy may
read from or write to). Races are made deterministic by swapping a file in the source tree
between the moment the walk lists it and the moment the copy reads it."""

from __future__ import annotations

import ctypes
import io
import os
import select
import shutil
import stat
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

pytest.register_assert_rewrite("sec_helpers")

from harness import RUN_PREFIX  # noqa: E402
from isobox.errors import ConfigError  # noqa: E402
from isobox.images import unpack as unpack_mod  # noqa: E402
from isobox.images.build import context as bctx  # noqa: E402
from isobox.images.build.dockerignore import Matcher  # noqa: E402

pytest_plugins = ["sec_helpers"]
pytestmark = pytest.mark.usefixtures("host_guard")

SECRET = b"host secret: must never reach the image\n"
IN_OPEN = 0x20


def tree(path: str) -> dict[str, tuple[int, bytes]]:
    out: dict[str, tuple[int, bytes]] = {}
    for base, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(base, n)
            st = os.lstat(p)
            body = b""
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    body = fh.read()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p).encode()
            out[os.path.relpath(p, path)] = (st.st_mode, body)
    return out


def contents(path: str) -> bytes:
    """Every regular file's bytes below ``path``, concatenated (for "secret leaked?")."""
    return b"".join(body for mode, body in tree(path).values() if stat.S_ISREG(mode))


@dataclass
class Box:
    root: str

    def p(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    @property
    def ctx(self) -> str:
        return self.p("ctx")

    @property
    def rootfs(self) -> str:
        return self.p("rootfs")

    @property
    def victim(self) -> str:
        return self.p("victim")

    def write(self, rel: str, data: bytes = b"data\n") -> str:
        path = self.p(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        return path


@pytest.fixture
def box() -> Iterator[Box]:
    root = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-buildcopy-", dir="/tmp")
    b = Box(root)
    for d in ("ctx", "rootfs", "victim/sub"):
        os.makedirs(b.p(d))
    b.write("victim/secret", SECRET)
    b.write("victim/sub/deep", SECRET)
    before = tree(b.victim)
    try:
        yield b
        assert sorted(os.listdir(root)) == ["ctx", "rootfs", "victim"], \
            "something was written beside the build root"
        assert tree(b.victim) == before, "the host canary changed"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def copy(src: bctx.SourceRoot, patterns: list[str], dest: str, b: Box) -> None:
    bctx.copy_into(src, patterns, dest, b.rootfs, "/", bctx.CopyOptions(), "COPY")


def attempt(call: Callable[[], None]) -> BaseException | None:
    try:
        call()
    except Exception as e:  # returned: the test checks for a leak first, then the error
        return e
    return None


class SwappingSource(bctx.SourceRoot):
    """A context in which ``swap()`` runs right after the walk lists the entry ``at``, i.e.
    between the check (lstat) and the use (open / scandir) — an attacker racing the build."""

    def __init__(self, path: str, at: str, swap: Callable[[], None]) -> None:
        super().__init__(path, None)
        self.at, self.swap, self.swapped = at, swap, False

    def walk(self, rootfd: int, rel: str) -> Any:
        for item in super().walk(rootfd, rel):
            sub = item[0] if isinstance(item, tuple) else item.sub
            if sub == self.at and not self.swapped:
                self.swapped = True
                self.swap()
            yield item


class Inotify:
    """IN_OPEN watches: proves the builder never *opened* a device node or FIFO."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0

    def watch(self, path: str) -> None:
        assert self.libc.inotify_add_watch(self.fd, path.encode(), IN_OPEN) >= 0

    def opened(self) -> bool:
        return bool(select.select([self.fd], [], [], 0.2)[0])

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def inotify() -> Iterator[Inotify]:
    ino = Inotify()
    try:
        yield ino
    finally:
        ino.close()


# -- races in the source tree (check-then-use of a path string) ------------------------------

def test_file_swapped_for_symlink_after_listing_is_not_followed(box: Box) -> None:
    box.write("ctx/app/config", b"x" * len(SECRET))  # the copy takes st_size bytes

    def swap() -> None:
        os.unlink(box.p("ctx/app/config"))
        os.symlink(box.p("victim/secret"), box.p("ctx/app/config"))

    src = SwappingSource(box.ctx, "config", swap)
    err = attempt(lambda: copy(src, ["app"], "/app", box))
    assert src.swapped
    assert SECRET not in contents(box.rootfs), "COPY followed a symlink swapped in"
    assert isinstance(err, bctx.BuildError) and "changed while being copied" in str(err)


def test_directory_swapped_for_symlink_after_listing_is_not_followed(box: Box) -> None:
    box.write("ctx/app/sub/file", b"harmless\n")

    def swap() -> None:
        shutil.rmtree(box.p("ctx/app/sub"))
        os.symlink(box.victim, box.p("ctx/app/sub"))

    src = SwappingSource(box.ctx, "sub", swap)
    err = attempt(lambda: copy(src, ["app"], "/app", box))
    assert src.swapped
    assert SECRET not in contents(box.rootfs), "COPY followed a directory symlink swapped in"
    assert isinstance(err, bctx.BuildError)
    assert not os.path.exists(box.p("rootfs/app/sub/secret"))


def test_content_hash_does_not_follow_a_swapped_in_symlink(box: Box) -> None:
    box.write("ctx/app/config", b"harmless\n")

    def swap() -> None:
        os.unlink(box.p("ctx/app/config"))
        os.symlink(box.p("victim/secret"), box.p("ctx/app/config"))

    src = SwappingSource(box.ctx, "config", swap)
    with pytest.raises(bctx.BuildError):
        bctx.content_hash(src, ["app"], "COPY")
    assert src.swapped


def test_file_swapped_for_fifo_after_listing_does_not_hang(box: Box) -> None:
    box.write("ctx/app/data", b"harmless\n")
    fifo = box.p("ctx/app/data")

    def swap() -> None:
        os.unlink(fifo)
        os.mkfifo(fifo)

    src = SwappingSource(box.ctx, "data", swap)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            copy(src, ["app"], "/app", box)
        except BaseException as e:  # handed to the test
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    hung = t.is_alive()
    if hung:  # unblock the reader so the thread ends
        wfd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(wfd)
        t.join(10)
    assert not hung, "COPY opened a FIFO for reading and hung"
    assert errors and isinstance(errors[0], bctx.BuildError)


# -- .dockerignore must hold through symlinks in the context --------------------------------

def test_symlink_to_an_ignored_file_does_not_copy_it(box: Box) -> None:
    box.write("ctx/.env", SECRET)
    os.symlink(".env", box.p("ctx/innocent"))
    src = bctx.SourceRoot(box.ctx, Matcher([".env"]))
    for pattern in (["innocent"], ["inno*"]):
        with pytest.raises(bctx.BuildError):
            copy(src, pattern, "/x/", box)
        with pytest.raises(bctx.BuildError):
            bctx.content_hash(src, pattern, "COPY")
    assert SECRET not in contents(box.rootfs)


def test_symlink_to_an_ignored_directory_does_not_copy_it(box: Box) -> None:
    box.write("ctx/secrets/key", SECRET)
    box.write("ctx/public/readme", b"fine\n")
    os.symlink("secrets", box.p("ctx/keys"))
    os.symlink("/secrets", box.p("ctx/public/abs"))
    src = bctx.SourceRoot(box.ctx, Matcher(["secrets"]))
    with pytest.raises(bctx.BuildError):
        copy(src, ["keys/"], "/x/", box)
    with pytest.raises(bctx.BuildError):
        copy(src, ["public/abs/key"], "/y", box)
    copy(src, ["public"], "/z/", box)  # the link itself is copied, as a link
    assert os.readlink(box.p("rootfs/z/abs")) == "/secrets"
    assert SECRET not in contents(box.rootfs)


# -- symlinks out of the context / the stage root (static) ----------------------------------

def test_top_level_symlink_out_of_the_context_resolves_inside_it(box: Box) -> None:
    os.symlink(box.p("victim/secret"), box.p("ctx/shadow"))
    os.symlink("../../../../victim/secret", box.p("ctx/rel"))
    os.symlink("/etc/shadow", box.p("ctx/etcshadow"))
    src = bctx.SourceRoot(box.ctx, Matcher([]))
    for name in ("shadow", "rel", "etcshadow"):
        with pytest.raises(bctx.BuildError, match="not found"):
            copy(src, [name], "/x", box)
    os.makedirs(box.p("ctx/" + box.victim.lstrip("/")))
    box.write("ctx/" + box.victim.lstrip("/") + "/secret", b"context copy\n")
    copy(src, ["shadow"], "/x", box)  # followed, but inside the context
    with open(box.p("rootfs/x"), "rb") as fh:
        assert fh.read() == b"context copy\n"


def test_copy_from_stage_keeps_symlinks_below_and_resolves_the_top_inside(box: Box) -> None:
    stage = box.ctx  # a stage's root filesystem
    os.makedirs(box.p("ctx/out"))
    os.symlink(box.p("victim/secret"), box.p("ctx/out/link"))
    os.symlink(box.victim, box.p("ctx/out/dirlink"))
    os.symlink(box.victim, box.p("ctx/top"))
    src = bctx.SourceRoot(stage, None, keep_owner=True)
    copy(src, ["/out/"], "/all/", box)
    assert os.readlink(box.p("rootfs/all/link")) == box.p("victim/secret")
    assert os.readlink(box.p("rootfs/all/dirlink")) == box.victim
    with pytest.raises(bctx.BuildError, match="not found"):
        copy(src, ["/top/secret"], "/t", box)
    assert SECRET not in contents(box.rootfs)


# -- ADD of a local archive: the destination is not re-resolved by path -----------------------

def test_add_archive_destination_swapped_for_symlink_stays_in_root(
        box: Box, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("pwned")
        ti.size = 4
        tf.addfile(ti, io.BytesIO(b"pwn\n"))
    with open(box.p("ctx/a.tar"), "wb") as fh:
        fh.write(buf.getvalue())
    real = unpack_mod.unpack_layer

    def racing(stream: Any, dest: Any, **kw: Any) -> Any:
        # after the destination was resolved, /a becomes a symlink to the host canary
        os.rename(box.p("rootfs/a"), box.p("rootfs/a.old"))
        os.symlink(box.victim, box.p("rootfs/a"))
        return real(stream, dest, **kw)

    monkeypatch.setattr(unpack_mod, "unpack_layer", racing)
    bctx.copy_into(bctx.SourceRoot(box.ctx, Matcher([])), ["a.tar"], "/a/sub/",
                   box.rootfs, "/", bctx.CopyOptions(add=True), "ADD")
    assert os.path.isfile(box.p("rootfs/a.old/sub/pwned"))
    assert not os.path.exists(box.p("victim/sub/pwned"))


# -- case 43: /etc/passwd and the Containerfile are never opened unless regular ---------------

@pytest.mark.parametrize("kind", ["chardev", "fifo"])
def test_user_db_device_or_fifo_is_never_opened(box: Box, inotify: Inotify,
                                                kind: str) -> None:
    os.makedirs(box.p("rootfs/etc"))
    passwd = box.p("rootfs/etc/passwd")
    if kind == "fifo":
        os.mkfifo(passwd)
    else:  # /dev/null's numbers: harmless, but a watchdog's (10:130) would arm on open
        os.mknod(passwd, stat.S_IFCHR | 0o644, os.makedev(1, 3))
    inotify.watch(passwd)
    with pytest.raises(bctx.BuildError, match="not a regular file"):
        bctx.lookup_user(box.rootfs, "app")
    assert not inotify.opened(), f"the builder opened the image's /etc/passwd ({kind})"


def test_user_db_symlink_to_host_device_stays_in_root(box: Box, inotify: Inotify) -> None:
    os.makedirs(box.p("rootfs/etc"))
    os.makedirs(box.p("rootfs/dev"))
    os.mknod(box.p("rootfs/dev/watchdog"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.symlink("/dev/watchdog", box.p("rootfs/etc/passwd"))
    inotify.watch(box.p("rootfs/dev/watchdog"))
    with pytest.raises(bctx.BuildError, match="not a regular file"):
        bctx.lookup_user(box.rootfs, "app")
    assert not inotify.opened()


def test_containerfile_device_is_never_opened(box: Box, inotify: Inotify) -> None:
    path = box.p("ctx/Containerfile")
    os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 3))
    inotify.watch(path)
    with pytest.raises(ConfigError, match="not a regular file"):
        bctx.read_containerfile(path)
    assert not inotify.opened()
