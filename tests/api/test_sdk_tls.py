"""The SDK and `isobox --host tcp://…` over mutual TLS, against `isobox serve --tcp` (the
transport tests' PKI and server helpers): the hijacked attach/exec streams go through TLS too;
a client without a certificate is refused."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from api_helpers import ApiServer
from engine_helpers import Isobox
from transport_helpers import Pki, TlsServer

from harness import RUN_PREFIX, unique_id
from isobox.api.client import Client, RunResult
from isobox.api.client_errors import ConnectError

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def tls_server(engine_root: str, api_server: ApiServer, pki: Pki) -> Iterator[TlsServer]:
    server = TlsServer.start_tls(engine_root, f"/tmp/{RUN_PREFIX}-sdktls.sock", pki)
    yield server
    assert server.stop() == 0
    assert not os.path.exists(server.socket_path)


def test_sdk_and_remote_cli_over_mutual_tls(tls_server: TlsServer, pki: Pki,
                                            isobox: Isobox) -> None:
    url = f"tcp://127.0.0.1:{tls_server.port}"
    certs = {"tls_cert": pki.path("client-cert.pem"), "tls_key": pki.path("client-key.pem"),
             "tls_ca": pki.path("ca.pem")}
    with Client(url, **certs) as c:
        result = c.run("busybox", ["sh", "-c", "echo out; echo err >&2; exit 2"], remove=True)
        assert isinstance(result, RunResult)
        assert (result.exit_code, result.stdout, result.stderr) == (2, b"out\n", b"err\n")
        name = unique_id("tls")
        c.run("busybox", ["sleep", "60"], detach=True, name=name)
        res = c.exec(name, ["sh", "-c", "echo in; exit 3"])
        assert (res.exit_code, res.stdout) == (3, b"in\n")
        assert c.info()["Isobox"]["Cgroups"]["layout"]
    env = {"ISOBOX_HOST": url, "ISOBOX_TLS_CERT": certs["tls_cert"],
           "ISOBOX_TLS_KEY": certs["tls_key"], "ISOBOX_TLS_CA": certs["tls_ca"],
           "ISOBOX_ROOT": "/nonexistent-isobox-remote-root"}
    assert name in isobox("ps", env=env).stdout
    p = isobox("exec", name, "cat", "/etc/hostname", env=env)
    assert p.stdout.strip() == isobox("exec", name, "cat", "/etc/hostname").stdout.strip()
    isobox("rm", "-f", name, env=env)
    with Client(url, tls_ca=pki.path("ca.pem")) as c, pytest.raises(ConnectError):
        c.ping()  # no client certificate: the server ends the handshake
