"""The registry client for real: Debian's docker-registry on 127.0.0.1 (plain HTTP; HTTPS with a
test CA and htpasswd; bearer tokens from a token server), a recording proxy for resume,
cross-repo mounts and lying registries, and ``isobox pull/push/login/logout`` end to end."""

from __future__ import annotations

import gzip
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from registry_server import Proxy, ProxyFaults, Registry, TokenServer, htpasswd_line, make_ca
from store_helpers import layer_tar, put_image, sha

from isobox.errors import ConfigError, NotFoundError, RegistryError, VerificationError
from isobox.images.reference import parse_reference
from isobox.images.registry import RegistryClient, RegistryOptions, pull_image, push_image
from isobox.images.registry.auth import AuthFile
from isobox.images.store import ImageRecord, ImageStore
from isobox.oci import image as oci

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/docker-registry"),
                                reason="needs Debian's docker-registry")

BIG = os.urandom(2_500_000)  # incompressible: a multi-MB blob


def isobox(root: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "isobox.cli", "--root", root, *args],
                          capture_output=True, text=True, input=input, timeout=120,
                          check=False)


def make_image(store: ImageStore, ref: str = "example.test/app:1", *, arch: str = "amd64",
               marker: bytes = b"hello\n") -> ImageRecord:
    base = layer_tar({"etc/": None, "etc/marker": marker, "bin/": None, "bin/sh": "busybox"})
    big = layer_tar({"data/": None, "data/big": BIG})
    _, rec = put_image(store, [base, big], ref, config_extra={"architecture": arch})
    assert rec is not None
    return rec


@pytest.fixture
def registry() -> Iterator[Registry]:
    reg = Registry()
    yield reg
    reg.stop()


@pytest.fixture
def faults() -> ProxyFaults:
    return ProxyFaults()


@pytest.fixture
def proxy(registry: Registry, faults: ProxyFaults) -> Iterator[Proxy]:
    p = Proxy(registry.port, faults)
    yield p
    p.stop()


@pytest.fixture
def store2(store_root: str) -> Iterator[ImageStore]:
    s = ImageStore(os.path.join(store_root, "second"))
    yield s
    s.close()


def no_image_visible(store: ImageStore) -> bool:
    return store.images(include_intermediate=True) == []


# push → rmi → pull ---------------------------------------------------------------------------
def test_cli_push_rmi_pull_gives_the_same_image(store_root: str, registry: Registry) -> None:
    s = ImageStore(store_root)
    rec = make_image(s)
    s.close()
    dest = f"{registry.host}/team/app:1"
    r = isobox(store_root, "tag", "example.test/app:1", dest)
    assert r.returncode == 0, r
    r = isobox(store_root, "push", dest)
    assert r.returncode == 0, r
    assert "1: digest: sha256:" in r.stdout and "size: " in r.stdout
    pushed_digest = r.stdout.split("digest: ")[1].split()[0]
    assert isobox(store_root, "rmi", dest).returncode == 0
    assert isobox(store_root, "rmi", "example.test/app:1").returncode == 0
    s = ImageStore(store_root)
    assert no_image_visible(s)
    s.close()
    r = isobox(store_root, "pull", "-q", dest)
    assert r.returncode == 0, r
    assert r.stdout.strip() == rec.id
    s = ImageStore(store_root)
    try:
        got = s.resolve(dest)
        assert got.id == rec.id and got.manifest_digest == pushed_digest
        assert f"{registry.host}/team/app@{pushed_digest}" in got.refs
        layer = s.layer_dir(got.diff_ids[1])
        with open(os.path.join(layer, "data/big"), "rb") as f:
            assert f.read() == BIG
        with open(os.path.join(s.layer_dir(got.diff_ids[0]), "etc/marker"), "rb") as f:
            assert f.read() == b"hello\n"
    finally:
        s.close()
    r = isobox(store_root, "pull", dest)  # up to date: nothing fetched, Docker-like output
    assert r.returncode == 0 and f"Digest: {pushed_digest}" in r.stdout


def test_push_skips_existing_and_mounts_across_repositories(store: ImageStore, proxy: Proxy
                                                            ) -> None:
    make_image(store)
    first = push_image(store, "example.test/app:1", f"{proxy.host}/a/app:1")
    assert (first.uploaded, first.mounted, first.existing) == (3, 0, 0)
    again = push_image(store, "example.test/app:1", f"{proxy.host}/a/app:2")
    assert (again.uploaded, again.mounted, again.existing) == (0, 0, 3)
    other = push_image(store, "example.test/app:1", f"{proxy.host}/b/copy:1")
    assert (other.uploaded, other.mounted) == (0, 3)
    mounts = proxy.matching("POST", "mount=sha256")
    assert len(mounts) == 3 and all("from=a%2Fapp" in m.path for m in mounts)
    assert all(m.status == 201 for m in mounts)
    assert not proxy.matching("PUT", "/v2/b/copy/blobs/uploads/")


def test_pull_records_sources_then_push_mounts(store: ImageStore, store2: ImageStore,
                                               proxy: Proxy) -> None:
    make_image(store)
    push_image(store, "example.test/app:1", f"{proxy.host}/src/app:1")
    pulled = pull_image(store2, f"{proxy.host}/src/app:1")
    result = push_image(store2, pulled.id, f"{proxy.host}/dst/app:1")
    assert result.mounted == 3 and result.uploaded == 0


# multi-arch ----------------------------------------------------------------------------------
def _push_index(store: ImageStore, host: str, repo: str) -> tuple[dict[str, str], str]:
    ids = {}
    descs = []
    for arch in ("amd64", "arm64"):
        rec = make_image(store, f"example.test/{arch}:1", arch=arch, marker=arch.encode())
        res = push_image(store, rec.id, f"{host}/{repo}:{arch}")
        ids[arch] = rec.id
        descs.append({"mediaType": oci.OCI_MANIFEST, "digest": res.digest, "size": res.size,
                      "platform": {"os": "linux", "architecture": arch}})
    index = oci.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": descs})
    with RegistryClient(parse_reference(f"{host}/{repo}").registry) as c:
        c.put_manifest(repo, "multi", index, oci.OCI_INDEX)
    return ids, sha(index)


def test_multi_arch_index_pull_selects_platform(store: ImageStore, store_root: str,
                                                registry: Registry) -> None:
    ids, index_digest = _push_index(store, registry.host, "multi/app")
    ref = f"{registry.host}/multi/app:multi"
    r = isobox(os.path.join(store_root, "cli"), "pull", "-q", "--platform", "linux/arm64", ref)
    assert r.returncode == 0, r
    assert r.stdout.strip() == ids["arm64"]
    fresh = ImageStore(os.path.join(store_root, "fresh"))
    try:
        rec = pull_image(fresh, ref, platform=oci.Platform.parse("linux/amd64"))
        assert rec.id == ids["amd64"]
        assert f"{registry.host}/multi/app@{index_digest}" in rec.refs  # repo digest = index
        with pytest.raises(ConfigError, match="no image for platform linux/s390x"):
            pull_image(fresh, ref, platform=oci.Platform.parse("linux/s390x"))
    finally:
        fresh.close()


# resume, concurrency -------------------------------------------------------------------------
def test_interrupted_download_resumes_with_range(store: ImageStore, store2: ImageStore,
                                                 proxy: Proxy, faults: ProxyFaults) -> None:
    rec = make_image(store)
    push_image(store, "example.test/app:1", f"{proxy.host}/r/app:1")
    big = rec.layers[1].blob_digest
    faults.cut[big] = 1_000_000
    got = pull_image(store2, f"{proxy.host}/r/app:1")
    assert got.id == rec.id
    gets = proxy.matching("GET", f"/blobs/{big}")
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    assert gets[1].headers["range"].startswith("bytes=") and gets[1].status == 206
    assert int(gets[1].headers["range"][6:].rstrip("-")) >= 500_000
    assert os.listdir(store2.blobs.ingest_dir) == [] or all(
        n.endswith(".lock") for n in os.listdir(store2.blobs.ingest_dir))


def test_partial_is_discarded_when_the_server_ignores_range(
        store: ImageStore, store2: ImageStore, proxy: Proxy, faults: ProxyFaults) -> None:
    rec = make_image(store)
    push_image(store, "example.test/app:1", f"{proxy.host}/r/app:1")
    big = rec.layers[1]
    with open(store.blobs.path(big.blob_digest), "rb") as f:
        head = f.read(700_000)
    w = store2.blobs.writer(big.blob_digest, big.blob_size, resumable=True)
    w.write(head)
    w.close_keep_partial()
    faults.ignore_range = True
    assert pull_image(store2, f"{proxy.host}/r/app:1").id == rec.id
    gets = proxy.matching("GET", f"/blobs/{big.blob_digest}")
    assert len(gets) == 1 and gets[0].headers["range"] == "bytes=700000-"


def test_concurrent_pulls_download_and_unpack_once(store: ImageStore, store_root: str,
                                                   proxy: Proxy) -> None:
    rec = make_image(store)
    push_image(store, "example.test/app:1", f"{proxy.host}/c/app:1")
    root = os.path.join(store_root, "shared")
    ImageStore(root).close()
    procs = [subprocess.Popen([sys.executable, "-m", "isobox.cli", "--root", root, "pull",
                               "-q", f"{proxy.host}/c/app:1"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert {o[0].strip() for o in outs} == {rec.id}
    for la in rec.layers:
        assert len(proxy.matching("GET", f"/blobs/{la.blob_digest}")) == 1
    s = ImageStore(root)
    try:
        assert sorted(os.listdir(s.layer_root)) == sorted(d[7:] for d in rec.diff_ids)
        assert os.listdir(s.layer_tmp) == []
    finally:
        s.close()


# catalogue 37: a lying registry --------------------------------------------------------------
def test_tampered_blob_is_refused_and_nothing_is_visible(
        store: ImageStore, store2: ImageStore, proxy: Proxy, faults: ProxyFaults) -> None:
    rec = make_image(store)
    push_image(store, "example.test/app:1", f"{proxy.host}/l/app:1")
    bad = rec.layers[1].blob_digest
    faults.tamper.add(bad)
    with pytest.raises(VerificationError, match=f"unexpected commit digest .*expected {bad}"):
        pull_image(store2, f"{proxy.host}/l/app:1")
    assert no_image_visible(store2)
    assert not store2.blobs.has(bad)
    assert not [n for n in os.listdir(store2.blobs.ingest_dir) if not n.endswith(".lock")]


def test_cli_lying_registry_is_a_clean_error(store: ImageStore, store_root: str, proxy: Proxy,
                                             faults: ProxyFaults) -> None:
    rec = make_image(store)
    push_image(store, "example.test/app:1", f"{proxy.host}/l/app:1")
    faults.tamper.add(rec.layers[0].blob_digest)
    r = isobox(os.path.join(store_root, "cli"), "pull", f"{proxy.host}/l/app:1")
    assert r.returncode == 1
    assert r.stderr.startswith("isobox: error: ") and "Traceback" not in r.stderr
    assert rec.layers[0].blob_digest in r.stderr


def test_wrong_content_length_and_size(store: ImageStore, store2: ImageStore, proxy: Proxy,
                                       faults: ProxyFaults) -> None:
    rec = make_image(store)
    push_image(store, "example.test/app:1", f"{proxy.host}/l/app:1")
    small = rec.layers[0].blob_digest
    faults.body[f"/blobs/{small}"] = b"x" * (rec.layers[0].blob_size + 10)
    with pytest.raises(VerificationError, match="Content-Length"):
        pull_image(store2, f"{proxy.host}/l/app:1")
    assert no_image_visible(store2)


def test_manifest_digest_mismatch(store: ImageStore, store2: ImageStore, proxy: Proxy,
                                  faults: ProxyFaults) -> None:
    make_image(store)
    res = push_image(store, "example.test/app:1", f"{proxy.host}/l/app:1")
    manifest = json.loads(store.blobs.read(res.digest))
    manifest["annotations"] = {"evil": "1"}
    faults.body["/manifests/1"] = json.dumps(manifest).encode()
    with pytest.raises(VerificationError, match="Docker-Content-Digest"):
        pull_image(store2, f"{proxy.host}/l/app:1")
    faults.body[f"/manifests/{res.digest}"] = json.dumps(manifest).encode()
    with pytest.raises(VerificationError, match="unexpected manifest digest"):
        pull_image(store2, f"{proxy.host}/l/app@{res.digest}")
    assert no_image_visible(store2)


def _upload_raw(host: str, repo: str, blobs: list[bytes], manifest: bytes,
                media_type: str = oci.OCI_MANIFEST, tag: str = "raw") -> None:
    with RegistryClient(host) as c:
        for b in blobs:
            loc = c.start_upload(repo)
            c.finish_upload(repo, loc, sha(b), lambda b=b: iter([b]), len(b))
        c.put_manifest(repo, tag, manifest, media_type)


def test_diff_id_mismatch_from_registry(store2: ImageStore, registry: Registry) -> None:
    tar = layer_tar({"a": b"1"})
    gz = gzip.compress(tar, mtime=0)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [sha(b"another tar")]}}).encode()
    manifest = oci.dumps({"schemaVersion": 2, "mediaType": oci.OCI_MANIFEST,
                          "config": {"mediaType": oci.OCI_CONFIG, "digest": sha(config),
                                     "size": len(config)},
                          "layers": [{"mediaType": oci.OCI_LAYER_GZIP, "digest": sha(gz),
                                      "size": len(gz)}]})
    _upload_raw(registry.host, "d/app", [gz, config], manifest)
    with pytest.raises(VerificationError, match="diffID"):
        pull_image(store2, f"{registry.host}/d/app:raw")
    assert no_image_visible(store2)
    assert os.listdir(store2.layer_tmp) == []


# catalogue 38: digests as paths, foreign urls ------------------------------------------------
def test_traversal_digest_in_manifest_is_refused(store: ImageStore, store2: ImageStore,
                                                 proxy: Proxy, faults: ProxyFaults) -> None:
    rec = make_image(store)
    push_image(store, "example.test/app:1", f"{proxy.host}/t/app:1")
    m = json.loads(store.blobs.read(rec.manifest_digest))
    faults.drop_digest_header = True
    before = set(os.listdir("/var/tmp"))
    for bad in ("sha256:../../../var/tmp/canary/x", "sha256:" + "a" * 63,
                "sha256:" + "A" * 64, "foo:abc"):
        m["layers"][0]["digest"] = bad
        faults.body["/manifests/1"] = json.dumps(m).encode()
        n = len(proxy.requests)
        with pytest.raises(ConfigError, match="digest"):
            pull_image(store2, f"{proxy.host}/t/app:1")
        assert not [r for r in proxy.requests[n:] if "/blobs/" in r.path]
    assert set(os.listdir("/var/tmp")) == before
    assert no_image_visible(store2)
    with pytest.raises(ConfigError):
        pull_image(store2, f"{proxy.host}/t/app@sha256:../../etc/passwd")


def test_foreign_urls_are_never_followed(store: ImageStore, store2: ImageStore, proxy: Proxy,
                                         faults: ProxyFaults) -> None:
    rec = make_image(store)
    push_image(store, "example.test/app:1", f"{proxy.host}/f/app:1")
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(8)
    trap.settimeout(0.2)
    try:
        m = json.loads(store.blobs.read(rec.manifest_digest))
        faults.drop_digest_header = True
        for la in m["layers"]:
            la["urls"] = [f"http://127.0.0.1:{trap.getsockname()[1]}/evil"]
        faults.body["/manifests/1"] = json.dumps(m).encode()
        got = pull_image(store2, f"{proxy.host}/f/app:1")
        assert got.id == rec.id
        with pytest.raises(TimeoutError):
            trap.accept()
    finally:
        trap.close()


# catalogue 39: media-type confusion ----------------------------------------------------------
def test_media_type_confusion_is_refused(store: ImageStore, store2: ImageStore,
                                         registry: Registry, proxy: Proxy,
                                         faults: ProxyFaults) -> None:
    _ids, _ = _push_index(store, proxy.host, "mt/app")
    ref = f"{proxy.host}/mt/app:multi"
    faults.content_type["/manifests/multi"] = oci.OCI_MANIFEST
    with pytest.raises(ConfigError, match="media-type"):
        pull_image(store2, ref)
    faults.content_type.clear()
    faults.drop_digest_header = True
    rec = store.resolve("example.test/amd64:1")
    m = json.loads(store.blobs.read(rec.manifest_digest))
    for doc, msg in (({**m, "manifests": []}, "expected manifest but found index"),
                     ({"schemaVersion": 1, "fsLayers": [], "name": "x"}, "schema 1"),
                     ({**m, "mediaType": oci.OCI_INDEX}, "expected index but found manifest")):
        faults.body["/manifests/multi"] = json.dumps(doc).encode()
        faults.content_type["/manifests/multi"] = str(doc.get("mediaType", oci.OCI_MANIFEST))
        with pytest.raises(ConfigError, match=msg):
            pull_image(store2, ref)
    assert no_image_visible(store2)


# TLS and authentication ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return make_ca(str(tmp_path_factory.mktemp("pki")))


def test_tls_htpasswd_login_push_pull_logout(store: ImageStore, store_root: str,
                                             pki: dict[str, str]) -> None:
    reg = Registry(tls=pki, htpasswd=htpasswd_line("alice", "s3cret"))
    try:
        cli_root = os.path.join(store_root, "cli")
        ref = f"{reg.host}/secure/app:1"
        ca = ("--tls-verify=true", "--ca-cert", pki["ca.crt"])
        r = isobox(cli_root, "pull", *ca, ref)
        assert r.returncode == 1 and "unauthorized: authentication required" in r.stderr
        assert f"isobox login {reg.host}" in r.stderr and "Traceback" not in r.stderr
        r = isobox(cli_root, "login", *ca, "-u", "alice", "--password-stdin", reg.host,
                   input="wrong\n")
        assert r.returncode == 1 and "incorrect username or password" in r.stderr, r
        assert not os.path.exists(os.path.join(cli_root, "auth.json"))
        r = isobox(cli_root, "login", "--tls-verify=true", "-u", "alice", "-p", "s3cret",
                   reg.host)
        assert r.returncode == 1 and "certificate" in r.stderr and "--ca-cert" in r.stderr, r
        r = isobox(cli_root, "login", *ca, "-u", "alice", "--password-stdin", reg.host,
                   input="s3cret\n")
        assert r.returncode == 0 and "Login Succeeded" in r.stdout, r
        auth_path = os.path.join(cli_root, "auth.json")
        assert stat.S_IMODE(os.stat(auth_path).st_mode) == 0o600
        assert AuthFile(auth_path).get(reg.host) == ("alice", "s3cret")
        with open(auth_path) as f:
            assert reg.host in json.load(f)["auths"]
        rec = make_image(store)
        opts = RegistryOptions(tls_verify=True, ca_cert=pki["ca.crt"], auth_file=auth_path)
        push_image(store, rec.id, ref, options=opts)
        r = isobox(cli_root, "pull", "-q", *ca, ref)
        assert r.returncode == 0 and r.stdout.strip() == rec.id, r
        certs = os.path.join(store_root, "certs", reg.host)  # Docker's certs.d layout
        os.makedirs(certs)
        os.symlink(pki["ca.crt"], os.path.join(certs, "ca.crt"))
        r = isobox(cli_root, "pull", "-q", "--tls-verify=true", "--cert-dir", certs, ref)
        assert r.returncode == 0, r
        assert isobox(cli_root, "logout", reg.host).returncode == 0
        assert AuthFile(auth_path).get(reg.host) is None
        r = isobox(cli_root, "logout", reg.host)
        assert r.returncode == 1 and "not logged in" in r.stderr
        r = isobox(os.path.join(store_root, "cli2"), "pull", *ca, ref)
        assert r.returncode == 1 and "unauthorized" in r.stderr
    finally:
        reg.stop()


def test_loopback_registry_is_probed_over_plain_http_first(store: ImageStore, store_root: str,
                                                          registry: Registry) -> None:
    """A plain-HTTP loopback registry: no TLS attempt at all, so no ``ssl`` import (~10 ms of
    every pull here); the pull gives the image pushed."""
    rec = make_image(store)
    push_image(store, "example.test/app:1", f"{registry.host}/probe/app:1")
    code = ("import sys\n"
            "from isobox.images.store import ImageStore\n"
            "from isobox.images.registry import pull_image\n"
            f"s = ImageStore({os.path.join(store_root, 'probe')!r})\n"
            f"print(pull_image(s, {registry.host + '/probe/app:1'!r}).id, 'ssl' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [rec.id, "False"]


def test_loopback_https_registry_is_found_after_the_plain_probe(
        store: ImageStore, store2: ImageStore, pki: dict[str, str]) -> None:
    """An HTTPS registry on loopback, insecure by default (no CA given): the plain-HTTP
    probe gets Go's 400 and HTTPS (unverified) is used."""
    reg = Registry(tls=pki)
    try:
        rec = make_image(store)
        ref = f"{reg.host}/tls/app:1"
        push_image(store, "example.test/app:1", ref)
        assert pull_image(store2, ref).id == rec.id
        with RegistryClient(reg.host) as client:
            client.ping()
            assert client.base == f"https://{reg.host}"
    finally:
        reg.stop()


def test_plain_http_needs_an_insecure_registry(store: ImageStore, registry: Registry) -> None:
    make_image(store)
    strict = RegistryOptions(tls_verify=True)
    with pytest.raises(RegistryError, match="cannot reach registry"):
        push_image(store, "example.test/app:1", f"{registry.host}/p/app:1", options=strict)
    named = RegistryOptions(loopback_insecure=False, insecure_registries=(registry.host,),
                            env_insecure=())
    push_image(store, "example.test/app:1", f"{registry.host}/p/app:1", options=named)
    not_named = RegistryOptions(loopback_insecure=False, env_insecure=())
    with pytest.raises(RegistryError, match=r"plain HTTP|cannot reach"):
        pull_image(store, f"{registry.host}/p/app:1", options=not_named)
    os.environ["ISOBOX_INSECURE_REGISTRIES"] = f"other.example,{registry.host}"
    try:
        assert RegistryOptions(loopback_insecure=False).is_insecure(registry.host)
    finally:
        del os.environ["ISOBOX_INSECURE_REGISTRIES"]


def test_bearer_token_auth(store: ImageStore, store2: ImageStore, store_root: str,
                           pki: dict[str, str]) -> None:
    tokens = TokenServer(pki, "bob", "hunter2")
    reg = Registry(token=tokens.registry_config())
    try:
        rec = make_image(store)
        with pytest.raises(RegistryError, match="refused anonymous access"):
            push_image(store, rec.id, f"{reg.host}/tok/app:1")
        auth_path = os.path.join(store_root, "auth.json")
        r = isobox(store_root, "login", "-u", "bob", "-p", "nope", reg.host)
        assert r.returncode == 1 and "refused the credentials" in r.stderr, r
        r = isobox(store_root, "login", "-u", "bob", "-p", "hunter2", reg.host)
        assert r.returncode == 0, r
        opts = RegistryOptions(auth_file=auth_path)
        first = push_image(store, rec.id, f"{reg.host}/tok/app:1", options=opts)
        assert first.uploaded == 3
        assert ["repository:tok/app:pull,push"] in tokens.scopes
        second = push_image(store, rec.id, f"{reg.host}/tok/other:1", options=opts)
        assert second.mounted == 3
        assert any(sorted(s) == ["repository:tok/app:pull", "repository:tok/other:pull,push"]
                   for s in tokens.scopes)
        assert pull_image(store2, f"{reg.host}/tok/other:1", options=opts).id == rec.id
    finally:
        reg.stop()
        tokens.stop()


def test_concurrent_in_process_pulls_share_the_work(store: ImageStore, store_root: str,
                                                    proxy: Proxy) -> None:
    rec = make_image(store)
    push_image(store, "example.test/app:1", f"{proxy.host}/t2/app:1")
    root = os.path.join(store_root, "threads")
    stores = [ImageStore(root) for _ in range(2)]
    results: list[object] = [None, None]

    def run(i: int) -> None:
        try:
            results[i] = pull_image(stores[i], f"{proxy.host}/t2/app:1").id
        except Exception as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for s in stores:
        s.close()
    assert results == [rec.id, rec.id]
    for la in rec.layers:
        assert len(proxy.matching("GET", f"/blobs/{la.blob_digest}")) == 1


# credentials stay with the registry ----------------------------------------------------------
def test_upload_location_on_another_host_gets_no_credentials(store: ImageStore) -> None:
    """A registry (here: a proxy rewriting ``Location``) that sends uploads to another host
    must not receive the user's password there: the Basic credentials were sent along."""
    reg = Registry(htpasswd=htpasswd_line("alice", "s3cret"))
    foreign = Proxy(reg.port)  # another origin, recording what it is sent
    front = Proxy(reg.port, ProxyFaults(location_host=foreign.host))
    try:
        rec = make_image(store)
        with RegistryClient(front.host, credentials=("alice", "s3cret")) as client:
            try:
                push_image_with(client, store, rec)
            except RegistryError as e:  # the other host wants credentials it does not get
                assert "unauthorized" in str(e)
        assert foreign.requests, "the upload never went to the Location given"
        leaked = [r for r in foreign.requests if "authorization" in r.headers]
        assert leaked == [], f"credentials sent to {foreign.host}: {leaked[0].headers}"
    finally:
        front.stop()
        foreign.stop()
        reg.stop()


def push_image_with(client: RegistryClient, store: ImageStore, rec: ImageRecord) -> None:
    from isobox.images.registry.push import push_blob

    layer = rec.layers[0]
    push_blob(store, client, "leak/app", layer.blob_digest, layer.blob_size, [])


def test_credentials_never_go_to_a_plain_http_token_realm(store: ImageStore,
                                                           pki: dict[str, str]) -> None:
    """A verified-HTTPS registry whose challenge names an ``http://`` realm: the password was
    sent there in clear text."""
    tokens = TokenServer(pki, "bob", "hunter2")
    assert tokens.realm.startswith("http://")
    reg = Registry(tls=pki, token=tokens.registry_config())
    try:
        opts = RegistryOptions(tls_verify=True, ca_cert=pki["ca.crt"])
        with RegistryClient(reg.host, opts, ("bob", "hunter2")) as client, \
                pytest.raises(RegistryError, match="not HTTPS; refusing to send credentials"):
            client.get_manifest("tok/app", "1")
        assert tokens.scopes == [], "the token server received the credentials"
        insecure = RegistryOptions(tls_verify=False)  # an insecure registry: the user's choice
        with RegistryClient(reg.host, insecure, ("bob", "hunter2")) as client, \
                pytest.raises(NotFoundError):
            client.get_manifest("tok/app", "1")
        assert tokens.scopes
    finally:
        reg.stop()
        tokens.stop()


def test_ping_does_not_read_a_huge_v2_body() -> None:
    """``GET /v2/`` was read whole into memory: a hostile registry answering 256 MiB made
    the client hold all of it."""
    import tracemalloc
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    size = 256 << 20

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = bytes(1 << 20)
            try:
                for _ in range(size >> 20):
                    self.wfile.write(chunk)
            except OSError:
                pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        with RegistryClient(host) as client:
            tracemalloc.start()
            try:
                client.ping()
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        assert peak < 32 << 20, f"peak memory {peak >> 20} MiB"
    finally:
        server.shutdown()
        server.server_close()
