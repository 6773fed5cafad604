"""The OpenAPI 3.1 document of isobox's own endpoints (``GET /isobox/v1/openapi.json``).

Written as data next to the routes it describes; tests/api/test_native_openapi.py checks that
every registered ``/isobox/v1`` route is in it and every path in it is a route."""

from __future__ import annotations

from typing import Any

from isobox import __version__

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: tuple[str, ...] = (),
         description: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out


STR = {"type": "string"}
INT = {"type": "integer", "minimum": 0}
BOOL = {"type": "boolean"}
STRS = {"type": "array", "items": STR}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"message": STR}, ("message",)),
    "Document": {"type": "object", "description": "as `isobox inspect` prints it"},
    "VMSummary": _obj({
        "Id": STR, "Name": STR, "State": STR, "Cpus": INT,
        "Memory": {**INT, "description": "guest memory in bytes"},
        "Image": {**STR, "description": "the image booted (empty for a --disk VM)"},
        "Disk": {**STR, "description": "the root disk's path on the server"},
        "SavedState": {"oneOf": [{"type": "null"}, _obj({"File": STR, "Saved": STR})],
                       "description": "the latest `save`, restorable from File"},
    }, ("Id", "Name", "State", "Cpus", "Memory", "Image", "Disk", "SavedState")),
    "VMCreate": _obj({
        "Name": STR, "Image": {**STR, "description": "boot this image (exclusive with Disk)"},
        "Disk": {**STR, "description": "a raw/qcow2 disk on the server, used directly"},
        "Cpus": {**INT, "default": 1}, "Memory": {**INT, "description": "bytes; 0 = 512 MiB"},
        "DiskSize": {**INT, "description": "bytes, with Image; 0 = 4 GiB"},
        "Network": {**STR, "default": "bridge"},
        "Ports": {**STRS, "description": "as `-p`: [ip:]hostPort:guestPort[/proto]"},
    }, ("Name",)),
    "Created": _obj({"Id": STR, "Name": STR}, ("Id", "Name")),
    "VMInspect": _obj({
        "Id": STR, "Name": STR, "State": STR, "Cpus": INT, "MemoryMiB": INT,
        "BalloonMiB": INT, "Image": STR,
        "Disk": _obj({"Path": STR, "Format": STR, "Mode": STR, "SizeBytes": INT}),
        "Console": _obj({"Socket": STR, "Log": STR}),
        "NetworkSettings": {"type": ["object", "null"]},
        "HostConfig": _obj({"PortBindings": {"type": ["object", "null"]}}),
    }, ("Id", "Name", "State")),
    "VMResize": _obj({"Memory": {**INT, "description": "bytes (balloon when running)"},
                      "Cpus": {**INT, "description": "vCPUs at next boot"}}),
    "ResizeResult": _obj({"Lines": STRS}, ("Lines",)),
    "ExecRequest": _obj({
        "Cmd": STRS, "Env": STRS, "User": STR, "WorkingDir": STR,
        "Stdin": {**STR, "description": "written to the command's stdin, then closed"},
    }, ("Cmd",)),
    "ExecResult": _obj({
        "ExitCode": {"type": "integer"}, "Stdout": STR, "Stderr": STR,
        "Truncated": {**BOOL, "description": "a stream was longer than 16 MiB"},
    }, ("ExitCode", "Stdout", "Stderr", "Truncated")),
    "FileRequest": _obj({"File": {**STR, "description": "absolute path on the server"}},
                        ("File",)),
    "SaveResult": _obj({"File": STR, "Size": INT, "Seconds": {"type": "number"}},
                       ("File", "Size", "Seconds")),
    "Snapshot": _obj({
        "Name": STR, "Created": {"type": "number", "description": "Unix time"},
        "Kind": {"enum": ["vm", "container"]}, "Memory": BOOL, "Size": INT,
    }, ("Name", "Created", "Kind", "Memory", "Size")),
    "SnapshotCreate": _obj({"Name": STR, "Memory": {**BOOL, "default": False}}, ("Name",)),
    "Info": _obj({"Isobox": _obj({
        "RunDir": STR, "RuntimeRoot": STR, "Cgroups": {"type": "object"},
        "KVM": {"type": "object"}, "CRIU": {"type": "object"}, "Conmon": {"type": "object"},
        "VMAccelerator": _obj({"Name": STR, "Reason": STR}),
    })}, ("Isobox",), "Docker's /info keys plus the host capabilities isobox depends on"),
}

_ERRORS = {"400": "bad parameter (the message names the field)", "404": "no such object",
           "409": "conflict: the object is in the wrong state", "500": "server error"}


def _responses(ok: str, schema: str | None, *errors: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    code = ok.split()[0]
    if schema is None:
        out[code] = {"description": ok}
    else:
        out[code] = {"description": ok, "content": {JSON: {"schema": _ref(schema)}}}
    for e in errors:
        out[e] = {"description": _ERRORS.get(e, "the host cannot do it"),
                  "content": {JSON: {"schema": _ref("Error")}}}
    return out


def _op(op_id: str, summary: str, ok: str, schema: str | None, *errors: str,
        body: str | None = None, params: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": op_id, "summary": summary,
                          "responses": _responses(ok, schema, *errors, "500")}
    if body:
        op["requestBody"] = {"required": True, "content": {JSON: {"schema": _ref(body)}}}
    if params:
        op["parameters"] = list(params)
    return op


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": STR}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


VM = (_path("name"),)
SNAP = (_path("id"),)
T = _query("t", INT, "seconds of shutdown before SIGKILL (default 90)")


def paths() -> dict[str, dict[str, Any]]:
    p = "/isobox/v1"
    snaps = p + "/instances/{id}/snapshots"
    return {
        p + "/vms": {
            "get": _op("vmList", "List system VMs", "200 the VMs", None),
            "post": _op("vmCreate", "Create a system VM", "201 created", "Created",
                        "400", "404", "409", body="VMCreate"),
        },
        p + "/vms/{name}": {
            "get": _op("vmInspect", "Inspect a system VM", "200 settings, disk, console",
                       "VMInspect", "404", params=VM),
            "delete": _op("vmRemove", "Remove a system VM", "204 removed", None, "404", "409",
                          params=(*VM, _query("force", BOOL, "kill a running VM first"))),
        },
        **{p + f"/vms/{{name}}/{verb}": {"post": _op(
            f"vm{verb.capitalize()}", text, "204 done", None, "404", "409",
            params=(*VM, T) if verb in ("stop", "restart") else VM)}
           for verb, text in (("start", "Boot a system VM"),
                              ("stop", "Shut a system VM down (ACPI), SIGKILL after t"),
                              ("restart", "Shut down and boot again"),
                              ("kill", "Kill a system VM's QEMU"))},
        p + "/vms/{name}/resize": {"post": _op(
            "vmResize", "Change memory (live by balloon) or vCPUs (next boot)",
            "200 what applies now and what at next boot", "ResizeResult", "400", "404",
            body="VMResize", params=VM)},
        p + "/vms/{name}/exec": {"post": _op(
            "vmExec", "Run a command to its end in a booted VM", "200 output and exit code",
            "ExecResult", "400", "404", "409", body="ExecRequest", params=VM)},
        p + "/vms/{name}/save": {"post": _op(
            "vmSave", "Suspend a running VM to a file on the server", "200 saved",
            "SaveResult", "400", "404", "409", body="FileRequest", params=VM)},
        p + "/vms/restore": {"post": _op(
            "vmRestore", "Resume the VM a file was saved from", "200 restored", "Created",
            "400", "404", "409", body="FileRequest")},
        snaps: {
            "get": _op("snapshotList", "List an instance's snapshots", "200 oldest first",
                       None, "404", params=SNAP),
            "post": _op("snapshotCreate", "Snapshot an instance (with Memory: its running "
                        "state too)", "201 taken", "Snapshot", "400", "404", "409", "501",
                        body="SnapshotCreate", params=SNAP),
        },
        snaps + "/{name}": {"delete": _op("snapshotRemove", "Remove a snapshot", "204 removed",
                                          None, "404", params=(*SNAP, _path("name")))},
        snaps + "/{name}/restore": {"post": _op(
            "snapshotRestore", "Return an instance to a snapshot", "200 restored", "Snapshot",
            "404", "409", params=(*SNAP, _path("name")))},
        p + "/instances/{id}": {"get": _op(
            "instanceInspect", "isobox's inspect of a container, micro-VM or system VM",
            "200 the engine's document", "Document", "404",
            params=(*SNAP, _query("size", BOOL, "measure the filesystem")))},
        p + "/images/{name}": {"get": _op(
            "imageInspect", "isobox's inspect of an image (name, name:tag, name@digest, ID)",
            "200 the store's document", "Document", "404", params=(_path("name"),))},
        p + "/info": {"get": _op("hostInfo", "Host information (`isobox system info`)",
                                 "200 the host", "Info")},
        p + "/openapi.json": {"get": _op("openapi", "This document", "200 OpenAPI 3.1", None)},
    }


def _arrays(doc: dict[str, Any]) -> None:
    """The list operations answer arrays (not expressible through ``_op``'s schema name)."""
    ps = doc["paths"]
    ps["/isobox/v1/vms"]["get"]["responses"]["200"]["content"] = {
        JSON: {"schema": {"type": "array", "items": _ref("VMSummary")}}}
    ps["/isobox/v1/instances/{id}/snapshots"]["get"]["responses"]["200"]["content"] = {
        JSON: {"schema": {"type": "array", "items": _ref("Snapshot")}}}
    ps["/isobox/v1/openapi.json"]["get"]["responses"]["200"]["content"] = {
        JSON: {"schema": {"type": "object"}}}


def document() -> dict[str, Any]:
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "isobox native API", "version": __version__,
                 "description": "isobox's own endpoints, next to the Docker Engine API "
                 "(1.24-1.41) the same socket serves. A micro-VM run is Docker's "
                 "`POST /containers/create` with `HostConfig.Isolation: \"vm\"`. Errors are "
                 "Docker's `{\"message\": ...}` with 400/404/409/500."},
        "paths": paths(),
        "components": {"schemas": SCHEMAS},
    }
    _arrays(doc)
    return doc
