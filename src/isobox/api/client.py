"""``isobox.api.client``: a typed, synchronous client of ``isobox serve``.

It covers isobox's own endpoints (system VMs, snapshots of any instance, host information)
and the common Docker calls (containers, exec, logs, images, pull, networks, volumes)::

    from isobox.api.client import Client

    with Client("unix:///run/isobox/isobox.sock") as c:
        result = c.run("busybox", ["echo", "hi"], remove=True)   # RunResult(exit_code=0, …)
        cid = c.run("busybox", ["sleep", "60"], detach=True, isolation="vm")
        c.snapshot_create(cid, "before")
        for vm in c.vms():
            print(vm.name, vm.state)

Results are dataclasses (:mod:`isobox.api.client_types`); error statuses raise
:mod:`isobox.api.client_errors` types that are also the engine's (``NotFound`` is a
:class:`~isobox.errors.NotFoundError`, ``Conflict`` a :class:`~isobox.errors.ConflictError`,
``BadRequest`` a :class:`~isobox.errors.ConfigError`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from isobox.api.client_create import create_body
from isobox.api.client_errors import ConnectError, NotFound, error_for
from isobox.api.client_stream import DEFAULT_URL, Endpoint, Hijacked, demux, hijack
from isobox.api.client_types import (
    ContainerSummary,
    ExecResult,
    ImageSummary,
    LogChunk,
    NetworkSummary,
    SaveResult,
    Snapshot,
    VMSummary,
    VolumeSummary,
)
from isobox.engine.options import CreateOptions
from isobox.errors import RegistryError

NATIVE = "/isobox/v1"


def _q(ref: str) -> str:
    return quote(ref, safe="")


def _filters(filters: Mapping[str, Sequence[str]] | None) -> str | None:
    if not filters:
        return None
    return json.dumps({k: dict.fromkeys(v, True) for k, v in filters.items()})


@dataclass(frozen=True)
class RunResult:
    id: str
    exit_code: int
    stdout: bytes
    stderr: bytes


class Waiter:
    """``POST /containers/{id}/wait`` sent now (its headers come at once), read later."""

    def __init__(self, client: Client, cid: str, condition: str) -> None:
        self._cm = client._http.stream("POST", f"/containers/{_q(cid)}/wait",
                                       params={"condition": condition}, timeout=None)
        self._resp = self._cm.__enter__()
        if self._resp.status_code != 200:
            self._resp.read()
            self.close()
            raise _error(self._resp)

    def exit_code(self) -> int:
        try:
            data = json.loads(self._resp.read() or b"{}")
        finally:
            self.close()
        return int(data.get("StatusCode", -1))

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


def _output(stream: Hijacked, tty: bool) -> Iterator[tuple[str, bytes]]:
    """(stream name, data) of a hijacked stream: raw with a terminal, else demultiplexed."""
    if tty:
        for data in stream.chunks():
            yield "stdout", data
    else:
        yield from demux(stream.chunks())


class Attached:
    """A started container's output (hijacked attach) and, once it ends, its exit code."""

    def __init__(self, stream: Hijacked, waiter: Waiter, tty: bool) -> None:
        self.stream = stream
        self.waiter = waiter
        self.tty = tty

    def output(self) -> Iterator[tuple[str, bytes]]:
        return _output(self.stream, self.tty)

    def exit_code(self) -> int:
        self.stream.close()
        return self.waiter.exit_code()

    def close(self) -> None:
        self.stream.close()
        self.waiter.close()


class ExecSession:
    """A running exec: its output, then its exit code."""

    def __init__(self, client: Client, exec_id: str, stream: Hijacked, tty: bool) -> None:
        self.client = client
        self.id = exec_id
        self.stream = stream
        self.tty = tty

    def output(self) -> Iterator[tuple[str, bytes]]:
        return _output(self.stream, self.tty)

    def exit_code(self, timeout: float = 10.0) -> int:
        """After the output ended: the process's code (the server records it as it reaps)."""
        self.stream.close()
        deadline = time.monotonic() + timeout
        while True:
            info = self.client._json("GET", f"/exec/{_q(self.id)}/json")
            if not info.get("Running") or time.monotonic() > deadline:
                return int(info.get("ExitCode") or 0)
            time.sleep(0.02)


def _error(resp: httpx.Response) -> Exception:
    try:
        message = str(resp.json().get("message") or "")
    except (ValueError, AttributeError):
        message = resp.text.strip()
    return error_for(resp.status_code, message)


class Client:
    """One server; thread-safe as httpx's client is (one connection pool)."""

    def __init__(self, url: str = DEFAULT_URL, *, tls_cert: str = "", tls_key: str = "",
                 tls_ca: str = "", timeout: float = 120.0) -> None:
        self.endpoint = Endpoint.parse(url, tls_cert=tls_cert, tls_key=tls_key, tls_ca=tls_ca)
        transport = httpx.HTTPTransport(uds=self.endpoint.socket_path or None,
                                        verify=self.endpoint.tls or True)
        self._http = httpx.Client(base_url=self.endpoint.base_url, transport=transport,
                                  timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # plumbing ------------------------------------------------------------------------------
    def _send(self, method: str, path: str, *, params: dict[str, Any] | None = None,
              body: Any = None, timeout: float | bool | None = False) -> httpx.Response:
        kw: dict[str, Any] = {}
        if timeout is not False:
            kw["timeout"] = timeout
        try:
            resp = self._http.request(method, path, params=_clean(params),
                                      json=body, **kw)
        except httpx.TransportError as e:
            raise ConnectError(f"cannot reach {self.endpoint.url}: {e}") from None
        if resp.status_code >= 400:
            raise _error(resp)
        return resp

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self._send(method, path, **kw)
        return resp.json() if resp.content else None

    def _lines(self, method: str, path: str, params: dict[str, Any] | None = None
               ) -> Iterator[dict[str, Any]]:
        """A JSON-lines stream (pull progress); an in-band error raises."""
        try:
            with self._http.stream(method, path, params=_clean(params), timeout=None) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error(resp)
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    if msg.get("error"):
                        raise RegistryError(str(msg["error"]))
                    yield msg
        except httpx.TransportError as e:
            raise ConnectError(f"cannot reach {self.endpoint.url}: {e}") from None

    # system --------------------------------------------------------------------------------
    def ping(self) -> bool:
        return self._send("GET", "/_ping").text == "OK"

    def version(self) -> dict[str, Any]:
        return dict(self._json("GET", "/version"))

    def info(self) -> dict[str, Any]:
        """What ``isobox system info --format json`` prints, for the server's host."""
        return dict(self._json("GET", NATIVE + "/info"))

    def openapi(self) -> dict[str, Any]:
        return dict(self._json("GET", NATIVE + "/openapi.json"))

    # containers ----------------------------------------------------------------------------
    def containers(self, all: bool = False, filters: Mapping[str, Sequence[str]] | None = None,
                   limit: int | None = None) -> list[ContainerSummary]:
        data = self._json("GET", "/containers/json",
                          params={"all": "1" if all else None, "filters": _filters(filters),
                                  "limit": limit if limit and limit > 0 else None})
        return [ContainerSummary.from_json(d) for d in data]

    def inspect(self, ref: str, size: bool = False) -> dict[str, Any]:
        return dict(self._json("GET", f"/containers/{_q(ref)}/json",
                               params={"size": "1" if size else None}))

    def create(self, image: str, command: Sequence[str] | None = None, *, name: str = "",
               **fields: Any) -> str:
        """A container from ``image``; ``fields`` are :class:`CreateOptions` fields
        (``env=("A=1",)``, ``isolation="vm"``, ``auto_remove=True``, …)."""
        return self.create_from(CreateOptions(
            image=image, command=tuple(command) if command is not None else None, name=name,
            **fields))

    def create_from(self, opts: CreateOptions) -> str:
        data = self._json("POST", "/containers/create", params={"name": opts.name or None},
                          body=create_body(opts))
        return str(data["Id"])

    def start(self, ref: str) -> None:
        self._send("POST", f"/containers/{_q(ref)}/start")

    def stop(self, ref: str, timeout: int | None = None, signal: str = "") -> None:
        self._send("POST", f"/containers/{_q(ref)}/stop",
                   params={"t": timeout, "signal": signal or None}, timeout=None)

    def restart(self, ref: str, timeout: int | None = None) -> None:
        self._send("POST", f"/containers/{_q(ref)}/restart", params={"t": timeout},
                   timeout=None)

    def kill(self, ref: str, signal: str = "KILL") -> None:
        self._send("POST", f"/containers/{_q(ref)}/kill", params={"signal": signal})

    def pause(self, ref: str) -> None:
        self._send("POST", f"/containers/{_q(ref)}/pause")

    def unpause(self, ref: str) -> None:
        self._send("POST", f"/containers/{_q(ref)}/unpause")

    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        self._send("DELETE", f"/containers/{_q(ref)}",
                   params={"force": "1" if force else None, "v": "1" if volumes else None},
                   timeout=None)

    def wait(self, ref: str, condition: str = "not-running") -> int:
        data = self._json("POST", f"/containers/{_q(ref)}/wait",
                          params={"condition": condition}, timeout=None)
        return int(data["StatusCode"])

    def start_attached(self, cid: str, *, tty: bool, auto_remove: bool = False) -> Attached:
        """Attach (output only), send the wait, start: as ``docker run`` does, so no output is
        lost and the exit code of an ``auto_remove`` container is still known."""
        stream = hijack(self.endpoint, "POST", f"/containers/{_q(cid)}/attach?stream=1&"
                        "stdout=1&stderr=1")
        try:
            waiter = Waiter(self, cid, "removed" if auto_remove else "next-exit")
        except BaseException:
            stream.close()
            raise
        try:
            self.start(cid)
        except BaseException:
            stream.close()
            waiter.close()
            raise
        return Attached(stream, waiter, tty)

    def run(self, image: str, command: Sequence[str] | None = None, *, detach: bool = False,
            remove: bool = False, name: str = "", **fields: Any) -> RunResult | str:
        """``detach``: the started container's id. Else its output and exit code once it
        ends (``remove``: then removed)."""
        cid = self.create(image, command, name=name, auto_remove=remove, **fields)
        if detach:
            self.start(cid)
            return cid
        att = self.start_attached(cid, tty=bool(fields.get("tty")), auto_remove=remove)
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        try:
            for stream, data in att.output():
                out.setdefault(stream, []).append(data)
            code = att.exit_code()
        finally:
            att.close()
        return RunResult(cid, code, b"".join(out["stdout"]), b"".join(out["stderr"]))

    def logs(self, ref: str, *, follow: bool = False, tail: str = "all",
             since: float | None = None, until: float | None = None,
             timestamps: bool = False, stdout: bool = True, stderr: bool = True
             ) -> Iterator[LogChunk]:
        tty = bool((self.inspect(ref).get("Config") or {}).get("Tty"))
        params = {"stdout": "1" if stdout else "0", "stderr": "1" if stderr else "0",
                  "follow": "1" if follow else None, "tail": tail,
                  "since": f"{since:.9f}" if since is not None else None,
                  "until": f"{until:.9f}" if until is not None else None,
                  "timestamps": "1" if timestamps else None}
        try:
            with self._http.stream("GET", f"/containers/{_q(ref)}/logs",
                                   params=_clean(params), timeout=None) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error(resp)
                if tty:
                    for data in resp.iter_raw():
                        yield LogChunk("stdout", data)
                else:
                    for stream, data in demux(resp.iter_raw()):
                        yield LogChunk(stream, data)
        except httpx.TransportError as e:
            raise ConnectError(f"cannot reach {self.endpoint.url}: {e}") from None

    def exec_start(self, ref: str, cmd: Sequence[str], *, env: Sequence[str] = (),
                   user: str = "", workdir: str = "", tty: bool = False,
                   privileged: bool = False, stdin: bool = False) -> ExecSession:
        data = self._json("POST", f"/containers/{_q(ref)}/exec", body={
            "Cmd": list(cmd), "Env": list(env), "User": user, "WorkingDir": workdir,
            "Tty": tty, "Privileged": privileged, "AttachStdin": stdin,
            "AttachStdout": True, "AttachStderr": True})
        exec_id = str(data["Id"])
        stream = hijack(self.endpoint, "POST", f"/exec/{_q(exec_id)}/start",
                        {"Detach": False, "Tty": tty})
        return ExecSession(self, exec_id, stream, tty)

    def exec_detached(self, ref: str, cmd: Sequence[str], *, env: Sequence[str] = (),
                      user: str = "", workdir: str = "", privileged: bool = False) -> str:
        data = self._json("POST", f"/containers/{_q(ref)}/exec", body={
            "Cmd": list(cmd), "Env": list(env), "User": user, "WorkingDir": workdir,
            "Privileged": privileged, "Detach": True})
        self._send("POST", f"/exec/{_q(data['Id'])}/start", body={"Detach": True})
        return str(data["Id"])

    def exec(self, ref: str, cmd: Sequence[str], *, stdin: bytes | None = None,
             **kw: Any) -> ExecResult:
        """Run ``cmd`` in a running container to its end: output and exit code."""
        session = self.exec_start(ref, cmd, stdin=stdin is not None, **kw)
        try:
            if stdin is not None:
                session.stream.send(stdin)
                session.stream.close_input()
            out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
            for stream, data in session.output():
                out.setdefault(stream, []).append(data)
            code = session.exit_code()
        finally:
            session.stream.close()
        return ExecResult(code, b"".join(out["stdout"]), b"".join(out["stderr"]))

    # images --------------------------------------------------------------------------------
    def images(self, all: bool = False, filters: Mapping[str, Sequence[str]] | None = None
               ) -> list[ImageSummary]:
        data = self._json("GET", "/images/json", params={"all": "1" if all else None,
                                                         "filters": _filters(filters)})
        return [ImageSummary.from_json(d) for d in data]

    def image_inspect(self, ref: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/images/{_q(ref)}/json"))

    def pull_progress(self, ref: str, platform: str = "") -> Iterator[dict[str, Any]]:
        """Docker's pull messages as they come (``status``, ``id``, ``progressDetail``)."""
        name, tag = _split_tag(ref)
        return self._lines("POST", "/images/create", {
            "fromImage": name, "tag": tag or None, "platform": platform or None})

    def pull(self, ref: str, platform: str = "") -> str:
        """Pull ``ref`` to the server's store; the image's ID."""
        for _ in self.pull_progress(ref, platform):
            pass
        name, tag = _split_tag(ref)
        wanted = f"{name}@{tag}" if tag.startswith("sha256:") else f"{name}:{tag or 'latest'}"
        return str(self.image_inspect(wanted)["Id"])

    def remove_image(self, ref: str, force: bool = False) -> list[dict[str, str]]:
        return list(self._json("DELETE", f"/images/{_q(ref)}",
                               params={"force": "1" if force else None}))

    def tag(self, source: str, target: str) -> None:
        repo, tag = _split_tag(target)
        self._send("POST", f"/images/{_q(source)}/tag", params={"repo": repo,
                                                                "tag": tag or None})

    # networks and volumes ------------------------------------------------------------------
    def networks(self, filters: Mapping[str, Sequence[str]] | None = None
                 ) -> list[NetworkSummary]:
        data = self._json("GET", "/networks", params={"filters": _filters(filters)})
        return [NetworkSummary.from_json(d) for d in data]

    def network_inspect(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/networks/{_q(name)}"))

    def network_create(self, name: str, *, driver: str = "bridge", subnet: str = "",
                       gateway: str = "", internal: bool = False,
                       labels: dict[str, str] | None = None) -> str:
        config = [{k: v for k, v in (("Subnet", subnet), ("Gateway", gateway)) if v}]
        data = self._json("POST", "/networks/create", body={
            "Name": name, "Driver": driver, "Internal": internal, "Labels": labels or {},
            "IPAM": {"Driver": "default", "Config": config if config[0] else []}})
        return str(data["Id"])

    def network_remove(self, name: str) -> None:
        self._send("DELETE", f"/networks/{_q(name)}")

    def volumes(self, filters: Mapping[str, Sequence[str]] | None = None) -> list[VolumeSummary]:
        data = self._json("GET", "/volumes", params={"filters": _filters(filters)})
        return [VolumeSummary.from_json(d) for d in data.get("Volumes") or []]

    def volume_inspect(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/volumes/{_q(name)}"))

    def volume_create(self, name: str = "", *, driver: str = "local",
                      labels: dict[str, str] | None = None,
                      options: dict[str, str] | None = None) -> VolumeSummary:
        return VolumeSummary.from_json(self._json("POST", "/volumes/create", body={
            "Name": name, "Driver": driver, "Labels": labels or {},
            "DriverOpts": options or {}}))

    def volume_remove(self, name: str, force: bool = False) -> None:
        self._send("DELETE", f"/volumes/{_q(name)}", params={"force": "1" if force else None})

    # isobox's own documents (native) ------------------------------------------------------
    def instance_inspect(self, ref: str, size: bool = False) -> dict[str, Any]:
        """``isobox inspect`` of a container or VM (Docker's is :meth:`inspect`)."""
        return dict(self._json("GET", f"{NATIVE}/instances/{_q(ref)}",
                               params={"size": "1" if size else None}))

    def image_document(self, ref: str) -> dict[str, Any]:
        """``isobox image inspect`` (Docker's is :meth:`image_inspect`)."""
        return dict(self._json("GET", f"{NATIVE}/images/{_q(ref)}"))

    # system VMs (native) -------------------------------------------------------------------
    def vms(self) -> list[VMSummary]:
        return [VMSummary.from_json(d) for d in self._json("GET", NATIVE + "/vms")]

    def vm_create(self, name: str, *, image: str = "", disk: str = "", cpus: int = 1,
                  memory: int = 0, disk_size: int = 0, network: str = "bridge",
                  ports: Sequence[str] = ()) -> str:
        """``memory``/``disk_size`` in bytes (0: 512 MiB / 4 GiB); ``ports`` as ``-p``."""
        data = self._json("POST", NATIVE + "/vms", body={
            "Name": name, "Image": image, "Disk": disk, "Cpus": cpus, "Memory": memory,
            "DiskSize": disk_size, "Network": network, "Ports": list(ports)})
        return str(data["Id"])

    def vm_inspect(self, name: str) -> dict[str, Any]:
        return dict(self._json("GET", f"{NATIVE}/vms/{_q(name)}"))

    def vm_start(self, name: str) -> None:
        self._send("POST", f"{NATIVE}/vms/{_q(name)}/start", timeout=None)

    def vm_stop(self, name: str, timeout: int | None = None) -> None:
        self._send("POST", f"{NATIVE}/vms/{_q(name)}/stop", params={"t": timeout},
                   timeout=None)

    def vm_restart(self, name: str, timeout: int | None = None) -> None:
        self._send("POST", f"{NATIVE}/vms/{_q(name)}/restart", params={"t": timeout},
                   timeout=None)

    def vm_kill(self, name: str) -> None:
        self._send("POST", f"{NATIVE}/vms/{_q(name)}/kill")

    def vm_remove(self, name: str, force: bool = False) -> None:
        self._send("DELETE", f"{NATIVE}/vms/{_q(name)}",
                   params={"force": "1" if force else None}, timeout=None)

    def vm_resize(self, name: str, *, memory: int = 0, cpus: int = 0) -> list[str]:
        data = self._json("POST", f"{NATIVE}/vms/{_q(name)}/resize",
                          body={"Memory": memory, "Cpus": cpus})
        return [str(line) for line in data["Lines"]]

    def vm_exec(self, name: str, cmd: Sequence[str], *, env: Sequence[str] = (),
                user: str = "", workdir: str = "", stdin: str = "") -> ExecResult:
        data = self._json("POST", f"{NATIVE}/vms/{_q(name)}/exec", body={
            "Cmd": list(cmd), "Env": list(env), "User": user, "WorkingDir": workdir,
            "Stdin": stdin}, timeout=None)
        return ExecResult(int(data["ExitCode"]), data["Stdout"].encode(),
                          data["Stderr"].encode())

    def vm_save(self, name: str, file: str) -> SaveResult:
        """``file``: a path on the server's host."""
        data = self._json("POST", f"{NATIVE}/vms/{_q(name)}/save", body={"File": file},
                          timeout=None)
        return SaveResult(str(data["File"]), int(data["Size"]), float(data["Seconds"]))

    def vm_restore(self, file: str) -> str:
        data = self._json("POST", NATIVE + "/vms/restore", body={"File": file}, timeout=None)
        return str(data["Name"])

    # snapshots of any instance (native) ----------------------------------------------------
    def snapshots(self, ref: str) -> list[Snapshot]:
        return [Snapshot.from_json(d)
                for d in self._json("GET", f"{NATIVE}/instances/{_q(ref)}/snapshots")]

    def snapshot_create(self, ref: str, name: str, memory: bool = False) -> Snapshot:
        return Snapshot.from_json(self._json(
            "POST", f"{NATIVE}/instances/{_q(ref)}/snapshots",
            body={"Name": name, "Memory": memory}, timeout=None))

    def snapshot_restore(self, ref: str, name: str) -> Snapshot:
        return Snapshot.from_json(self._json(
            "POST", f"{NATIVE}/instances/{_q(ref)}/snapshots/{_q(name)}/restore", timeout=None))

    def snapshot_remove(self, ref: str, name: str) -> None:
        self._send("DELETE", f"{NATIVE}/instances/{_q(ref)}/snapshots/{_q(name)}",
                   timeout=None)


def _clean(params: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: v for k, v in params.items() if v is not None} if params else None


def _split_tag(ref: str) -> tuple[str, str]:
    """``name:tag`` / ``name@digest`` → (name, tag or digest); a registry's port is no tag."""
    if "@" in ref:
        name, _, digest = ref.partition("@")
        return name, digest
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, ""
    return name, tag


__all__ = ["Attached", "Client", "ExecSession", "NotFound", "RunResult", "Waiter"]
