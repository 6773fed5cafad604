"""The guest agent's wire protocol (vm-design.md): ``type:u8 | session:u32 BE | length:u32 BE |
payload``, JSON payloads for control frames, raw bytes for STDIN/STDOUT/STDERR.

Session 0 is reserved for the main workload: SIGNAL/RESIZE/STDIN on session 0 reach it from
any control port (``isobox-vm-runtime kill`` runs long after ``start`` disconnected)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from isobox.vm.errors import VMError

HEADER = struct.Struct(">BII")
MAX_PAYLOAD = 1 << 20
PROTOCOL_VERSION = 2  # 2: EXEC "user" (a name the agent resolves)
MAIN_SESSION = 0


class AgentError(VMError):
    """The guest agent is unreachable or spoke something that is not the protocol."""


class FrameType(IntEnum):
    EXEC = 1
    STARTED = 2
    ERROR = 3
    STDIN = 4
    STDIN_EOF = 5
    STDOUT = 6
    STDERR = 7
    EXIT = 8
    SIGNAL = 9
    RESIZE = 10
    PING = 11
    PONG = 12


@dataclass(frozen=True)
class Frame:
    type: FrameType
    session: int
    payload: bytes = b""

    def json(self) -> dict[str, Any]:
        """The payload of a control frame as a JSON object."""
        try:
            obj = json.loads(self.payload)
        except ValueError as e:
            raise AgentError(f"agent {self.type.name} frame: bad JSON payload: {e}") from None
        if not isinstance(obj, dict):
            raise AgentError(f"agent {self.type.name} frame: payload is not a JSON object")
        return obj

    def int_field(self, key: str, lo: int, hi: int,
                  obj: dict[str, Any] | None = None) -> int:
        """``key`` of the JSON payload (or of ``obj``, already decoded): an integer (not a
        bool) within [lo, hi]; anything else is a guest not speaking the protocol."""
        value = (self.json() if obj is None else obj).get(key)
        if type(value) is not int or not lo <= value <= hi:
            raise AgentError(f"agent {self.type.name} frame: {key!r} must be an integer in "
                             f"[{lo}, {hi}], got {repr(value)[:40]}")
        return value

    def encode(self) -> bytes:
        return encode_frame(self.type, self.session, self.payload)


def encode_frame(ftype: FrameType, session: int, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise AgentError(f"agent {ftype.name} frame: payload of {len(payload)} bytes is over "
                         f"the {MAX_PAYLOAD}-byte limit")
    if not 0 <= session <= 0xFFFFFFFF:
        raise AgentError(f"agent session id {session} out of range")
    return HEADER.pack(ftype, session, len(payload)) + payload


def encode_json(ftype: FrameType, session: int, obj: dict[str, Any]) -> bytes:
    return encode_frame(ftype, session, json.dumps(obj, separators=(",", ":")).encode())


@dataclass(frozen=True)
class ExecSpec:
    """The EXEC payload: what to run in the guest and how."""

    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    terminal: bool = False
    rows: int = 0
    cols: int = 0
    main: bool = False
    stdin: bool = True                    # False: the process reads /dev/null / EOF at once
    files: dict[str, str] | None = None   # written into the guest root first (/etc/hosts…)
    net: dict[str, Any] | None = None     # guest NIC: {mac, address "a.b.c.d/n", gateway, mtu}
    chroot: bool = True                   # False: run in the agent's root (the initramfs)
    busybox: bool = False                 # run args[0] as an applet of the agent's busybox
    mounts: list[str] | None = None       # 9p shares (main only): tag, target, "ro"|"rw", ...
    user: str = ""                        # "name[:group]" resolved in the guest (over uid/gid)

    def payload(self) -> dict[str, Any]:
        if not self.args and not (self.files and not self.main):  # files alone: an update
            raise AgentError("exec: the command (args) must not be empty")
        obj: dict[str, Any] = {
            "args": self.args, "env": self.env, "cwd": self.cwd, "uid": self.uid,
            "gid": self.gid, "additional_gids": self.additional_gids,
            "terminal": self.terminal, "rows": self.rows, "cols": self.cols,
            "main": self.main, "stdin": self.stdin}
        if self.files:
            obj["files"] = self.files
        if self.net:
            obj["net"] = self.net
        if not self.chroot:
            obj["chroot"] = False
        if self.busybox:
            obj["busybox"] = True
        if self.mounts:
            obj["mounts"] = self.mounts
        if self.user:
            obj["user"] = self.user
        return obj


class FrameDecoder:
    """Streaming decoder: ``feed`` bytes as they arrive, get the complete frames back."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= HEADER.size:
            ftype, session, length = HEADER.unpack_from(buf, pos)
            if length > MAX_PAYLOAD:
                raise AgentError(f"agent frame of {length} bytes is over the "
                                 f"{MAX_PAYLOAD}-byte limit (not the isobox protocol?)")
            end = pos + HEADER.size + length
            if len(buf) < end:
                break
            try:
                kind = FrameType(ftype)
            except ValueError:
                raise AgentError(f"agent sent an unknown frame type {ftype}") from None
            frames.append(Frame(kind, session, bytes(buf[pos + HEADER.size:end])))
            pos = end
        del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)
