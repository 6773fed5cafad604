"""The API over TCP, only with mutual TLS: the server's certificate, client certificates
verified against a CA, TLS 1.2 or newer (dockerd's ``--tlsverify``).

The handshake happens in the connection's own thread, so a slow or silent client never
holds up the accept loop. A client speaking plain HTTP to the port gets Go's answer
(``400 … Client sent an HTTP request to an HTTPS server``) and the connection closes."""

from __future__ import annotations

import logging
import os
import socket
import ssl
from dataclasses import dataclass

from isobox.errors import ConfigError

log = logging.getLogger("isobox.api")

HANDSHAKE_TIMEOUT = 10.0
TLS_RECORD_HANDSHAKE = 0x16
PLAIN_HTTP_ANSWER = (b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n"
                     b"Connection: close\r\n\r\n"
                     b"Client sent an HTTP request to an HTTPS server.\n")


@dataclass(frozen=True)
class TlsListen:
    """``--tcp ADDR --tls-cert F --tls-key F --tls-ca F``."""

    host: str
    port: int
    cert: str
    key: str
    ca: str

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET


def tls_listen(tcp: str, cert: str | None, key: str | None, ca: str | None) -> TlsListen:
    """The options checked: every TLS flag is required (TCP is never served in clear)."""
    for flag, value in (("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)):
        if not value:
            raise ConfigError(flag, "required with --tcp: the API is served over TCP only "
                              "with mutual TLS (--tls-cert, --tls-key and --tls-ca)")
        if not os.path.isfile(value):
            raise ConfigError(flag, f"{value}: no such file")
    host, port = parse_tcp_address(tcp)
    assert cert and key and ca
    return TlsListen(host, port, cert, key, ca)


def parse_tcp_address(text: str) -> tuple[str, int]:
    """``[tcp://]HOST:PORT`` (``[::1]:PORT`` for IPv6, ``:PORT`` for every IPv4 address)."""
    addr = text.removeprefix("tcp://").rstrip("/")
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError("--tcp", f"{text!r}: expected HOST:PORT (e.g. 127.0.0.1:2376)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError("--tcp", f"{text!r}: put an IPv6 address in brackets ([::1]:2376)")
    return host or "0.0.0.0", int(port)


def server_context(opts: TlsListen) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_cert_chain(opts.cert, opts.key)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError("--tls-cert/--tls-key", f"cannot load {opts.cert} with "
                          f"{opts.key}: {e}") from None
    try:
        ctx.load_verify_locations(cafile=opts.ca)
    except (ssl.SSLError, OSError) as e:
        raise ConfigError("--tls-ca", f"cannot load {opts.ca}: {e}") from None
    return ctx


def accept_tls(raw: socket.socket, ctx: ssl.SSLContext, peer: object) -> ssl.SSLSocket | None:
    """The handshake of a new connection; None (the connection closed) when the client is
    refused: no certificate, one from another CA, or no TLS at all."""
    raw.settimeout(HANDSHAKE_TIMEOUT)
    try:
        first = raw.recv(1, socket.MSG_PEEK)
    except OSError:
        return None
    if not first:
        return None
    if first[0] != TLS_RECORD_HANDSHAKE:
        log.info("%s: plain HTTP on the TLS port, refused", peer)
        try:
            raw.sendall(PLAIN_HTTP_ANSWER)
            raw.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return None
    try:
        conn = ctx.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as e:
        log.info("%s: TLS handshake refused: %s", peer, getattr(e, "reason", None) or e)
        return None
    conn.settimeout(None)
    return conn
