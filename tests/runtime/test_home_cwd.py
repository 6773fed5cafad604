"""HOME and the cwd of the container process as runc sets them, through the real binary:
HOME from the container's own /etc/passwd when process.env has none (init and exec), and
the cwd entered before the user switch (a 0700 directory works for a non-root user)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
from rt_helpers import expect_failure

from harness import RUN_PREFIX, Bundle, Runtime, unique_id

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "alice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
          "nohome:x:1001:1001:no home field::/bin/sh\n")


def run(runtime: Runtime, bundle: Bundle, *args: str) -> str:
    bundle.set_args(*args)
    return runtime("run", "--bundle", bundle.path, unique_id()).out


def write_passwd(bundle: Bundle, text: str = PASSWD) -> None:
    path = os.path.join(bundle.rootfs, "etc", "passwd")
    os.remove(path)
    with open(path, "w") as f:
        f.write(text)


def home_of(runtime: Runtime, bundle: Bundle, uid: int, env: list[str] | None) -> str:
    bundle.config["process"]["user"] = {"uid": uid, "gid": uid}
    if env is None:
        bundle.config["process"].pop("env", None)
    else:
        bundle.config["process"]["env"] = env
    return run(runtime, bundle, "/bin/sh", "-c", 'echo "${HOME-unset}"').strip()


def test_home_from_the_containers_passwd(runtime: Runtime, bundle: Bundle) -> None:
    write_passwd(bundle)
    path = ["PATH=/bin"]
    assert home_of(runtime, bundle, 0, path) == "/root"
    assert home_of(runtime, bundle, 1000, path) == "/home/alice"
    assert home_of(runtime, bundle, 1234, path) == "/"  # no entry
    assert home_of(runtime, bundle, 1001, path) == ""  # the entry's (empty) home, as runc
    assert home_of(runtime, bundle, 1000, [*path, "HOME=/x"]) == "/x"  # explicit HOME wins
    assert home_of(runtime, bundle, 1000, ["HOME=/x", *path, "HOME="]) == "/home/alice"
    assert home_of(runtime, bundle, 0, None) == "unset"  # no env at all: runc adds nothing
    bundle.config["process"]["env"] = path
    bundle.save()
    env = run(runtime, bundle, "env").split()
    assert sorted(env) == ["HOME=/root", "PATH=/bin"]  # exactly one HOME, appended


def test_home_is_read_inside_the_container_root(runtime: Runtime, bundle: Bundle) -> None:
    # An absolute symlink resolves in the container's root, never on the host.
    marker = f"/{unique_id('pw')}"
    assert not os.path.exists(marker)
    with open(os.path.join(bundle.rootfs, marker.lstrip("/")), "w") as f:
        f.write("root:x:0:0::/from-the-container:/bin/sh\n")
    passwd = os.path.join(bundle.rootfs, "etc", "passwd")
    os.remove(passwd)
    os.symlink(marker, passwd)
    assert home_of(runtime, bundle, 0, ["PATH=/bin"]) == "/from-the-container"
    os.remove(passwd)  # a FIFO is never opened (no hang): no entry, "/"
    os.mkfifo(passwd)
    assert home_of(runtime, bundle, 0, ["PATH=/bin"]) == "/"
    os.remove(passwd)  # no /etc/passwd at all
    assert home_of(runtime, bundle, 0, ["PATH=/bin"]) == "/"
    with open(passwd, "w") as f:  # a huge uid field is no crash
        f.write("x:x:" + "9" * 5000 + ":0::/nope:/bin/sh\nroot:x:0:0::/r:/bin/sh\n")
    assert home_of(runtime, bundle, 0, ["PATH=/bin"]) == "/r"


def test_cwd_entered_before_the_user_switch(runtime: Runtime, bundle: Bundle) -> None:
    os.chmod(os.path.join(bundle.rootfs, "root"), 0o700)
    bundle.config["process"]["user"] = {"uid": 1000, "gid": 1000}
    bundle.config["process"]["cwd"] = "/root"
    assert run(runtime, bundle, "sh", "-c", "pwd; id -u").split() == ["/root", "1000"]
    bundle.config["process"]["cwd"] = "/no/such/dir"
    bundle.set_args("true")
    expect_failure(runtime, unique_id(), needle=("process.cwd '/no/such/dir'",
                                                 "No such file or directory"),
                   bundle=bundle.path)


@pytest.fixture
def running(runtime: Runtime, bundle: Bundle) -> Iterator[str]:
    write_passwd(bundle)
    os.chmod(os.path.join(bundle.rootfs, "root"), 0o700)
    bundle.config["process"]["env"] = ["PATH=/bin"]
    bundle.set_args("sleep", "60")
    cid = unique_id()
    runtime("run", "-d", "--bundle", bundle.path, cid)
    yield cid
    runtime("delete", "--force", cid, check=False)


def test_exec_home_and_cwd(runtime: Runtime, running: str) -> None:
    def sh(*opts: str) -> str:
        return runtime("exec", *opts, running, "sh", "-c", 'echo "$HOME $(pwd)"').out.strip()

    assert sh() == "/root /"
    assert sh("-u", "1000:1000") == "/home/alice /"
    assert sh("-u", "4321") == "/ /"
    assert sh("-e", "HOME=/y", "-u", "1000") == "/y /"
    assert sh("-u", "1000", "--cwd", "/root") == "/home/alice /root"
    res = runtime("exec", "--cwd", "/nope", running, "true", check=False)
    assert res.code != 0 and "process.cwd '/nope'" in res.err


_RETRY = """
import os, sys
from isobox.errors import SystemSetupError
from isobox.runtime.process import enter_cwd, try_enter_cwd
d, missing = sys.argv[1], sys.argv[2]
os.setgroups([]); os.setresgid(1000, 1000, 1000); os.setresuid(1000, 1000, 1000)
print(try_enter_cwd(d))       # EACCES: not final, tried again after the switch
print(try_enter_cwd("/"), os.getcwd())
try:
    try_enter_cwd(missing)
except SystemSetupError as e:
    print(e)
try:
    enter_cwd(d)
except SystemSetupError as e:
    print(e)
"""


def test_try_enter_cwd_leaves_eacces_for_after_the_switch() -> None:
    base = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}-cwd-")
    try:
        os.chmod(base, 0o755)  # reachable by uid 1000, unlike pytest's tmp_path
        d = os.path.join(base, "private")
        os.mkdir(d, 0o700)
        missing = os.path.join(base, "missing")
        out = subprocess.run([sys.executable, "-c", _RETRY, d, missing], capture_output=True,
                             text=True, check=True).stdout.splitlines()
    finally:
        shutil.rmtree(base)
    assert out == ["False", "True /", f"process.cwd {missing!r}: No such file or directory",
                   f"process.cwd {d!r}: Permission denied"]
