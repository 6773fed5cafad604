"""`-u`, `-w` and HOME through the real CLI, as Docker/podman with runc: HOME from the image's
/etc/passwd, the primary gid first among the supplementary groups, `-u :GID`, and a
workdir only root can enter (`-u 1000 -w /root`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
from engine_helpers import Isobox

from harness import unique_id

# alice (1000) is listed in her own primary group too: no duplicate gid may come of it.
CONTAINERFILE = """FROM busybox
RUN echo 'alice:x:1000:1000:Alice:/home/alice:/bin/sh' >> /etc/passwd \\
 && echo 'alice:x:1000:alice' >> /etc/group \\
 && echo 'staff:x:50:bob,alice' >> /etc/group \\
 && echo 'wheel:x:10:root' >> /etc/group \\
 && sed -i 's/^root:x:0:$/root:x:0:root/' /etc/group \\
 && mkdir -p /home/alice && chmod 700 /root
"""


@pytest.fixture(scope="module")
def users_image(engine_root: str) -> Iterator[str]:
    ib = Isobox(engine_root)
    tag = unique_id("users").lower()
    with tempfile.TemporaryDirectory() as ctx:
        with open(os.path.join(ctx, "Containerfile"), "w") as f:
            f.write(CONTAINERFILE)
        ib("build", "-q", "-t", tag, ctx, timeout=120)
    yield tag
    ib.remove_all_containers()
    ib("rmi", "-f", tag, check=False)


def out(ib: Isobox, *args: str) -> str:
    return ib("run", "--rm", "--network", "none", *args).stdout.strip()


def sh(ib: Isobox, *args: str) -> str:
    """`run` ARGS... sh -c SCRIPT: the last argument is the script."""
    *opts, script = args
    return out(ib, *opts, "sh", "-c", script)


def test_home_from_the_images_passwd(isobox: Isobox, users_image: str) -> None:
    env = out(isobox, "busybox", "env").splitlines()
    assert [e for e in env if e.startswith("HOME=")] == ["HOME=/root"]
    assert sh(isobox, "-u", "1234", "busybox", "echo $HOME") == "/"
    assert sh(isobox, "-u", "alice", users_image, "echo $HOME") == "/home/alice"
    assert sh(isobox, "-u", "1000:50", users_image, "echo $HOME") == "/home/alice"
    assert sh(isobox, "-e", "HOME=/x", "-u", "alice", users_image, "echo $HOME") == "/x"


GROUPS = "grep ^Groups: /proc/self/status"  # the kernel's list; `id -G` adds the egid anyway


def groups(ib: Isobox, *args: str) -> list[int]:
    """The supplementary groups, sorted (the kernel sorts them; the order given is checked
    in test_spec.py::test_user_lookup)."""
    return [int(g) for g in sh(ib, *args, GROUPS).split()[1:]]


def test_supplementary_groups_start_with_the_primary_gid(isobox: Isobox,
                                                          users_image: str) -> None:
    assert groups(isobox, "-u", "1000:2001", "busybox") == [2001]
    assert groups(isobox, "-u", "1234", "busybox") == [0]
    assert groups(isobox, "busybox") == [0]
    assert groups(isobox, users_image) == [0, 10]  # root, listed in group 0: no second 0
    assert groups(isobox, "-u", "alice", users_image) == [50, 1000]
    assert groups(isobox, "-u", "1000", users_image) == [50, 1000]
    assert groups(isobox, "-u", "alice:staff", users_image) == [50]
    assert sh(isobox, "-u", "alice", users_image, "id") == \
        "uid=1000(alice) gid=1000(alice) groups=50(staff),1000(alice)"


def test_empty_user_part_is_uid_0(isobox: Isobox, users_image: str) -> None:
    assert sh(isobox, "-u", ":1000", "busybox",
              f'echo "$(id -u) $(id -g) $HOME"; {GROUPS}').split() == \
        ["0", "1000", "/root", "Groups:", "1000"]
    assert groups(isobox, "-u", ":staff", users_image) == [50]
    before = isobox.ids()
    for bad, needle in ((":", "invalid user ':'"),
                        (":nogrp", "unable to find group nogrp: no matching entries")):
        p = isobox("run", "--rm", "-u", bad, "busybox", "true", check=False)
        assert p.returncode == 125 and needle in p.stderr, p
        assert "Traceback" not in p.stderr
    assert isobox.ids() == before


def test_workdir_only_root_can_enter(isobox: Isobox, users_image: str) -> None:
    # runc enters the cwd before the user switch: /root (0700) works for uid 1000.
    assert sh(isobox, "-u", "1000", "-w", "/root", "busybox",
              'pwd; id -u; ls . >/dev/null 2>&1 || echo unreadable') == \
        "/root\n1000\nunreadable"
    assert out(isobox, "-u", "alice", "-w", "/root", users_image, "pwd") == "/root"


def test_exec_home_groups_and_workdir(isobox: Isobox, users_image: str) -> None:
    name = unique_id("u")
    isobox("run", "-d", "--name", name, "--network", "none", users_image, "sleep", "60")
    script = 'echo "$HOME|$(sed -n "s/^Groups:[[:space:]]*//p" /proc/self/status)|$(pwd)"'
    assert isobox("exec", name, "sh", "-c", script).stdout.strip() == "/root|0 10 |/"
    got = isobox("exec", "-u", "alice", "-w", "/root", name, "sh", "-c", script).stdout
    assert got.strip() == "/home/alice|50 1000 |/root"
    got = isobox("exec", "-u", ":50", "-e", "HOME=/h", name, "sh", "-c", script).stdout
    assert got.strip() == "/h|50 |/"
    isobox("rm", "-f", name)
