"""Registry credentials: ``<root>/auth.json`` in the ``auths`` format of Docker's
``config.json`` (``{"auths": {"host": {"auth": base64("user:password")}}}``), mode 0600,
written atomically. ``login`` checks the credentials against the registry before saving.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from isobox.atomicfile import atomic_file
from isobox.errors import ConfigError, NotFoundError, RegistryError
from isobox.images.registry.client import RegistryClient, RegistryOptions

DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io",
                   "https://index.docker.io/v1/")


def normalize_host(host: str) -> str:
    """``https://reg.example:5000/v2/`` → ``reg.example:5000``; Docker Hub → ``docker.io``."""
    h = host.strip()
    for prefix in ("https://", "http://"):
        h = h.removeprefix(prefix)
    h = h.split("/")[0]
    if not h:
        raise ConfigError("registry", f"invalid registry {host!r}")
    return "docker.io" if h in DOCKER_HUB_KEYS or host in DOCKER_HUB_KEYS else h


class AuthFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                data = f.read(1 << 20)
        except FileNotFoundError:
            return {"auths": {}}
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise ConfigError(self.path, f"invalid JSON: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.setdefault("auths", {}), dict):
            raise ConfigError(self.path, 'expected {"auths": {...}}')
        return doc

    def save(self, doc: dict[str, Any]) -> None:
        d = os.path.dirname(self.path) or "."
        os.makedirs(d, mode=0o700, exist_ok=True)
        with atomic_file(self.path, 0o600) as f:
            f.write(json.dumps(doc, indent=2).encode())

    def get(self, registry: str) -> tuple[str, str] | None:
        auths = self.load()["auths"]
        keys = [registry, f"https://{registry}", f"http://{registry}"]
        if registry == "docker.io":
            keys += list(DOCKER_HUB_KEYS)
        for key in keys:
            entry = auths.get(key)
            if isinstance(entry, dict):
                return _decode(entry, self.path, key)
        return None

    def set(self, registry: str, username: str, password: str) -> None:
        doc = self.load()
        raw = base64.b64encode(f"{username}:{password}".encode()).decode()
        doc["auths"][normalize_host(registry)] = {"auth": raw}
        self.save(doc)

    def remove(self, registry: str) -> None:
        doc = self.load()
        host = normalize_host(registry)
        keys = [k for k in doc["auths"] if k in (host, f"https://{host}", f"http://{host}")
                or (host == "docker.io" and k in DOCKER_HUB_KEYS)]
        if not keys:
            raise NotFoundError(f"not logged in to {host}")
        for k in keys:
            del doc["auths"][k]
        self.save(doc)


def _decode(entry: dict[str, Any], path: str, key: str) -> tuple[str, str]:
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, sep, password = base64.b64decode(entry["auth"], validate=True).decode() \
                .partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise ConfigError(f"{path}: auths.{key}.auth", "not base64 of user:password") \
                from None
        if not sep:
            raise ConfigError(f"{path}: auths.{key}.auth", "not base64 of user:password")
        return user, password
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str):
        return name, secret
    raise ConfigError(f"{path}: auths.{key}", "no credentials")


def login(registry: str, username: str, password: str, options: RegistryOptions) -> str:
    """Verify the credentials against ``registry``'s ``/v2/`` and store them."""
    host = normalize_host(registry)
    if not username or not password:
        raise ConfigError("login", "username and password are required")
    if not options.auth_file:
        raise ConfigError("login", "no credentials file configured")
    with RegistryClient(host, options, (username, password)) as client:
        challenge = client.ping()
        if challenge.scheme:
            client.send("GET", "/v2/", scopes=(), what=f"login to {host}")
    AuthFile(options.auth_file).set(host, username, password)
    return host


def logout(registry: str, options: RegistryOptions) -> str:
    if not options.auth_file:
        raise ConfigError("logout", "no credentials file configured")
    host = normalize_host(registry)
    AuthFile(options.auth_file).remove(host)
    return host


__all__ = ["AuthFile", "RegistryError", "login", "logout", "normalize_host"]
