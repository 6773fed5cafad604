"""Docker's stream formats: the 8-byte multiplexing header for non-TTY output (stream type,
three zero bytes, big-endian payload length), detach keys (``ctrl-p,ctrl-q``) spotted in a
client's stdin. Moving the bytes is :mod:`isobox.api.pump`'s job."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct

from isobox.api.errors import ApiError

STDOUT = 1
STDERR = 2
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"
DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


def stream_content_type(tty: bool) -> str:
    return RAW_STREAM if tty else MULTIPLEXED_STREAM


def parse_detach_keys(text: str) -> bytes:
    """``ctrl-p,ctrl-q`` / ``a,ctrl-@`` → the byte sequence (Docker's term.ToBytes)."""
    out = bytearray()
    for key in (k.strip() for k in text.split(",")):
        if len(key) == 1:
            out.append(ord(key))
        elif key.startswith("ctrl-") and len(key) == 6:
            c = key[5].lower()
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
            elif c in "@[\\]^_":
                out.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[c])
            else:
                raise ApiError(400, f"detachKeys: unknown character {key!r}")
        else:
            raise ApiError(400, f"detachKeys: unknown key {key!r}")
    return bytes(out)


class DetachScanner:
    """Passes stdin through, holding back a possible start of the detach sequence; tells
    when the whole sequence was typed (the bytes held are then dropped, as Docker does)."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        if not self.keys:
            return data, False
        out = bytearray()
        for b in data:
            self.held += bytes([b])
            if self.keys.startswith(self.held):
                if self.held == self.keys:
                    return bytes(out), True
                continue
            out += self.held[:-1]  # not the sequence after all: pass on what was held
            self.held = bytes([b]) if self.keys.startswith(bytes([b])) else b""
            if not self.held:
                out.append(b)
        return bytes(out), False


def shut(sock: socket.socket) -> None:
    """End a connection: TLS's close_notify first (without waiting for the peer's), then
    both directions of the socket."""
    if isinstance(sock, ssl.SSLSocket):
        with contextlib.suppress(OSError, ValueError):
            sock.setblocking(False)
            sock.unwrap()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
