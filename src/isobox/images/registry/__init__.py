"""The registry client (OCI distribution spec): ``pull``, ``push``, ``login``/``logout``.

* :mod:`.transport` — HTTP/1.1 on ``_socket``: keep-alive, redirects, proxies.
* :mod:`.client` — TLS/insecure policy, auth challenges (anonymous, basic, bearer tokens
  from the ``WWW-Authenticate`` realm), bounded reads, the distribution API calls.
* :mod:`.auth` — the credentials file ``<root>/auth.json`` (Docker's ``auths`` format).
* :mod:`.pull` / :mod:`.push` — moving images between a registry and the local store.

The names below are loaded on first use: a pull does not pay for importing push.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from isobox.images.registry.client import RegistryClient, RegistryOptions
    from isobox.images.registry.pull import pull_image
    from isobox.images.registry.push import push_image

_HOMES = {"RegistryClient": "client", "RegistryOptions": "client", "pull_image": "pull",
          "push_image": "push"}
__all__ = ["RegistryClient", "RegistryOptions", "pull_image", "push_image"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
