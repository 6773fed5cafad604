"""``spec``: write a default config.json (the same content ``runc spec`` writes)."""

from __future__ import annotations

import os

from isobox.errors import ConflictError


def write_spec(bundle: str, rootless: bool) -> str:
    import json

    from isobox.oci.defaults import default_spec

    path = os.path.join(bundle, "config.json")
    if os.path.exists(path):
        raise ConflictError(f"File {path} exists. Remove it first")
    with open(path, "x") as f:
        json.dump(default_spec(rootless=rootless), f, indent="\t")
        f.write("\n")
    return path
