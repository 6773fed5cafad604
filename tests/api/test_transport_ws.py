"""Attach over a websocket (`GET /containers/{id}/attach/ws`, RFC 6455) with a small client
of our own, and the `logs`/`stream` parameters of the hijacked attach they share."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest
from api_helpers import ApiServer, raw
from engine_helpers import Isobox
from transport_helpers import WebSocket

pytestmark = pytest.mark.engine


@pytest.fixture
def api(api_server: ApiServer, isobox: Isobox) -> Iterator[str]:
    yield api_server.socket_path


def _create(sock_path: str, cmd: list[str], **extra: object) -> str:
    status, _, body = raw(sock_path, "POST", "/containers/create",
                          {"Image": "busybox", "Cmd": cmd, **extra})
    assert status == 201, body
    return str(json.loads(body)["Id"])


def _ws(sock_path: str, path: str) -> WebSocket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(sock_path)
    ws, head = WebSocket.connect(s, path)
    assert ws is not None, head
    return ws


def _wait(sock_path: str, cid: str) -> int:
    status, _, body = raw(sock_path, "POST", f"/containers/{cid}/wait")
    assert status == 200
    return int(json.loads(body)["StatusCode"])


def test_attach_before_start_carries_stdin_and_output_in_binary_frames(api: str) -> None:
    cid = _create(api, ["sh", "-c", "echo hello; echo oops >&2; read x; echo got $x; exit 7"],
                  OpenStdin=True)
    ws = _ws(api, f"/v1.41/containers/{cid}/attach/ws?stream=1&stdin=1&stdout=1&stderr=1")
    assert raw(api, "POST", f"/containers/{cid}/start")[0] == 204
    ws.send(b"abc\n", opcode=1)  # a text frame is input as well
    frames, closed = ws.read_until_close()
    assert closed  # the server's close frame when the container's output ends
    assert {op for op, _ in frames} == {2}  # binary (API >= 1.28), not multiplexed
    out = b"".join(p for _, p in frames)
    assert sorted(out.splitlines()) == [b"got abc", b"hello", b"oops"]
    assert out.index(b"hello") < out.index(b"got abc")
    assert _wait(api, cid) == 7
    raw(api, "DELETE", f"/containers/{cid}")


def test_stream_params_logs_replay_and_text_frames(api: str) -> None:
    cid = _create(api, ["sh", "-c", "echo out1; echo err1 >&2"])
    assert raw(api, "POST", f"/containers/{cid}/start")[0] == 204
    assert _wait(api, cid) == 0
    # no stream: the logs only, then the close frame; no stdin/stdout/stderr named = all
    frames, closed = _ws(api, f"/containers/{cid}/attach/ws?logs=1").read_until_close()
    assert closed and b"".join(p for _, p in frames) == b"out1\nerr1\n"
    # only stdout; API 1.27 gets text frames (dockerd's rule)
    frames, closed = _ws(api, f"/v1.27/containers/{cid}/attach/ws?logs=1&stdout=1"
                         ).read_until_close()
    assert closed and frames == [(1, b"out1\n")]
    # the hijacked attach replays the same way, multiplexed
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(api)
    s.sendall(f"POST /containers/{cid}/attach?logs=1&stdout=1&stderr=1 HTTP/1.1\r\n"
              "Host: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n".encode())
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 UPGRADED")
    assert body == (b"\x01\x00\x00\x00\x00\x00\x00\x05out1\n"
                    b"\x02\x00\x00\x00\x00\x00\x00\x05err1\n")
    raw(api, "DELETE", f"/containers/{cid}")


def test_ping_close_and_detach(api: str) -> None:
    # StdinOnce (as `docker run -i` sends): the first client's end closes the input
    cid = _create(api, ["sh", "-c", "cat; echo stdin-closed; sleep 60"], OpenStdin=True,
                  StdinOnce=True)
    assert raw(api, "POST", f"/containers/{cid}/start")[0] == 204
    ws = _ws(api, f"/containers/{cid}/attach/ws?stream=1&stdin=1&stdout=1")
    ws.send(b"hey", opcode=9)  # ping
    assert ws.recv() == (0xA, b"hey")  # pong, same payload
    ws.send(b"echo-me\n")
    assert ws.recv() == (2, b"echo-me\n")
    ws.send(b"\x03\xe8", opcode=8)  # close (1000): the server answers it and ends
    frames, closed = ws.read_until_close()
    assert closed and frames == []
    # the client's close ended the container's input (StdinOnce), as a hijacked half-close
    # does
    deadline = time.monotonic() + 10
    logs = b""
    while b"stdin-closed" not in logs and time.monotonic() < deadline:
        logs = raw(api, "GET", f"/containers/{cid}/logs?stdout=1")[2]
        time.sleep(0.1)
    assert b"stdin-closed" in logs
    # detach keys in the input end the attach; the container runs on
    cid2 = _create(api, ["cat"], OpenStdin=True)
    assert raw(api, "POST", f"/containers/{cid2}/start")[0] == 204
    ws = _ws(api, f"/containers/{cid2}/attach/ws?stream=1&stdin=1&stdout=1"
             "&detachKeys=ctrl-x")
    ws.send(b"one\n")
    assert ws.recv() == (2, b"one\n")
    ws.send(b"\x18")
    assert ws.read_until_close()[0] == []
    body = raw(api, "GET", f"/containers/{cid2}/json")[2]
    assert json.loads(body)["State"]["Running"] is True
    for c in (cid, cid2):
        raw(api, "DELETE", f"/containers/{c}?force=1")


def test_bad_requests(api: str) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(api)
    ws, answer = WebSocket.connect(s, "/containers/no-such-ctr-isobox/attach/ws?stream=1")
    assert ws is None and answer.startswith(b"HTTP/1.1 404")
    s.close()
    cid = _create(api, ["true"])
    status, _, body = raw(api, "GET", f"/containers/{cid}/attach/ws")  # not an upgrade
    assert status == 400 and b"Upgrade: websocket" in body
    status, _, body = raw(api, "GET", f"/containers/{cid}/attach/ws", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "8",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
    assert status == 400 and b"Sec-WebSocket-Version" in body
    # an unmasked client frame is a protocol error: close 1002
    cid2 = _create(api, ["cat"], OpenStdin=True)
    assert raw(api, "POST", f"/containers/{cid2}/start")[0] == 204
    ws = _ws(api, f"/containers/{cid2}/attach/ws?stream=1&stdin=1&stdout=1")
    ws.sock.sendall(b"\x82\x03abc")
    assert ws.recv() == (8, b"\x03\xea")
    for c in (cid, cid2):
        raw(api, "DELETE", f"/containers/{c}?force=1")
