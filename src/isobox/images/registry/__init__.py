"""The registry client (OCI distribution spec): ``pull``, ``push``, ``login``/``logout``.

* :mod:`.client` — HTTP transport, TLS/insecure policy, auth challenges (anonymous, basic,
  bearer tokens from the ``WWW-Authenticate`` realm), bounded reads.
* :mod:`.auth` — the credentials file ``<root>/auth.json`` (Docker's ``auths`` format).
* :mod:`.pull` / :mod:`.push` — moving images between a registry and the local store.
"""

from __future__ import annotations

from isobox.images.registry.client import RegistryClient, RegistryOptions
from isobox.images.registry.pull import pull_image
from isobox.images.registry.push import push_image

__all__ = ["RegistryClient", "RegistryOptions", "pull_image", "push_image"]
