"""The importer of isobox-runtime's code bundle: compiled into the bundle by
scripts/build-code-bundle and run by the launcher (scripts/launcher) in its own globals,
with ``BUNDLE`` the bundle's path and ``BUNDLE_FD`` open on it, so the launcher's source
stays short (Python compiles a script on every start: ~40 µs for the launcher, ~350 µs
with this class in it).

A bundled module is found by a dict lookup, checked with one ``stat`` of its source (mtime
and size, as .pyc files are) and read with one ``pread``. A module not in the bundle, or
whose source changed since it was built, is left to the normal import path.

A forked child closes the descriptor at once (the container's init must hold none on a
host file) and opens the bundle for each module it still imports, as long as it is the
same file (``make`` may have replaced it since).
"""

import marshal
import posix
import sys

BUNDLE: str  # both set by the launcher, in whose globals this runs
BUNDLE_FD: int


class CodeBundle:
    def __init__(self, path: str, fd: int) -> None:
        head = posix.pread(fd, 24, 0)
        loader_size = int.from_bytes(head[12:16], "little")
        index_size = int.from_bytes(head[16:24], "little")
        st = posix.fstat(fd)
        self.path, self.fd, self.identity = path, fd, (st.st_dev, st.st_ino, st.st_mtime_ns)
        self.index = marshal.loads(posix.pread(fd, index_size, 24 + loader_size))
        self.base = 24 + loader_size + index_size
        posix.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        if self.fd >= 0:
            posix.close(self.fd)
            self.fd = -1

    def _read(self, length: int, offset: int) -> bytes | None:
        if self.fd >= 0:
            return posix.pread(self.fd, length, offset)
        try:
            fd = posix.open(self.path, posix.O_RDONLY | posix.O_CLOEXEC)
        except OSError:
            return None
        try:
            st = posix.fstat(fd)
            if (st.st_dev, st.st_ino, st.st_mtime_ns) != self.identity:
                return None
            return posix.pread(fd, length, offset)
        finally:
            posix.close(fd)

    def find_spec(self, name: str, path: object = None, target: object = None) -> object:
        entry = self.index.get(name)
        if entry is None:
            return None
        is_package, origin, mtime_ns, size, offset, length = entry
        try:
            st = posix.stat(origin)
        except OSError:
            return None
        if st.st_mtime_ns != mtime_ns or st.st_size != size:
            return None
        data = self._read(length, self.base + offset)
        if data is None:
            return None
        spec = type(sys.__spec__)(name, self, origin=origin, is_package=is_package)
        spec.has_location = True
        spec.loader_state = data
        if is_package:
            spec.submodule_search_locations = [origin.rpartition("/")[0]]
        return spec

    def create_module(self, spec: object) -> None:
        return None

    def exec_module(self, module: object) -> None:
        code = marshal.loads(module.__spec__.loader_state)  # type: ignore[attr-defined]
        module.__spec__.loader_state = None  # type: ignore[attr-defined]
        exec(code, module.__dict__)


sys.meta_path.insert(0, CodeBundle(BUNDLE, BUNDLE_FD))  # noqa: F821
