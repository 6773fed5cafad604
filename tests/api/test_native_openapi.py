"""The OpenAPI document of `/isobox/v1` matches the registered routes both ways, and is a
well-formed OpenAPI 3.1 document (every $ref resolves, every operation has responses)."""

from __future__ import annotations

import json
import re
from typing import Any

from isobox.api.openapi import document
from isobox.api.routing import load_routes

METHODS = ("get", "post", "put", "delete", "head", "patch")


def _registered() -> set[tuple[str, str]]:
    """(method, template) of every /isobox/v1 route, the template rebuilt from its regex."""
    out = set()
    for r in load_routes().routes:
        text = r.pattern.pattern
        if not text.startswith("^/isobox/v1"):
            continue
        template = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", text.strip("^$"))
        out.add((r.method.lower(), template))
    return out


def _documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m, path) for path, ops in doc["paths"].items() for m in ops if m in METHODS}


def test_every_route_is_documented_and_every_documented_path_is_a_route() -> None:
    doc = document()
    routes, documented = _registered(), _documented(doc)
    assert routes, "no /isobox/v1 routes registered"
    assert routes - documented == set(), "routes missing from the OpenAPI document"
    assert documented - routes == set(), "documented paths with no route"


def test_document_is_well_formed() -> None:
    doc = json.loads(json.dumps(document()))  # plain JSON
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    refs = re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(doc))
    assert refs and set(refs) <= set(schemas)
    ids = []
    for path, ops in doc["paths"].items():
        params_in_path = set(re.findall(r"\{(\w+)\}", path))
        for method, op in ops.items():
            assert op["responses"], (method, path)
            ids.append(op["operationId"])
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == params_in_path, (method, path)
            for status, resp in op["responses"].items():
                if int(status) >= 400:
                    assert resp["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"}
    assert len(ids) == len(set(ids)), "operationIds must be unique"
