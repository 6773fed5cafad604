"""Typed results of :mod:`isobox.api.client`, each built from the server's JSON (Docker's
shapes for containers, images, networks and volumes; the native API's for VMs and snapshots).
Kept apart from the client so the CLI can use them without importing httpx."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Port:
    private_port: int
    type: str = "tcp"
    public_port: int = 0          # 0: exposed, not published
    ip: str = ""

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Port:
        return cls(int(d.get("PrivatePort") or 0), str(d.get("Type") or "tcp"),
                   int(d.get("PublicPort") or 0), str(d.get("IP") or ""))


@dataclass(frozen=True)
class ContainerSummary:
    """An entry of ``GET /containers/json``."""

    id: str
    name: str
    image: str
    image_id: str
    command: str
    created: int
    state: str
    status: str
    ports: tuple[Port, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    network_mode: str = ""
    isolation: str = "container"

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ContainerSummary:
        names = d.get("Names") or [""]
        hc = d.get("HostConfig") or {}
        return cls(id=str(d["Id"]), name=str(names[0]).lstrip("/"), image=str(d.get("Image")),
                   image_id=str(d.get("ImageID") or ""), command=str(d.get("Command") or ""),
                   created=int(d.get("Created") or 0), state=str(d.get("State") or ""),
                   status=str(d.get("Status") or ""),
                   ports=tuple(Port.from_json(p) for p in d.get("Ports") or []),
                   labels=dict(d.get("Labels") or {}),
                   network_mode=str(hc.get("NetworkMode") or ""),
                   isolation="vm" if hc.get("Isolation") == "vm" else "container")


@dataclass(frozen=True)
class ImageSummary:
    """An entry of ``GET /images/json``."""

    id: str
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    created: int
    size: int
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id.removeprefix("sha256:")[:12]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ImageSummary:
        return cls(id=str(d["Id"]),
                   repo_tags=tuple(t for t in d.get("RepoTags") or [] if t != "<none>:<none>"),
                   repo_digests=tuple(t for t in d.get("RepoDigests") or []
                                      if t != "<none>@<none>"),
                   created=int(d.get("Created") or 0), size=int(d.get("Size") or 0),
                   labels=dict(d.get("Labels") or {}))


@dataclass(frozen=True)
class NetworkSummary:
    id: str
    name: str
    driver: str
    scope: str
    subnet: str = ""
    gateway: str = ""
    internal: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    created: str = ""             # RFC 3339

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NetworkSummary:
        config = ((d.get("IPAM") or {}).get("Config") or [{}])[0]
        return cls(id=str(d["Id"]), name=str(d["Name"]), driver=str(d.get("Driver") or ""),
                   scope=str(d.get("Scope") or "local"), subnet=str(config.get("Subnet") or ""),
                   gateway=str(config.get("Gateway") or ""),
                   internal=bool(d.get("Internal")), labels=dict(d.get("Labels") or {}),
                   created=str(d.get("Created") or ""))


@dataclass(frozen=True)
class VolumeSummary:
    name: str
    driver: str
    mountpoint: str
    created_at: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VolumeSummary:
        return cls(name=str(d["Name"]), driver=str(d.get("Driver") or "local"),
                   mountpoint=str(d.get("Mountpoint") or ""),
                   created_at=str(d.get("CreatedAt") or ""), labels=dict(d.get("Labels") or {}))


@dataclass(frozen=True)
class VMSummary:
    """An entry of ``GET /isobox/v1/vms``."""

    id: str
    name: str
    state: str
    cpus: int
    memory: int
    image: str
    disk: str
    saved_file: str = ""

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> VMSummary:
        saved = d.get("SavedState") or {}
        return cls(id=str(d["Id"]), name=str(d["Name"]), state=str(d["State"]),
                   cpus=int(d["Cpus"]), memory=int(d["Memory"]), image=str(d.get("Image") or ""),
                   disk=str(d.get("Disk") or ""), saved_file=str(saved.get("File") or ""))


@dataclass(frozen=True)
class Snapshot:
    name: str
    created: float
    kind: str
    memory: bool
    size: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Snapshot:
        return cls(name=str(d["Name"]), created=float(d["Created"]), kind=str(d["Kind"]),
                   memory=bool(d["Memory"]), size=int(d["Size"]))

    def to_dict(self) -> dict[str, Any]:
        """As ``isobox snapshot ls --format json`` prints it (the engine's field names)."""
        return {"name": self.name, "created": self.created, "kind": self.kind,
                "memory": self.memory, "size": self.size}


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class SaveResult:
    path: str
    size: int
    seconds: float


@dataclass(frozen=True)
class LogChunk:
    stream: str        # "stdout" or "stderr"
    data: bytes
