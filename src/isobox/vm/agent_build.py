"""Build the guest agent (guest/agent.c) into a static binary, cached by the hash of the
source and the compiler's identity (its resolved path, size and mtime: an upgraded compiler or
an edited agent rebuilds; no ``cc --version`` on every VM start).

musl (``musl-gcc``, Debian's musl-tools) is preferred to glibc: the static agent is 108 KB
instead of 875 KB, and under TCG every megabyte of initramfs costs the guest ~0.1 s of boot
before ``/init`` runs (benchmarks/vm_boot.py). Without musl-gcc, ``cc`` with glibc."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from isobox.atomicfile import atomic_path
from isobox.errors import SystemSetupError

AGENT_SOURCE = Path(__file__).parent / "guest" / "agent.c"
AGENT_NAME = "isobox-agent"
# -Werror is for the tests (tests/vm/test_vm_agent.py): a newer compiler's new warning must
# not stop a user's VM from starting.
CFLAGS = ("-std=c11", "-Wall", "-Wextra", "-static", "-O2", "-s")
_SETUP_HINT = "install gcc and libc6-dev, or musl-tools (`make deps` does)"


def _compiler() -> str:
    cc = shutil.which("musl-gcc") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemSetupError(f"no C compiler (cc) to build the VM guest agent: {_SETUP_HINT}")
    return cc


def _compiler_identity(cc: str) -> bytes:
    import os

    real = os.path.realpath(cc)
    try:
        st = os.stat(real)
    except OSError as e:
        raise SystemSetupError(f"C compiler {cc}: {e.strerror}: {_SETUP_HINT}") from None
    return f"{real}:{st.st_size}:{st.st_mtime_ns}".encode()


def agent_binary(cache_dir: Path) -> Path:
    """The static agent binary for the current source and compiler (built when missing)."""
    try:
        source = AGENT_SOURCE.read_bytes()
    except OSError as e:
        raise SystemSetupError(f"guest agent source {AGENT_SOURCE}: {e.strerror}") from None
    cc = _compiler()
    key = hashlib.sha256()
    for part in (source, _compiler_identity(cc), " ".join(CFLAGS).encode()):
        key.update(hashlib.sha256(part).digest())
    out_dir = cache_dir / "agent" / key.hexdigest()
    out = out_dir / AGENT_NAME
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(str(out), 0o755) as tmp:
        proc = subprocess.run([cc, *CFLAGS, "-o", tmp, str(AGENT_SOURCE)],
                              capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise SystemSetupError(f"compiling the VM guest agent ({AGENT_SOURCE}) failed "
                                   f"with exit code {proc.returncode}: {tail}\n"
                                   f"(a static build needs gcc and libc6-dev: {_SETUP_HINT})")
    return out
