"""The importer of isobox-runtime's code bundle: compiled into the bundle by
scripts/build-code-bundle and run by the launcher (scripts/launcher) in its own globals,
with ``BUNDLE`` the bundle's path and ``BUNDLE_FD`` open on it, so the launcher's source
stays short (Python compiles a script on every start: ~40 µs for the launcher, ~350 µs
with this class in it).

A bundled module is found by a dict lookup, checked with one ``stat`` of its source (mtime
and size: the check .pyc files get) and read with one ``pread``. A module not in the bundle,
whose source changed since it was built, or whose code cannot be read back is left to the
normal import path; a bundle that does not add up (truncated, another file written over it)
is not used at all: the launcher catches the error.

A forked child closes the descriptor at once (the container's init must hold none on a
host file) and opens the bundle for each module it still imports, as long as it is the
same file (``make`` may have replaced it since).

Only what the runtime needs is implemented: no ``get_code``/``get_source`` and no resource
reader (tracebacks read the source files by name, as usual).
"""

import marshal
import posix
import sys

BUNDLE: str  # both set by the launcher, in whose globals this runs
BUNDLE_FD: int


def _identity(st: posix.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


# (not type(compile(...)): the first compile() of a process sets up the AST types, 1.5 ms)
_CodeType = type(_identity.__code__)


class CodeBundle:
    def __init__(self, path: str, fd: int) -> None:
        st = posix.fstat(fd)
        head = posix.pread(fd, 24, 0)
        loader_size = int.from_bytes(head[12:16], "little")
        index_size = int.from_bytes(head[16:24], "little")
        self.base = 24 + loader_size + index_size
        if len(head) != 24 or self.base > st.st_size:
            raise ValueError(f"{path}: truncated")
        self.index = marshal.loads(posix.pread(fd, index_size, 24 + loader_size))
        if self.base + max((e[4] + e[5] for e in self.index.values()), default=0) != st.st_size:
            raise ValueError(f"{path}: truncated or overwritten")
        self.path, self.fd, self.identity = path, fd, _identity(st)
        posix.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        if self.fd >= 0:
            posix.close(self.fd)
            self.fd = -1

    def _read(self, length: int, offset: int) -> bytes | None:
        if self.fd >= 0:
            fd = self.fd
        else:
            try:  # (O_NONBLOCK: never wait on a fifo at that path)
                fd = posix.open(self.path, posix.O_RDONLY | posix.O_CLOEXEC | posix.O_NONBLOCK
                                | posix.O_NOFOLLOW)
            except OSError:
                return None
        try:
            if _identity(posix.fstat(fd)) != self.identity:
                return None
            return posix.pread(fd, length, offset)
        finally:
            if fd != self.fd:
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
        if data is None or len(data) != length:
            return None
        try:
            code = marshal.loads(data)
        except (EOFError, ValueError, TypeError):
            return None
        if type(code) is not _CodeType:
            return None
        spec = type(sys.__spec__)(name, self, origin=origin, is_package=is_package)
        spec.has_location = True
        spec.loader_state = code
        if is_package:
            spec.submodule_search_locations = [origin.rpartition("/")[0]]
        return spec

    def create_module(self, spec: object) -> None:
        return None

    def exec_module(self, module: object) -> None:
        exec(module.__spec__.loader_state, module.__dict__)  # type: ignore[attr-defined]


sys.meta_path.insert(0, CodeBundle(BUNDLE, BUNDLE_FD))  # noqa: F821
