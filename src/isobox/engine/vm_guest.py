"""Looking into a running micro-VM (``--isolation vm``) through its guest agent, for ``cp``,
``stats`` and ``top``: each helper runs an applet of the agent's own static busybox
(``"busybox": true`` in the EXEC request) chrooted into the workload's root, so paths resolve
as the workload sees them (``..`` and absolute symlinks stay inside its root) and images
without ``tar`` or ``ps`` work too.

The guest is not trusted: its output is parsed defensively and whatever it sends for ``cp``
is re-written and extracted on the host by the layer unpacker (see :mod:`engine.copy`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from isobox.engine.state import ContainerRow
from isobox.errors import ConflictError, SystemSetupError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.vm.agent_client import AgentConnection, ExecSession

_MAX_CAPTURE = 16 << 20  # a helper's captured output (ps, meminfo, stat) stays small
_STDERR_TAIL = 4096      # what run_tool keeps of a helper's stderr (for error messages)
TOOL_ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"]


def is_vm(row: ContainerRow) -> bool:
    return row.options.get("isolation") == "vm"


def require_running(engine: Engine, row: ContainerRow, verb: str) -> None:
    status = engine.effective_status(row)
    if status != "running":
        raise ConflictError(f"container {row.name} is a VM ({status}): {verb} goes through "
                            f"its guest agent, so the VM must be running (start it first)")


@contextlib.contextmanager
def agent(engine: Engine, row: ContainerRow, timeout: float = 10.0
          ) -> Iterator[AgentConnection]:
    """A connection to the VM's guest agent on a free control port (not ctl0: it is kept
    for the runtime's control verbs)."""
    from isobox.vm.runtime.control import agent_session
    from isobox.vm.runtime.state import VMStore

    try:
        st = VMStore(engine.layout.vm_runtime_root).load(row.id)
    except Exception as e:  # any failure: no VM to talk to
        raise ConflictError(f"container {row.name}: no running VM ({e})") from None
    if st.status() != "running":
        raise ConflictError(f"container {row.name}: its VM is {st.status()}")
    with agent_session(st, control=False, timeout=timeout) as conn:
        yield conn


def resize_workload(state_dir: str, rows: int, cols: int) -> None:
    """The main workload's terminal size (RESIZE on session 0); best effort, like conmon's."""
    import os

    from isobox.errors import IsoboxError
    from isobox.vm.agent_protocol import MAIN_SESSION
    from isobox.vm.runtime.control import agent_session
    from isobox.vm.runtime.state import VMStore

    try:
        st = VMStore(os.path.dirname(state_dir)).load(os.path.basename(state_dir))
        if st.status() != "running":
            return
        # no waiting for a free control port: a resize is dropped rather than stall the relay
        with agent_session(st, control=False, timeout=2.0, wait=0) as conn:
            conn.resize(MAIN_SESSION, rows, cols)
    except (IsoboxError, OSError):
        pass


@dataclass(frozen=True)
class ToolResult:
    code: int
    stdout: bytes
    stderr: bytes        # its last _STDERR_TAIL bytes
    stderr_dropped: int  # bytes cut before them

    def error(self) -> str:
        text = self.stderr.decode(errors="replace").strip()
        if self.stderr_dropped:
            text = f"[{self.stderr_dropped} earlier bytes truncated] {text}"
        return text or f"exit status {self.code}"


def start_tool(conn: AgentConnection, args: list[str], *,
               on_stdout: Callable[[bytes], None] | None = None,
               on_stderr: Callable[[bytes], None] | None = None,
               stdin: bool = False) -> ExecSession:
    """Start busybox applet ``args[0]`` in the workload's root (output without a sink: the
    session's capped buffers)."""
    from isobox.vm.agent_client import ExecError

    try:
        return conn.exec(args, env=TOOL_ENV, stdin=stdin, busybox=True,
                         on_stdout=on_stdout, on_stderr=on_stderr)
    except ExecError as e:
        raise SystemSetupError(f"guest agent: cannot run busybox {args[0]}: {e}") from None


def _capped(buf: bytearray) -> Callable[[bytes], None]:
    def sink(data: bytes) -> None:
        if len(buf) + len(data) > _MAX_CAPTURE:
            raise SystemSetupError(f"guest output over {_MAX_CAPTURE} bytes")
        buf.extend(data)
    return sink


def run_tool(conn: AgentConnection, args: list[str], timeout: float = 30.0) -> ToolResult:
    """Run a busybox applet in the guest to completion, capturing its output (stdout up to
    _MAX_CAPTURE, else SystemSetupError; the last _STDERR_TAIL bytes of stderr)."""
    from isobox.vm.agent_client import OutputTail

    out = bytearray()
    err = OutputTail(_STDERR_TAIL)
    session = start_tool(conn, args, on_stdout=_capped(out), on_stderr=err.add)
    session.close_stdin()
    code = session.wait(timeout)
    return ToolResult(code, bytes(out), bytes(err), err.dropped)


def feed_stdin(session: ExecSession, stream: BinaryIO, timeout: float) -> int:
    """Send ``stream`` to the session's stdin (then EOF) and wait for its exit code;
    ``timeout`` bounds each wait for the guest (to take more stdin, to exit)."""
    from isobox.vm.agent_client import send_stream

    if not send_stream(session, stream, timeout):
        assert session.exit_code is not None  # it stopped reading: its error says why
        return session.exit_code
    return session.wait(timeout)


# ------------------------------------------------------------------------ stats

def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` → bytes per field."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    from isobox.engine.stats import net_dev_lines

    try:
        return net_dev_lines(text.splitlines()[2:])
    except (ValueError, IndexError):
        return {}


def guest_figures(engine: Engine, row: ContainerRow) -> dict[str, Any]:
    """The guest's own view: memory (total/used/available, bytes: used = total - available,
    as ``free`` computes it) and its NICs' counters; ``{"error": …}`` when unreachable."""
    try:
        with agent(engine, row, timeout=5.0) as conn:
            mem = run_tool(conn, ["cat", "/proc/meminfo"], timeout=10.0)
            net = run_tool(conn, ["cat", "/proc/net/dev"], timeout=10.0)
    except Exception as e:  # stats never fail for a busy guest
        return {"error": str(e)}
    info = parse_meminfo(mem.stdout.decode(errors="replace"))
    total = info.get("MemTotal", 0)
    avail = info.get("MemAvailable", info.get("MemFree", 0))
    return {"memory": {"total": total, "available": avail, "free": info.get("MemFree", 0),
                       "used": max(total - avail, 0), "cached": info.get("Cached", 0)},
            "networks": parse_net_dev(net.stdout.decode(errors="replace"))}


# ------------------------------------------------------------------------ top

def guest_processes(engine: Engine, row: ContainerRow, ps_args: tuple[str, ...]
                    ) -> tuple[list[str], list[list[str]]]:
    """busybox ``ps`` in the guest (``ps_args`` are busybox's, e.g. ``-o pid,user,args``;
    Docker's default ``-ef`` means none): the guest's processes without kernel threads, the
    agent (PID 1) and this ``ps`` itself."""
    args = ["ps"] if not ps_args or list(ps_args) == ["-ef"] else ["ps", *ps_args]
    with agent(engine, row) as conn:
        res = run_tool(conn, args)
    if res.code != 0:
        raise SystemSetupError(f"ps in the guest: {res.error()}")
    lines = res.stdout.decode(errors="replace").splitlines()
    if not lines:
        return [], []
    titles = lines[0].split()
    if "PID" not in titles:
        raise SystemSetupError("ps in the guest printed no PID column")
    col = titles.index("PID")
    last = titles[-1]
    out = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) <= col or not fields[col].isdigit() or fields[col] == "1":
            continue
        if last in ("COMMAND", "ARGS", "CMD") and len(fields) == len(titles):
            cmd = fields[-1]
            if cmd.startswith("[") and cmd.endswith("]"):
                continue  # a kernel thread
            if cmd.startswith("{busybox} "):
                continue  # the agent's own tools (this ps): comm busybox, argv[0] the applet
        out.append(fields)
    return titles, out
