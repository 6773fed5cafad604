"""HTTP for the OCI distribution API: transport security, authentication, bounded reads.

Transport policy (like Docker and podman):

* HTTPS with certificate verification by default. Extra CAs come from ``--ca-cert FILE``,
  ``--cert-dir DIR`` or ``/etc/isobox/certs.d/<host[:port]>/`` (``*.crt`` are CAs,
  ``client.cert`` + ``client.key`` a client certificate), added to the system CAs.
* A registry is *insecure* when it is named by ``--insecure-registry`` or the environment
  variable ``ISOBOX_INSECURE_REGISTRIES`` (comma separated), when ``--tls-verify=false`` is
  given, or — like Docker's default ``127.0.0.0/8`` — when it is a loopback address
  (``localhost``, ``127.x.y.z``, ``::1``). For an insecure registry HTTPS is tried without
  verification first, then plain HTTP; for an insecure *loopback* registry plain HTTP first,
  then HTTPS: unverified TLS only hides traffic from a passive observer, and nobody but root
  observes loopback; the probe (``GET /v2/``) carries no credentials, and a TLS server
  answers it with 400 or a closed connection, so HTTPS is still chosen where it is served.
  ``--tls-verify=true`` forces verified HTTPS even for loopback registries.

Authentication: the first request (``GET /v2/``) yields the challenge. ``Basic`` sends the
stored credentials; ``Bearer`` fetches a token from the challenge's realm (with the
credentials, if any) for the scopes each request needs and caches it; a later
``insufficient_scope`` challenge is answered once.

Every response body is read with a bound (``/v2/``'s is never read); redirects are followed
(the ``Authorization`` header is dropped when a redirect leaves the registry's origin). HTTP
is :mod:`.transport` (our own HTTP/1.1 on ``_socket``; ``ssl`` only for HTTPS).
Credentials and tokens are sent to the registry's own origin only (an upload ``Location`` on
another host gets none), and to a token realm only over HTTPS unless the registry is insecure.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urljoin, urlsplit

from isobox.errors import NotFoundError, RegistryError
from isobox.images.registry.transport import (
    REDIRECTS,
    Body,
    HttpClient,
    Response,
    TransportError,
    is_loopback_host,
)
from isobox.lazylog import get_logger
from isobox.oci import image as oci

if TYPE_CHECKING:
    import ssl

log = get_logger(__name__)

CERTS_D = "/etc/isobox/certs.d"
MANIFEST_ACCEPT = ", ".join((oci.OCI_INDEX, oci.OCI_MANIFEST, oci.DOCKER_LIST,
                             oci.DOCKER_MANIFEST))
MAX_ERROR_BODY = 64 << 10
MAX_TOKEN_BODY = 1 << 20
USER_AGENT = "isobox"


def env_insecure_registries() -> tuple[str, ...]:
    raw = os.environ.get("ISOBOX_INSECURE_REGISTRIES", "")
    return tuple(h for h in re.split(r"[,\s]+", raw) if h)


def split_host_port(host: str) -> tuple[str, str]:
    if host.startswith("["):
        end = host.find("]")
        return host[1:end], host[end + 2:] if end + 1 < len(host) else ""
    name, _, port = host.partition(":")
    return name, port


def is_loopback(host: str) -> bool:
    """``host[:port]`` names ``localhost`` or a loopback IP literal."""
    return is_loopback_host(split_host_port(host)[0])


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries: TLS policy and where credentials live."""

    insecure_registries: tuple[str, ...] = ()
    tls_verify: bool | None = None  # None: default policy; False: insecure; True: force TLS
    ca_cert: str | None = None
    cert_dir: str | None = None
    certs_d: str = CERTS_D
    auth_file: str | None = None
    timeout: float = 120.0
    parallel: int = 3
    loopback_insecure: bool = True
    env_insecure: tuple[str, ...] = field(default_factory=env_insecure_registries)

    def is_insecure(self, registry: str) -> bool:
        if self.tls_verify is not None:
            return not self.tls_verify
        names = (*self.insecure_registries, *self.env_insecure)
        bare, _ = split_host_port(registry)
        if registry in names or bare in names:
            return True
        return self.loopback_insecure and is_loopback(registry)


def endpoint_host(registry: str) -> str:
    return "registry-1.docker.io" if registry == "docker.io" else registry


def ssl_context(registry: str, options: RegistryOptions) -> ssl.SSLContext:
    import ssl

    ctx = ssl.create_default_context()
    cert_dir = options.cert_dir or os.path.join(options.certs_d, registry)
    if os.path.isdir(cert_dir):
        for name in sorted(os.listdir(cert_dir)):
            path = os.path.join(cert_dir, name)
            if name.endswith(".crt"):
                ctx.load_verify_locations(cafile=path)
        cert, key = os.path.join(cert_dir, "client.cert"), os.path.join(cert_dir, "client.key")
        if os.path.isfile(cert) and os.path.isfile(key):
            ctx.load_cert_chain(cert, key)
    elif options.cert_dir:
        raise RegistryError(f"--cert-dir {options.cert_dir}: not a directory")
    if options.ca_cert:
        try:
            ctx.load_verify_locations(cafile=options.ca_cert)
        except (OSError, ssl.SSLError) as e:
            raise RegistryError(f"--ca-cert {options.ca_cert}: {e}") from None
    return ctx


def unverified_context() -> ssl.SSLContext:
    """For insecure registries (no CA loading: ~30 ms)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" | "bearer" | ""
    params: dict[str, str]


def parse_challenge(header: str | None) -> Challenge:
    if not header:
        return Challenge("", {})
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


def read_bounded(resp: Response, limit: int, what: str) -> bytes:
    """The whole body of a streamed response, refusing more than ``limit`` bytes."""
    length = resp.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        resp.close()
        raise RegistryError(f"{what}: response of {length} bytes is over the {limit}-byte limit")
    buf = bytearray()
    for chunk in resp.iter_bytes():
        buf += chunk
        if len(buf) > limit:
            resp.close()
            raise RegistryError(f"{what}: response is over the {limit}-byte limit")
    return bytes(buf)


class RegistryClient:
    """One registry (``registry`` as in a reference: ``docker.io``, ``127.0.0.1:5000``)."""

    def __init__(self, registry: str, options: RegistryOptions | None = None,
                 credentials: tuple[str, str] | None = None, *,
                 use_stored_credentials: bool = True) -> None:
        self.registry = registry
        self.options = options or RegistryOptions()
        self.host = endpoint_host(registry)
        self.insecure = self.options.is_insecure(registry)
        if credentials is None and use_stored_credentials and self.options.auth_file:
            from isobox.images.registry.auth import AuthFile

            credentials = AuthFile(self.options.auth_file).get(registry)
        self.credentials = credentials
        options = self.options
        tls = unverified_context if self.insecure else lambda: ssl_context(registry, options)
        self.http = HttpClient(tls, timeout=self.options.timeout, connect_timeout=15.0,
                               headers={"User-Agent": USER_AGENT})
        self._base: str | None = None
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # connection and authentication -------------------------------------------------------
    @property
    def base(self) -> str:
        if self._base is None:
            self.ping()
        assert self._base is not None
        return self._base

    def ping(self) -> Challenge:
        """``GET /v2/``: choose the scheme and learn the auth challenge."""
        with self._lock:
            if self._base is not None and self._challenge is not None:
                return self._challenge
            schemes = ["https"]
            if self.insecure:  # loopback: plain HTTP first (see the module's docstring)
                schemes = ["http", "https"] if is_loopback(self.host) else ["https", "http"]
            last: Exception | None = None
            for scheme in schemes:
                # plain HTTP before HTTPS: a redirect (to HTTPS, say) means "try HTTPS"
                plain_first = scheme == "http" and scheme != schemes[-1]
                try:  # streamed and closed unread: the body of /v2/ means nothing
                    resp = self.http.request("GET", f"{scheme}://{self.host}/v2/",
                                             follow_redirects=not plain_first)
                except TransportError as e:
                    last = e
                    log.debug("%s://%s: %s", scheme, self.host, e)
                    continue
                resp.close()
                if resp.status_code not in (200, 401):
                    if scheme != schemes[-1] and (resp.status_code == 400 or (
                            plain_first and resp.status_code in REDIRECTS)):
                        continue  # a server of the other scheme (TLS hello, plain request)
                    raise RegistryError(f"registry {self.registry}: GET /v2/ answered HTTP "
                                        f"{resp.status_code}; is this a registry?")
                self._base = f"{scheme}://{self.host}"
                self._challenge = parse_challenge(resp.headers.get("www-authenticate")) \
                    if resp.status_code == 401 else Challenge("", {})
                return self._challenge
            raise self._transport_error(last)

    def _transport_error(self, e: Exception | None) -> RegistryError:
        text = str(e) or type(e).__name__
        hint = ""
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate" in text.lower():
            hint = (" (unknown certificate authority: give it with --ca-cert or --cert-dir, or "
                    "use --tls-verify=false for a test registry)")
        elif not self.insecure and "WRONG_VERSION_NUMBER" in text:
            hint = (" (the registry speaks plain HTTP: use --insecure-registry "
                    f"{self.registry} if that is intended)")
        return RegistryError(f"cannot reach registry {self.registry}: {text}{hint}")

    def _auth_header(self, scopes: tuple[str, ...], challenge: Challenge | None = None,
                     fresh: bool = False) -> dict[str, str]:
        ch = challenge or self._challenge or self.ping()
        if ch.scheme == "basic":
            if not self.credentials:
                return {}
            user, password = self.credentials
            raw = base64.b64encode(f"{user}:{password}".encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        if ch.scheme == "bearer":
            return {"Authorization": f"Bearer {self._token(ch, scopes, fresh)}"}
        return {}

    def _token(self, ch: Challenge, scopes: tuple[str, ...], fresh: bool) -> str:
        key = tuple(sorted(set(scopes)))
        with self._lock:
            cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic() and not fresh:
                return cached[0]
        realm = ch.params.get("realm", "")
        if urlsplit(realm).scheme not in ("http", "https"):
            raise RegistryError(f"registry {self.registry}: invalid token realm {realm!r}")
        if self.credentials and urlsplit(realm).scheme != "https" and not self.insecure:
            raise RegistryError(f"registry {self.registry}: the token realm {realm!r} is not "
                                f"HTTPS; refusing to send credentials in clear text")
        query: list[tuple[str, str]] = []
        if "service" in ch.params:
            query.append(("service", ch.params["service"]))
        query += [("scope", s) for s in key]
        if self.credentials:
            query.append(("account", self.credentials[0]))
        url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
        try:
            with self.http.request("GET", url, auth=self.credentials) as resp:
                body = read_bounded(resp, MAX_TOKEN_BODY, f"token from {realm}")
        except TransportError as e:
            raise RegistryError(f"registry {self.registry}: token server {realm}: {e}") from None
        if resp.status_code in (401, 403):
            whom = "the credentials" if self.credentials else "anonymous access"
            raise RegistryError(f"{self.registry}: unauthorized: the token server {realm} "
                                f"refused {whom}"
                                f" (HTTP {resp.status_code}); log in with `isobox login "
                                f"{self.registry}`")
        if resp.status_code != 200:
            raise RegistryError(f"{self.registry}: token server {realm} answered HTTP "
                                f"{resp.status_code}")
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
            expires = float(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            raise RegistryError(f"{self.registry}: token server {realm} sent invalid JSON") \
                from None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"{self.registry}: token server {realm} sent no token")
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + max(expires - 10, 5))
        return token

    # requests ----------------------------------------------------------------------------
    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else urljoin(self.base, path)

    def send(self, method: str, path: str, *, scopes: tuple[str, ...], what: str,
             headers: dict[str, str] | None = None, content: Body = None,
             ok: tuple[int, ...] = (200,), stream: bool = False) -> Response:
        """Send with authentication (answering one new challenge), map errors.

        With ``stream`` the caller reads and closes the response."""
        url = self.url(path)
        # credentials (and tokens) go to the registry's own origin only: an upload Location
        # on another host gets none, as with Docker (its authorizer knows no challenge there)
        own = same_origin(url, self.base)
        challenge: Challenge | None = None
        for attempt in (0, 1):
            auth = self._auth_header(scopes, challenge, fresh=attempt > 0) if own else {}
            hdrs = {**(headers or {}), **auth}
            try:
                resp = self.http.request(method, url, headers=hdrs, body=content)
            except TransportError as e:
                raise RegistryError(f"{what}: {self._transport_error(e)}") from None
            if resp.status_code == 401 and attempt == 0 and own:
                new = parse_challenge(resp.headers.get("www-authenticate"))
                resp.close()
                if new.scheme in ("basic", "bearer") and (new.scheme == "bearer"
                                                          or self.credentials):
                    challenge = new
                    with self._lock:
                        self._challenge = new
                    continue
                self._raise_for(resp, what)
            if resp.status_code not in ok:
                self._raise_for(resp, what)
            if not stream:
                try:
                    if method != "HEAD":  # HEAD: Content-Length is the blob's, no body
                        read_bounded(resp, MAX_ERROR_BODY, what)  # small answers only
                finally:
                    resp.close()
            return resp
        raise AssertionError("unreachable")

    def _raise_for(self, resp: Response, what: str) -> None:
        detail = ""
        try:
            if not resp.is_closed:
                body = read_bounded(resp, MAX_ERROR_BODY, what)
                errs = json.loads(body).get("errors") or []
                detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                                   for e in errs if isinstance(e, dict))
        except (ValueError, AttributeError, RegistryError, TransportError):
            pass
        finally:
            resp.close()
        code = resp.status_code
        suffix = f" ({detail})" if detail else ""
        if code == 401:
            who = "incorrect username or password" if self.credentials else \
                f"authentication required; log in with `isobox login {self.registry}`"
            raise RegistryError(f"{what}: unauthorized: {who}{suffix}")
        if code == 403:
            raise RegistryError(f"{what}: denied: access forbidden{suffix}")
        if code == 404:
            raise NotFoundError(f"{what}: not found{suffix}")
        raise RegistryError(f"{what}: registry answered HTTP {code}{suffix}")

    # the distribution API ----------------------------------------------------------------
    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str, str | None]:
        """(exact bytes, Content-Type, Docker-Content-Digest header) of a manifest or index."""
        what = f"manifest {self.registry}/{repo}:{reference}" if ":" not in reference else \
            f"manifest {self.registry}/{repo}@{reference}"
        resp = self.send("GET", f"/v2/{repo}/manifests/{reference}", scopes=pull_scope(repo),
                         what=what, headers={"Accept": MANIFEST_ACCEPT}, stream=True)
        try:
            data = read_bounded(resp, oci.MAX_DOCUMENT_BYTES, what)
        finally:
            resp.close()
        ctype = resp.headers.get("content-type", "").split(";")[0].strip()
        return data, ctype, resp.headers.get("docker-content-digest")

    def open_blob(self, repo: str, digest: str, offset: int = 0) -> Response:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        return self.send("GET", f"/v2/{repo}/blobs/{digest}", scopes=pull_scope(repo),
                         what=f"blob {self.registry}/{repo}@{digest}", headers=headers,
                         ok=(200, 206), stream=True)

    def has_blob(self, repo: str, digest: str) -> bool:
        try:
            self.send("HEAD", f"/v2/{repo}/blobs/{digest}", scopes=push_scope(repo),
                      what=f"blob {self.registry}/{repo}@{digest}")
        except NotFoundError:
            return False
        return True

    def mount_blob(self, repo: str, digest: str, source_repo: str) -> str | None:
        """Cross-repository mount; ``None`` when mounted, else an upload location to use."""
        q = urlencode({"mount": digest, "from": source_repo})
        resp = self.send("POST", f"/v2/{repo}/blobs/uploads/?{q}",
                         scopes=(*push_scope(repo), f"repository:{source_repo}:pull"),
                         what=f"mount of {digest} from {source_repo} into "
                              f"{self.registry}/{repo}", ok=(201, 202))
        if resp.status_code == 201:
            return None
        return self._location(resp)

    def start_upload(self, repo: str) -> str:
        resp = self.send("POST", f"/v2/{repo}/blobs/uploads/", scopes=push_scope(repo),
                         what=f"upload to {self.registry}/{repo}", ok=(202,))
        return self._location(resp)

    def _location(self, resp: Response) -> str:
        loc: str | None = resp.headers.get("location")
        if not loc:
            raise RegistryError(f"registry {self.registry}: upload answer has no Location")
        full = urljoin(resp.url, loc)
        if urlsplit(full).scheme not in ("http", "https"):
            raise RegistryError(f"registry {self.registry}: invalid upload location {loc!r}")
        return full

    def finish_upload(self, repo: str, location: str, digest: str,
                      chunks: Callable[[], Iterator[bytes]], size: int) -> None:
        """Monolithic upload: ``PUT <location>&digest=…`` with the whole blob."""
        sep = "&" if "?" in location else "?"
        self.send("PUT", f"{location}{sep}{urlencode({'digest': digest})}",
                  scopes=push_scope(repo), what=f"upload of {digest} to {self.registry}/{repo}",
                  headers={"Content-Type": "application/octet-stream",
                           "Content-Length": str(size)},
                  content=chunks, ok=(201, 204))

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str | None:
        resp = self.send("PUT", f"/v2/{repo}/manifests/{reference}", scopes=push_scope(repo),
                         what=f"manifest {self.registry}/{repo}:{reference}",
                         headers={"Content-Type": media_type}, content=data, ok=(200, 201))
        answered: str | None = resp.headers.get("docker-content-digest")
        return answered


def same_origin(url: str, base: str) -> bool:
    """Same scheme, host and port (default ports made explicit)."""
    def origin(u: str) -> tuple[str, str, int | None]:
        parts = urlsplit(u)
        scheme = parts.scheme.lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
        return scheme, (parts.hostname or "").lower(), port
    try:
        return origin(url) == origin(base)
    except ValueError:  # an invalid port
        return False


def pull_scope(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull",)


def push_scope(repo: str) -> tuple[str, ...]:
    return (f"repository:{repo}:pull,push",)

