"""One thread moving a hijacked stream both ways (attach, exec start, websocket attach).

Python's ``ssl`` sockets must not be read in one thread while another writes them, so a
TLS connection cannot have the usual stdin thread beside an output loop. :class:`Pump` does
both in one thread with a selector: the client socket (plain or TLS) is non-blocking and
buffered both ways, the process's outputs are read when ready, its input is written when
writable. A TLS socket may hold decrypted bytes the selector cannot see (``pending()``), so
the loop polls without waiting while it does.

A :class:`Codec` turns output into what the client reads and the client's bytes into input:
raw for Docker's hijacked connections, frames for the websocket."""

from __future__ import annotations

import contextlib
import select
import selectors
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from isobox.api.streams import DetachScanner, shut

CHUNK = 16384            # a TLS record; the most handed to one send()
HIGH_WATER = 1 << 20     # stop reading a side while this much waits for the other


class Codec(Protocol):
    eof_is_gone: bool  # an end of input means the client left (not a half-close)

    def encode(self, data: bytes) -> bytes:
        """Output for the client."""

    def decode(self, data: bytes) -> tuple[bytes, bytes, bool]:
        """Client bytes → (input for the process, replies for the client, closed)."""

    def closing(self) -> bytes:
        """What to send before the connection closes."""


class RawCodec:
    """Docker's hijacked connection: bytes as they are; an end of input is a half-close."""

    eof_is_gone = False

    def encode(self, data: bytes) -> bytes:
        return data

    def decode(self, data: bytes) -> tuple[bytes, bytes, bool]:
        return data, b"", False

    def closing(self) -> bytes:
        return b""


@dataclass
class Source:
    """A process output: ``read()`` once the object is readable returns the bytes for the
    client (already framed; b"" when there is nothing to pass on) or None at its end."""

    fileobj: Any
    read: Callable[[], bytes | None]


@dataclass
class Sink:
    """The process's input: ``write(view)`` returns the bytes taken (it may raise
    BlockingIOError), ``close()`` ends the input."""

    fileobj: Any
    write: Callable[[memoryview], int]
    close: Callable[[], None]


def _fd(obj: Any) -> int:
    return obj if isinstance(obj, int) else int(obj.fileno())


class Pump:
    """Copy ``sources`` to ``client`` and the client's bytes to ``sink`` until the sources
    end. ``drain`` keeps reading the sources after the client left (an exec's process must
    not block on a full pipe); without it the pump ends with the client. ``pending`` are
    client bytes read before the hijack (the HTTP reader's buffer). ``close`` ends the
    connection when the sources end (an exec's caller closes it itself, once the exit code
    is recorded: the client asks for it as soon as the stream ends)."""

    def __init__(self, client: socket.socket, sources: list[Source], sink: Sink | None, *,
                 codec: Codec | None = None, pending: bytes = b"", detach_keys: bytes = b"",
                 drain: bool = False, initial: bytes = b"", close: bool = True) -> None:
        self.client = client
        self.sources = {_fd(s.fileobj): s for s in sources}
        self.sink = sink
        self.codec: Codec = codec or RawCodec()
        self.scanner = DetachScanner(detach_keys if sink is not None else b"")
        self.drain = drain
        self.close = close
        self.out = bytearray(initial)     # for the client
        self.to_proc = bytearray()        # for the sink
        self.client_eof = False           # no more input from the client
        self.client_closing = False       # flush what is queued, then the client is gone
        self.client_gone = False
        self.detached = False
        self.sink_closed = sink is None
        self.want_read_for_write = False  # TLS: a send needs the peer's bytes first
        self.want_write_for_read = False  # TLS: a recv needs to send first
        self._pending_in = pending

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        self.client.setblocking(False)
        sel = selectors.DefaultSelector()
        registered: dict[int, int] = {}
        try:
            if self._pending_in:
                self._from_client(self._pending_in)
            while self.sources or (self.out and not self.client_gone):
                if self.client_gone and not self.drain:
                    break
                masks = self._masks()
                self._sync(sel, registered, masks)
                tls_pending = (isinstance(self.client, ssl.SSLSocket) and self._reading_client()
                               and self.client.pending() > 0)
                if not masks and not tls_pending:
                    break  # nothing can move any more
                events = sel.select(0 if tls_pending else self._hangup_tick())
                if self._hung_up():
                    self._lose_client()
                    continue
                ready = {key.fd: ev for key, ev in events}
                cfd = self.client.fileno()
                if tls_pending:
                    ready[cfd] = ready.get(cfd, 0) | selectors.EVENT_READ
                self._step(ready, cfd)
        finally:
            sel.close()
            self._finish()

    def _hangup_tick(self) -> float | None:
        """A half-closed client is not watched by the selector (it would be readable for
        ever): look for its hang-up every second instead (case 51: an abandoned attach to a
        quiet container must not hold its thread until the container writes)."""
        return 1.0 if self.client_eof and not self.client_gone else None

    def _hung_up(self) -> bool:
        """The client closed both ways (a unix socket reports it; TCP's FIN looks like a
        half-close until a write fails)."""
        if not self.client_eof or self.client_gone:
            return False
        try:
            p = select.poll()
            p.register(self.client.fileno(), select.POLLHUP)
            return any(ev & (select.POLLHUP | select.POLLERR | select.POLLNVAL)
                       for _, ev in p.poll(0))
        except (OSError, ValueError):
            return True

    def _reading_client(self) -> bool:
        return (not self.client_gone and not self.client_eof and not self.client_closing
                and len(self.to_proc) < HIGH_WATER)

    def _masks(self) -> dict[int, int]:
        masks: dict[int, int] = {}

        def add(fd: int, ev: int) -> None:
            masks[fd] = masks.get(fd, 0) | ev

        if not self.client_gone:
            cfd = self.client.fileno()
            if self._reading_client() or self.want_read_for_write:
                add(cfd, selectors.EVENT_READ)
            if self.out or self.want_write_for_read:
                add(cfd, selectors.EVENT_WRITE)
        if self.client_gone or len(self.out) < HIGH_WATER:
            for fd in self.sources:
                add(fd, selectors.EVENT_READ)
        if self.sink is not None and not self.sink_closed and self.to_proc:
            add(_fd(self.sink.fileobj), selectors.EVENT_WRITE)
        return masks

    @staticmethod
    def _sync(sel: selectors.BaseSelector, registered: dict[int, int],
              masks: dict[int, int]) -> None:
        for fd in list(registered):
            if fd not in masks:
                sel.unregister(fd)
                del registered[fd]
        for fd, mask in masks.items():
            if fd not in registered:
                sel.register(fd, mask)
            elif registered[fd] != mask:
                sel.modify(fd, mask)
            registered[fd] = mask

    def _step(self, ready: dict[int, int], cfd: int) -> None:
        for fd, ev in ready.items():
            if fd in self.sources and ev & selectors.EVENT_READ:
                self._read_source(fd)
        if not self.client_gone and cfd in ready:
            self._client_io()
        if self.sink is not None and not self.sink_closed:
            sfd = _fd(self.sink.fileobj)
            if ready.get(sfd, 0) & selectors.EVENT_WRITE:
                self._write_sink()
        self._maybe_close_sink()
        if self.client_closing and not self.out:
            self._lose_client()

    # -- the process side -----------------------------------------------------------------
    def _read_source(self, fd: int) -> None:
        data = self.sources[fd].read()
        if data is None:
            del self.sources[fd]
            return
        if data and not self.client_gone and not self.client_closing:
            self.out += self.codec.encode(data)

    def _write_sink(self) -> None:
        assert self.sink is not None
        try:
            n = self.sink.write(memoryview(self.to_proc))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # the process closed its input (or ended): nothing more to give it
            self.to_proc.clear()
            self.sink_closed = True
            return
        del self.to_proc[:n]

    def _maybe_close_sink(self) -> None:
        if self.sink is not None and not self.sink_closed and self.client_eof \
                and not self.to_proc and not self.detached:
            self.sink_closed = True
            with contextlib.suppress(OSError):
                self.sink.close()

    # -- the client side ------------------------------------------------------------------
    def _client_io(self) -> None:
        if self._reading_client() or self.want_read_for_write:
            self._recv()
        if not self.client_gone and (self.out or self.want_write_for_read):
            self._send()

    def _recv(self) -> None:
        self.want_write_for_read = False
        if self.want_read_for_write:
            self.want_read_for_write = False
            self._send()
        while self._reading_client():
            try:
                data = self.client.recv(65536)
            except ssl.SSLWantReadError:
                return
            except ssl.SSLWantWriteError:
                self.want_write_for_read = True
                return
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._lose_client()
                return
            if not data:
                self._client_ended()
                return
            self._from_client(data)

    def _from_client(self, data: bytes) -> None:
        data, replies, closed = self.codec.decode(data)
        if replies:
            self.out += replies
        if data and self.sink is not None and not self.detached:
            data, detached = self.scanner.feed(data)
            if not self.sink_closed:
                self.to_proc += data
            if detached:
                self.detached = True
                self._lose_client()
                return
        if closed:
            self.client_eof = True
            self.client_closing = True

    def _client_ended(self) -> None:
        self.client_eof = True
        if self.codec.eof_is_gone:
            self._lose_client()

    def _send(self) -> None:
        while self.out:
            try:
                n = self.client.send(memoryview(self.out)[:CHUNK])
            except ssl.SSLWantWriteError:
                return
            except ssl.SSLWantReadError:
                self.want_read_for_write = True
                return
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._lose_client()
                return
            del self.out[:n]

    def _lose_client(self) -> None:
        self.client_gone = True
        self.out.clear()
        shut(self.client)

    def _finish(self) -> None:
        if self.sink is not None and not self.sink_closed and self.client_eof \
                and not self.detached:
            self.sink_closed = True
            with contextlib.suppress(OSError):
                self.sink.close()
        if not self.client_gone:
            self.out += self.codec.closing()
            with contextlib.suppress(OSError, ValueError):
                self.client.settimeout(5)
                self.client.sendall(self.out)
            self.out.clear()
            if self.close:
                self.client_gone = True
                shut(self.client)

