"""``GET /containers/{id}/attach/ws``: attach over a websocket (RFC 6455), as dockerd does.

The output is not multiplexed: stdout and stderr go as they come, one frame per read, in
binary frames from API 1.28 on (text frames before, dockerd's rule). Every data frame the
client sends (text, binary, continuation) is the container's input; a close frame is answered
and ends the attach (the process's input is closed, as a hijacked client's half-close does).
Everything else — waiting for the start, ``logs``, ``stream``, detach keys — is the hijacked
attach's (:func:`isobox.api.attach.run_attach`); the bytes move in :class:`~isobox.api.pump.Pump`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import socket
import struct
from typing import TYPE_CHECKING

from isobox.api.errors import ApiError

if TYPE_CHECKING:
    from isobox.api.http import Exchange
    from isobox.api.pump import Codec
    from isobox.api.server import ApiState

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL, CLOSE_PROTOCOL, CLOSE_TOO_BIG = 1000, 1002, 1009
MAX_FRAME = 16 << 20           # a client's frame (stdin); larger ones close the connection
MAX_OUT_FRAME = 1 << 20


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def handshake_key(ex: Exchange) -> str:
    """``Sec-WebSocket-Key`` of a valid upgrade request; a 400 naming what is wrong."""
    h = ex.headers
    if (h.get("Upgrade") or "").lower() != "websocket":
        raise ApiError(400, "websocket: the request has no 'Upgrade: websocket' header")
    if "upgrade" not in [t.strip().lower() for t in (h.get("Connection") or "").split(",")]:
        raise ApiError(400, "websocket: the Connection header does not name Upgrade")
    if (h.get("Sec-WebSocket-Version") or "").strip() != "13":
        raise ApiError(400, "websocket: Sec-WebSocket-Version: only version 13 is supported")
    key = (h.get("Sec-WebSocket-Key") or "").strip()
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except (ValueError, binascii.Error):
        raise ApiError(400, "websocket: Sec-WebSocket-Key is not 16 bytes in base64") from None
    return key


def frame(opcode: int, payload: bytes) -> bytes:
    """A server's frame: final, unmasked."""
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + payload


def close_frame(code: int) -> bytes:
    return frame(OP_CLOSE, struct.pack(">H", code))


class WebSocketCodec:
    """Output → frames; the client's frames → input, pongs and the close handshake."""

    eof_is_gone = True  # a websocket ends with a close frame; a bare EOF is a client gone

    def __init__(self, binary: bool = True) -> None:
        self.opcode = OP_BINARY if binary else OP_TEXT
        self.buf = bytearray()
        self.sent_close = False

    def encode(self, data: bytes) -> bytes:
        if self.sent_close:
            return b""
        return b"".join(frame(self.opcode, data[i:i + MAX_OUT_FRAME])
                        for i in range(0, len(data), MAX_OUT_FRAME))

    def closing(self) -> bytes:
        return self.closing_with(CLOSE_NORMAL)

    def _fail(self, code: int) -> tuple[bytes, bool]:
        self.buf.clear()
        return self.closing_with(code), True

    def closing_with(self, code: int) -> bytes:
        if self.sent_close:
            return b""
        self.sent_close = True
        return close_frame(code)

    def decode(self, data: bytes) -> tuple[bytes, bytes, bool]:
        if self.sent_close:
            return b"", b"", True
        self.buf += data
        stdin, replies = bytearray(), bytearray()
        while len(self.buf) >= 2:
            b0, b1 = self.buf[0], self.buf[1]
            opcode, n, off = b0 & 0x0F, b1 & 0x7F, 2
            if b0 & 0x70 or not b1 & 0x80 or opcode not in (
                    OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
                reply, closed = self._fail(CLOSE_PROTOCOL)  # reserved bits, unmasked, opcode
                return bytes(stdin), bytes(replies) + reply, closed
            if n == 126:
                if len(self.buf) < 4:
                    break
                n, off = struct.unpack_from(">H", self.buf, 2)[0], 4
            elif n == 127:
                if len(self.buf) < 10:
                    break
                n, off = struct.unpack_from(">Q", self.buf, 2)[0], 10
            if opcode >= OP_CLOSE and (n > 125 or not b0 & 0x80):
                reply, closed = self._fail(CLOSE_PROTOCOL)
                return bytes(stdin), bytes(replies) + reply, closed
            if n > MAX_FRAME:
                reply, closed = self._fail(CLOSE_TOO_BIG)
                return bytes(stdin), bytes(replies) + reply, closed
            if len(self.buf) < off + 4 + n:
                break
            mask = bytes(self.buf[off:off + 4])
            payload = _unmask(bytes(self.buf[off + 4:off + 4 + n]), mask)
            del self.buf[:off + 4 + n]
            if opcode == OP_CLOSE:
                code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else \
                    CLOSE_NORMAL
                return bytes(stdin), bytes(replies) + self.closing_with(code), True
            if opcode == OP_PING:
                replies += frame(OP_PONG, payload)
            elif opcode != OP_PONG:
                stdin += payload
        return bytes(stdin), bytes(replies), False


def _unmask(data: bytes, mask: bytes) -> bytes:
    if not data:
        return b""
    n = len(data)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


def _binary_frames(api_version: str) -> bool:
    major, _, minor = api_version.partition(".")
    try:
        return (int(major), int(minor)) >= (1, 28)
    except ValueError:
        return True


def attach_websocket(state: ApiState, ex: Exchange, ref: str) -> None:
    """The route's body: check the handshake, then the attach with a websocket client."""
    from isobox.api.attach import AttachParams, run_attach

    key = handshake_key(ex)
    params = AttachParams.of(ex, all_streams=True)

    def open_client(_tty: bool) -> tuple[socket.socket, Codec, bytes]:
        sock = ex.upgrade("Switching Protocols", {
            "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Accept": accept_key(key)})
        return sock, WebSocketCodec(_binary_frames(ex.api_version)), ex.buffered_input()

    run_attach(state, ex, ref, params, open_client, mux=False)
