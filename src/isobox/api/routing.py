"""Paths to handlers: ``/v1.xx/…`` from the minimum to the advertised version (or no prefix:
the advertised one), ``{name}`` parameters, and one ``route`` decorator per resource module."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from isobox.api.errors import ApiError

if TYPE_CHECKING:
    from isobox.api.http import Exchange
    from isobox.api.server import ApiState

API_VERSION = "1.41"         # what /_ping and /version advertise (docker-api-notes.md §1)
MIN_API_VERSION = "1.24"

Handler = Callable[["ApiState", "Exchange", dict[str, str]], None]

_VERSIONED = re.compile(r"^/v(\d+)\.(\d+)(/.*)$")


def _ver(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def split_version(path: str) -> tuple[str, str]:
    """(API version, path without the prefix); 400 outside [MIN_API_VERSION, API_VERSION]."""
    m = _VERSIONED.match(path)
    if not m:
        return API_VERSION, path
    version = (int(m.group(1)), int(m.group(2)))
    text = f"{version[0]}.{version[1]}"
    if version > _ver(API_VERSION):
        raise ApiError(400, f"client version {text} is too new. Maximum supported API "
                       f"version is {API_VERSION}")
    if version < _ver(MIN_API_VERSION):
        raise ApiError(400, f"client version {text} is too old. Minimum supported API "
                       f"version is {MIN_API_VERSION}, please upgrade your client to a newer "
                       "version")
    return text, m.group(3)


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, method: str, template: str) -> Callable[[Handler], Handler]:
        """``{name}`` matches one path segment, ``{name:path}`` the rest (image names)."""
        def param(m: re.Match[str]) -> str:
            name, _, kind = m.group(1).partition(":")
            return f"(?P<{name}>.+)" if kind == "path" else f"(?P<{name}>[^/]+)"

        regex = "^" + re.sub(r"\{([^}]+)\}", param, template) + "$"

        def deco(fn: Handler) -> Handler:
            self.routes.append(Route(method, re.compile(regex), fn))
            return fn
        return deco

    def find(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        allowed = False
        for r in self.routes:
            m = r.pattern.match(path)
            if m is None:
                continue
            if r.method == method:
                return r.handler, {k: _unquote(v) for k, v in m.groupdict().items()}
            allowed = True
        if allowed:
            raise ApiError(405, f"method {method} not allowed for {path}")
        raise ApiError(404, f"page not found: {method} {path}")


def _unquote(text: str) -> str:
    from urllib.parse import unquote

    return unquote(text)


ROUTER = Router()
route = ROUTER.route


def load_routes() -> Router:
    """Import every resource module (each registers its routes on :data:`ROUTER`)."""
    from isobox.api import exec as _exec  # noqa: F401
    from isobox.api import routes_build as _build  # noqa: F401
    from isobox.api import (  # noqa: F401  # noqa: F401
        routes_container_io,
        routes_containers,
        routes_isobox,
        routes_isobox_host,
        routes_system,
    )
    from isobox.api import routes_image_io as _image_io  # noqa: F401
    from isobox.api import routes_images as _images  # noqa: F401
    from isobox.api import routes_networks as _networks  # noqa: F401
    from isobox.api import routes_volumes as _volumes  # noqa: F401

    return ROUTER

