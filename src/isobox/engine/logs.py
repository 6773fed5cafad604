"""Container logs as conmon writes them: the CRI ``k8s-file`` format.

One record a line: ``2026-11-27T02:47:20.123456789+00:00 stdout F text`` (``P`` marks a
partial line, continued by the next record of the same stream). conmon stamps local time
with its offset and opens the log with O_APPEND.

Generations, oldest first: ``<log>.N`` … ``<log>.1``, then ``<log>`` (Docker's json-file
names). conmon 2.1.6 rotates at ``--log-size-max`` by renaming a fresh ``<log>.tmp`` over
``<log>``; with ``max-file`` > 1 the library of engine/logrotate.py, preloaded into conmon,
shifts the generations and links the live log as ``<log>.1`` just before that rename. At a
(re)start :func:`rotate_generations` does the same shift with a rename, so conmon, whose size
count starts at 0, starts a fresh file. Readers open all generations as one consistent
snapshot (retrying when a rotation moved names meanwhile) and read an inode only once.
"""

from __future__ import annotations

import collections
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, BinaryIO

from isobox.engine.mountspec import ram_in_bytes
from isobox.errors import ConfigError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine


@dataclass
class LogRecord:
    """One line of output. ``time`` is the timestamp as conmon wrote it (nanoseconds and
    offset kept); ``data`` ends in ``\\n`` unless the stream ended mid-line."""

    time: datetime | str
    stream: str
    data: bytes
    ns: int = 0                     # ``time`` as nanoseconds since the epoch


_TS_RE = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)?$")


def parse_timestamp(text: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 time (``Z`` or ``±hh:mm``; none = UTC)."""
    m = _TS_RE.match(text)
    if not m:
        raise ValueError(f"bad timestamp {text!r}")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac = int((m.group(7) or "").ljust(9, "0") or 0)
    off = _offset(m.group(8))
    secs = int(datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp()) - off
    return secs * 1_000_000_000 + frac


def _offset(zone: str | None) -> int:
    if not zone or zone == "Z":
        return 0
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    return sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)


def format_ns(ns: int) -> str:
    """RFC 3339 with nine fraction digits in UTC, as ``docker logs -t`` prints it."""
    secs, frac = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{frac:09d}Z"


def format_record(rec: LogRecord, timestamps: bool) -> bytes:
    if not timestamps:
        return rec.data
    ns = rec.ns
    if not ns:
        ns = (parse_timestamp(rec.time) if isinstance(rec.time, str)
              else int(rec.time.timestamp() * 1_000_000_000))
    return format_ns(ns).encode() + b" " + rec.data


# -- parsing ------------------------------------------------------------------------------

class _Joiner:
    """Turns raw records into lines: joins ``P`` records with the next of their stream."""

    def __init__(self) -> None:
        self.pending: dict[str, tuple[str, int, list[bytes]]] = {}

    def feed(self, line: bytes) -> LogRecord | None:
        parts = line.rstrip(b"\n").split(b" ", 3)
        if len(parts) < 3:
            return None                        # not a record (torn or foreign line)
        stamp = parts[0].decode("ascii", "replace")
        stream = parts[1].decode("ascii", "replace")
        tag = parts[2]
        data = parts[3] if len(parts) == 4 else b""
        try:
            ns = parse_timestamp(stamp)
        except ValueError:
            return None
        if tag not in (b"P", b"F"):
            # an older writer without the tag: the whole rest is the line
            data, tag = b" ".join(parts[2:]), b"F"
        if stream in self.pending:
            stamp, ns, chunks = self.pending.pop(stream)
        else:
            chunks = []
        chunks.append(data)
        if tag == b"P":
            self.pending[stream] = (stamp, ns, chunks)
            return None
        return LogRecord(stamp, stream, b"".join(chunks) + b"\n", ns)

    def flush(self) -> list[LogRecord]:
        """Lines still open (the stream ended without a newline), oldest first."""
        out = [LogRecord(stamp, stream, b"".join(chunks), ns)
               for stream, (stamp, ns, chunks) in self.pending.items()]
        self.pending.clear()
        out.sort(key=lambda r: r.ns)
        return out


def generations(path: str) -> list[str]:
    """The log's files oldest first: ``<log>.N`` … ``<log>.1``, then ``<log>``."""
    directory, base = os.path.split(os.path.abspath(path))
    numbered: list[tuple[int, str]] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if name.startswith(base + "."):
            suffix = name[len(base) + 1:]
            if suffix.isdigit():
                numbered.append((int(suffix), os.path.join(directory, name)))
    numbered.sort(reverse=True)
    return [p for _, p in numbered] + [path]


class _Filter:
    def __init__(self, stdout: bool, stderr: bool, since: float | None,
                 until: float | None) -> None:
        self.streams = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
        self.since = None if since is None else int(since * 1_000_000_000)
        self.until = None if until is None else int(until * 1_000_000_000)

    def keep(self, rec: LogRecord) -> bool:
        if rec.stream not in self.streams:
            return False
        if self.since is not None and rec.ns < self.since:
            return False
        return self.until is None or rec.ns <= self.until


def _read_file_lines(f: Iterable[bytes], joiner: _Joiner) -> Iterator[LogRecord]:
    for line in f:
        rec = joiner.feed(line)
        if rec is not None:
            yield rec


def _key(st: os.stat_result) -> tuple[int, int]:
    return (st.st_dev, st.st_ino)


def _name_keys(path: str) -> list[tuple[str, tuple[int, int] | None]]:
    out: list[tuple[str, tuple[int, int] | None]] = []
    for gen in generations(path):
        try:
            out.append((gen, _key(os.stat(gen))))
        except FileNotFoundError:
            out.append((gen, None))
    return out


def open_generations(path: str, attempts: int = 50) -> list[BinaryIO]:
    """Every generation open, oldest first, one file per inode, as a consistent snapshot:
    the names are listed again after opening and the whole is retried when a rotation
    moved them meanwhile (it would otherwise skip or repeat a generation)."""
    files: list[BinaryIO] = []
    for _ in range(attempts):
        files = []
        opened: list[tuple[str, tuple[int, int] | None]] = []
        for gen in generations(path):
            try:
                new: BinaryIO = open(gen, "rb")  # noqa: SIM115  (the caller closes it)
            except FileNotFoundError:
                opened.append((gen, None))
                continue
            files.append(new)
            opened.append((gen, _key(os.fstat(new.fileno()))))
        if opened == _name_keys(path):
            break
        for old in files:
            old.close()
        files = []
        time.sleep(0.001)
    else:
        files = []                                  # still moving: the best we can
        for gen in generations(path):
            try:
                files.append(open(gen, "rb"))  # noqa: SIM115
            except FileNotFoundError:
                continue
    seen: set[tuple[int, int]] = set()
    unique: list[BinaryIO] = []
    for f in files:
        key = _key(os.fstat(f.fileno()))
        if key in seen:
            f.close()                               # the live log linked as <log>.1
        else:
            seen.add(key)
            unique.append(f)
    return unique


def _all_records(path: str) -> Iterator[LogRecord]:
    joiner = _Joiner()
    files = open_generations(path)
    try:
        for f in files:
            yield from _read_file_lines(f, joiner)
    finally:
        for f in files:
            f.close()
    yield from joiner.flush()


def _tail(records: Iterable[LogRecord], tail: int | None) -> Iterator[LogRecord]:
    if tail is None or tail < 0:
        yield from records
    elif tail > 0:
        yield from collections.deque(records, maxlen=tail)


def read_logs(path: str, *, stdout: bool = True, stderr: bool = True,
              since: float | None = None, until: float | None = None,
              tail: int | None = None) -> Iterator[LogRecord]:
    """Every line of every generation, oldest first; ``tail`` = the last N lines kept by
    the filters (``since``/``until`` are epoch seconds, both inclusive, as Docker's)."""
    flt = _Filter(stdout, stderr, since, until)
    yield from _tail((r for r in _all_records(path) if flt.keep(r)), tail)


# -- following ----------------------------------------------------------------------------

class _LiveFile:
    """A log file read as it grows; whole lines only."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.key = _key(os.fstat(f.fileno()))
        self.buf = b""

    def lines(self) -> Iterator[bytes]:
        while True:
            chunk = self.f.read(1 << 16)
            if not chunk:
                return
            self.buf += chunk
            *complete, self.buf = self.buf.split(b"\n")
            for line in complete:
                yield line + b"\n"

    def close(self) -> None:
        self.f.close()


def _current_key(path: str) -> tuple[int, int] | None:
    try:
        return _key(os.stat(path))
    except FileNotFoundError:
        return None


def _newer_than(path: str, key: tuple[int, int]) -> list[BinaryIO]:
    """The generations written after the file ``key``, oldest first (all of them when that
    file was dropped already: every one left is newer)."""
    files = open_generations(path)
    keys = [_key(os.fstat(f.fileno())) for f in files]
    if key in keys:
        cut = keys.index(key) + 1
        for f in files[:cut]:
            f.close()
        files = files[cut:]
    return files


IDLE_FIRST = 0.005


def follow_logs(path: str, *, stdout: bool = True, stderr: bool = True,
                since: float | None = None, until: float | None = None,
                tail: int | None = None, stop: Callable[[], bool],
                poll: float = 0.1) -> Iterator[LogRecord]:
    """:func:`read_logs`, then every new line as conmon writes it, across rotations (when
    ``path`` names a new inode, the file being read is finished, then every generation
    written after it, so several rotations between two polls lose nothing). Returns once
    ``stop()`` is true and all that was written has been yielded, or past ``until``."""
    flt = _Filter(stdout, stderr, since, until)
    joiner = _Joiner()
    while True:
        files = open_generations(path)
        if files:
            break
        if stop():
            return
        time.sleep(poll)
    live = _LiveFile(files[-1])
    older = files[:-1]
    past_until = False

    def history() -> Iterator[LogRecord]:
        for f in older:
            yield from _read_file_lines(f, joiner)
        yield from _read_file_lines(live.lines(), joiner)

    def kept(records: Iterable[LogRecord]) -> Iterator[LogRecord]:
        nonlocal past_until
        for r in records:
            if flt.until is not None and r.ns > flt.until:
                past_until = True
                return
            if flt.keep(r):
                yield r

    def drain() -> Iterator[LogRecord]:
        """What the live file has now, as records."""
        for line in live.lines():
            rec = joiner.feed(line)
            if rec is not None:
                yield rec

    try:
        yield from _tail(kept(history()), tail)
        for f in older:
            f.close()
        older = []
        if past_until:
            return
        # idle waits grow from 5 ms to ``poll``: a short-lived container's end is seen at once
        # (docker-py's run follows the logs of every container it runs), an idle one is cheap
        delay = IDLE_FIRST
        while True:
            # sampled before the read, so what was written before stop() turned true is read
            stopping = stop() or (until is not None and time.time() > until)
            got = False
            for rec in drain():
                got = True
                yield from kept([rec])
                if past_until:
                    return
            key = _current_key(path)
            if key is not None and key != live.key:
                yield from kept(drain())           # finish the rotated-away file
                if past_until:
                    return
                newer = _newer_than(path, live.key)
                if not newer:
                    continue
                live.close()
                live = _LiveFile(newer[-1])
                try:
                    for f in newer[:-1]:           # whole generations rotated meanwhile
                        yield from kept(_read_file_lines(f, joiner))
                        if past_until:
                            return
                finally:
                    for f in newer[:-1]:
                        f.close()
                continue
            if stopping:
                yield from kept(joiner.flush())
                return
            if got:
                delay = IDLE_FIRST
            else:
                time.sleep(delay)
                delay = min(delay * 2, poll)
    finally:
        for f in older:
            f.close()
        live.close()


# -- since / options / rotation -----------------------------------------------------------

_DUR_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
              "m": 60.0, "h": 3600.0}
_DUR_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIX_RE = re.compile(r"^\d+(?:\.\d{1,9})?$")
_DATE_RE = re.compile(r"^(\d{4})-(\d\d)-(\d\d)(?:T(\d\d)(?::(\d\d)(?::(\d\d)(?:\.(\d{1,9}))?)?)?)?"
                      r"(Z|z|[+-]\d\d:\d\d)?$")


def _parse_duration(text: str) -> float | None:
    """Go's ``time.ParseDuration`` (``10m``, ``1h30m``, ``-1.5h``, ``300ms``), or None."""
    sign = 1.0
    body = text
    if body[:1] in "+-" and body:
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if not body:
        return None
    pos = 0
    total = 0.0
    while pos < len(body):
        m = _DUR_RE.match(body, pos)
        if not m:
            return None
        total += float(m.group(1)) * _DUR_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def parse_since(text: str, now: float) -> float:
    """Docker's ``--since``/``--until`` value as epoch seconds: a duration before ``now``
    (``10m``, ``1h30m``), unix seconds (``1700000000.5``) or an RFC 3339 date/time (local
    time when it has no zone)."""
    value = text.strip()
    if value and value != "0":
        d = _parse_duration(value)
        if d is not None:
            return now - d
    if _UNIX_RE.match(value):
        return float(value)
    m = _DATE_RE.match(value)
    if m:
        y, mo, d_, h, mi, s = (int(g) if g else 0 for g in m.groups()[:6])
        frac = float("0." + m.group(7)) if m.group(7) else 0.0
        zone = m.group(8)
        try:
            if zone:
                tz_off = 0 if zone in ("Z", "z") else _offset(zone)
                base = datetime(y, mo, d_, h, mi, s, tzinfo=UTC) - timedelta(seconds=tz_off)
                return base.timestamp() + frac
            return datetime(y, mo, d_, h, mi, s).timestamp() + frac    # local time
        except ValueError:
            pass
    raise ConfigError("", f'failed to parse value as time or duration: "{text}"')


def parse_log_opts(opts: dict[str, str]) -> tuple[int, int]:
    """``--log-opt max-size=10m --log-opt max-file=3`` → (max_size bytes, 0 = unlimited;
    max_file ≥ 1, the number of files kept including the live one)."""
    max_size = 0
    max_file = 1
    for key, val in opts.items():
        if key == "max-size":
            if val.strip() == "-1":
                max_size = 0
                continue
            try:
                max_size = ram_in_bytes(val)
            except ValueError:
                raise ConfigError("", f"invalid max-size '{val}': expected a size such as "
                                  "10m or 1g") from None
            if max_size <= 0:
                raise ConfigError("", f"invalid max-size '{val}': max-size must be a "
                                  "positive number")
        elif key == "max-file":
            try:
                max_file = int(val)
            except ValueError:
                raise ConfigError("", f"invalid max-file '{val}': expected a whole number"
                                  ) from None
            if max_file < 1:
                raise ConfigError("", f"invalid max-file '{val}': max-file cannot be less "
                                  "than 1")
        else:
            raise ConfigError("", f"unknown log opt '{key}' for k8s-file log driver")
    if max_file > 1 and max_size == 0:
        raise ConfigError("", "max-file cannot be set without max-size")
    return max_size, max_file


def rotate_generations(path: str, max_file: int) -> None:
    """Before conmon starts: a non-empty live log becomes ``<log>.1`` (older ones shift up,
    those past ``max_file - 1`` are dropped), so conmon, whose size count starts at 0,
    starts a fresh file and each file stays within ``max-size``. ``max_file`` 1 only drops
    numbered generations."""
    keep = max(max_file - 1, 0)
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    shift = keep >= 1 and st is not None and st.st_size > 0
    numbered = sorted((int(p.rsplit(".", 1)[1]), p) for p in generations(path)[:-1])
    if shift and st is not None and _current_key(f"{path}.1") == _key(st):
        os.unlink(path)                            # already kept as <log>.1 (older engine)
        shift = False
    for k, gen in reversed(numbered):
        if shift and k + 1 <= keep:
            os.replace(gen, f"{path}.{k + 1}")
        elif k > keep or shift:
            try:
                os.unlink(gen)
            except FileNotFoundError:
                pass
    if shift:
        os.replace(path, f"{path}.1")


# -- a container's logs (the CLI's `logs` and the API's GET /containers/{id}/logs) ----------

def parse_tail(text: str, flag: str = "--tail") -> int | None:
    """``all`` (or a negative number) → None; else the number of lines."""
    if text in ("", "all"):
        return None
    try:
        n = int(text)
    except ValueError:
        raise ConfigError(flag, f"invalid value {text!r}: a number or all") from None
    return None if n < 0 else n


def container_logs(engine: Engine, cid: str, *, follow: bool = False, stdout: bool = True,
                   stderr: bool = True, since: float | None = None, until: float | None = None,
                   tail: int | None = None, cancelled: Callable[[], bool] | None = None
                   ) -> Iterator[LogRecord]:
    """The container's records; with ``follow`` until it stops running (or ``cancelled()``,
    e.g. a client that went away)."""
    from isobox.errors import NotFoundError

    path = engine.layout.log_path(cid)
    if not follow:
        yield from read_logs(path, stdout=stdout, stderr=stderr, since=since, until=until,
                             tail=tail)
        return

    def stopped() -> bool:
        if cancelled is not None and cancelled():
            return True
        try:
            return engine.get(cid).status not in ("running", "paused", "restarting")
        except NotFoundError:
            return True

    yield from follow_logs(path, stdout=stdout, stderr=stderr, since=since, until=until,
                           tail=tail, stop=stopped)
