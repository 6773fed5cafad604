"""``max-file`` log generations while conmon runs: a small library preloaded into conmon.

conmon 2.1.6 rotates by renaming ``<log>.tmp`` over ``<log>`` (the old content is lost) and
has no option to keep a backup. ``logrot_shim.c`` wraps ``rename()`` inside conmon: at that
exact rotation it shifts ``<log>.k`` to ``<log>.k+1`` and hard-links the live log as
``<log>.1`` first, as Docker's json-file driver does. No process is added (the library is a
few KiB mapped into conmon), it works with no CLI running, and no rotation can slip past it.

The library is compiled once with the host's C compiler into ``/var/cache/isobox`` (a file
named by the source's hash, so an updated source is rebuilt and concurrent builders agree).
"""

from __future__ import annotations

import os
import stat

from isobox.errors import SystemSetupError

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "logrot_shim.c")
CACHE_DIR = "/var/cache/isobox"
PATH_VAR = "ISOBOX_LOGROT_PATH"
FILES_VAR = "ISOBOX_LOGROT_FILES"
PRELOAD_VAR = "ISOBOX_LOGROT_PRELOAD"    # the shell wrapper sets LD_PRELOAD from it at exec


def shim_path(cache_dir: str = CACHE_DIR) -> str:
    """The compiled library, built now if missing. Raises SystemSetupError without a C
    compiler, or when the cache directory could be changed by someone other than root."""
    import hashlib  # here, not at the top: every `isobox run` imports this module
    import shutil
    import subprocess
    import tempfile

    with open(SOURCE, "rb") as f:
        source = f.read()
    digest = hashlib.sha256(source).hexdigest()[:16]
    target = os.path.join(cache_dir, f"logrot-{digest}.so")
    _check_safe(cache_dir, create=True)
    if os.path.exists(target):
        _check_safe(target)
        return target
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemSetupError("--log-opt max-file needs a C compiler (Debian package gcc) "
                               f"to build {os.path.basename(SOURCE)}, the conmon add-on that "
                               "keeps rotated logs")
    fd, tmp = tempfile.mkstemp(prefix=".logrot-", suffix=".so", dir=cache_dir)
    os.close(fd)
    try:
        res = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", tmp, SOURCE, "-ldl"],
                             capture_output=True, text=True, timeout=120, check=False)
        if res.returncode != 0:
            raise SystemSetupError(f"cannot build {SOURCE}: "
                                   f"{(res.stderr or res.stdout).strip()[:500]}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return target


def _check_safe(path: str, create: bool = False) -> None:
    """A library preloaded into a root process must be changeable by root only."""
    if create:
        os.makedirs(path, mode=0o755, exist_ok=True)
    st = os.lstat(path)
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or (
            not stat.S_ISDIR(st.st_mode) and not stat.S_ISREG(st.st_mode)):
        raise SystemSetupError(f"{path}: must be owned by uid {os.geteuid()} and writable by "
                               "it only (it holds a library loaded into conmon)")


def monitor_env(log_path: str, max_size: int, max_file: int) -> dict[str, str]:
    """Environment for conmon that keeps ``max_file`` generations of ``log_path`` (empty
    when conmon's own rotation already is the whole story: no size limit, or one file)."""
    if max_size <= 0 or max_file < 2:
        return {}
    if not os.path.isabs(log_path):
        raise SystemSetupError(f"log path {log_path!r} must be absolute")
    return {PRELOAD_VAR: shim_path(), PATH_VAR: log_path, FILES_VAR: str(max_file)}
