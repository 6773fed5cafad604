"""Images in and out: ``POST /images/load``, ``GET /images/get`` (save), ``POST /images/create``
(import a rootfs tar from the body with ``fromSrc=-``, or pull with ``fromImage``) and
``POST /images/{name}/push``. The same functions as ``isobox load/save/import/pull/push``;
progress goes out as Docker's JSON messages (docker-api-notes.md §3)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from isobox.api.errors import ApiError
from isobox.api.image_json import registry_credentials
from isobox.api.json_stream import JsonStream
from isobox.api.routes_images import resolve_image
from isobox.api.routing import route
from isobox.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from isobox.api.http import ChunkedWriter, Exchange
    from isobox.api.server import ApiState
    from isobox.images.reference import Reference
    from isobox.images.registry.client import RegistryOptions

TAR_CHUNK = 256 << 10
PROGRESS_INTERVAL = 0.25  # seconds between two "Downloading"/"Pushing" lines of one blob


class TarBody:
    """A ``application/x-tar`` chunked body started by the first write (so an unknown image
    is still a 404), written in chunks of 256 KiB rather than tarfile's 10 KiB records."""

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.out: ChunkedWriter | None = None
        self.buf = bytearray()

    def write(self, data: bytes) -> int:
        self.buf += data
        if len(self.buf) >= TAR_CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.out is None:
            self.out = self.ex.stream(content_type="application/x-tar")
        if self.buf:
            self.out.write(bytes(self.buf))
            self.buf.clear()
        self.out.flush()

    def close(self) -> None:
        self.flush()
        assert self.out is not None
        self.out.close()


def _registry_options(state: ApiState) -> RegistryOptions:
    import os

    from isobox.images.registry.client import RegistryOptions

    return RegistryOptions(auth_file=os.path.join(state.root, "auth.json"))


# load / save ------------------------------------------------------------------------------------
@route("POST", "/images/load")
def load(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """docker-py finds the images in ``Loaded image: name`` / ``Loaded image ID: id``."""
    from isobox.images.archive import load_archive

    with state.engine() as engine:
        loaded = load_archive(engine.store, cast(BinaryIO, ex.body))
    stream = JsonStream(ex)
    for item in loaded:
        for name in item.names:
            stream.send({"stream": f"Loaded image: {name}\n"})
        if not item.refs:
            stream.send({"stream": f"Loaded image ID: {item.record.id}\n"})
    stream.close()


@route("GET", "/images/get")
def save(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    _save(state, ex, ex.args("names"))


@route("GET", "/images/{name:path}/get")
def save_one(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    _save(state, ex, [params["name"]])


def _save(state: ApiState, ex: Exchange, names: list[str]) -> None:
    from isobox.images.archive import save_images

    if not names:
        raise ApiError(400, "names: at least one image is required")
    body = TarBody(ex)
    with state.engine() as engine:
        for name in names:
            resolve_image(engine.store, name)
        save_images(engine.store, names, cast(BinaryIO, body), "docker-archive")
    body.close()


# import / pull ----------------------------------------------------------------------------------
@route("POST", "/images/create")
def create(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    if ex.arg("fromSrc"):
        _import(state, ex)
    elif ex.arg("fromImage"):
        _pull(state, ex)
    else:
        raise ApiError(400, "fromImage or fromSrc: one of them is required")


def _import(state: ApiState, ex: Exchange) -> None:
    """``docker import``: ``repo`` may carry the tag (the CLI sends ``repo=name:tag``)."""
    from isobox.images.reference import parse_reference
    from isobox.images.rootfs_import import import_rootfs

    if ex.arg("fromSrc") != "-":
        raise ApiError(400, "fromSrc: only '-' (the request body) is supported; isobox does "
                            "not download images from URLs")
    repo, tag = ex.arg("repo"), ex.arg("tag")
    try:
        refs = [parse_reference(f"{repo}:{tag}" if tag else repo, what="repo")] if repo else []
    except ConfigError as e:
        raise ApiError(400, e.message) from None
    message = ex.arg("message") if "message" in ex.query else None
    with state.engine() as engine:
        rec = import_rootfs(engine.store, cast(BinaryIO, ex.body), refs,
                            changes=ex.args("changes"), message=message or None)
    stream = JsonStream(ex)
    stream.send({"status": rec.id})
    stream.close()


def _pull_reference(ex: Exchange) -> Reference:
    from isobox.images.reference import parse_reference

    image, tag = ex.arg("fromImage"), ex.arg("tag")
    text = image
    if tag:
        text = f"{image}@{tag}" if tag.startswith("sha256:") else f"{image}:{tag}"
    try:
        return parse_reference(text, what="fromImage")
    except ConfigError as e:
        raise ApiError(400, e.message) from None


class _Progress:
    """Pull/push progress callbacks → Docker's per-layer status lines (``id``: 12 hex)."""

    NAMES = {"exists": "Already exists", "downloading": "Downloading",
             "done": "Download complete", "extracting": "Extracting",
             "pull complete": "Pull complete", "pushing": "Pushing",
             "layer already exists": "Layer already exists", "pushed": "Pushed"}

    def __init__(self, stream: JsonStream, first: dict[str, Any] | None) -> None:
        self.stream = stream
        self.first: dict[str, Any] | None = first
        self.last: dict[str, float] = {}
        self.present: set[str] = set()
        self.lock = threading.Lock()

    def send(self, msg: dict[str, Any]) -> None:
        with self.lock:
            if self.first is not None:
                self.stream.send(self.first)
                self.first = None
        self.stream.send(msg)

    def __call__(self, digest: str, status: str, done: int, total: int) -> None:
        name = self.NAMES.get(status) or status[:1].upper() + status[1:]
        short = digest.partition(":")[2][:12]
        with self.lock:
            if digest in self.present:
                return  # "Already exists" says it all (its layer is only checked)
            if status == "exists":
                self.present.add(digest)
        if status in ("downloading", "pushing"):
            now = time.monotonic()
            with self.lock:
                if now - self.last.get(digest, 0.0) < PROGRESS_INTERVAL and done < total:
                    return
                self.last[digest] = now
            self.send({"status": name, "progressDetail": {"current": done, "total": total},
                       "id": short})
        else:
            self.send({"status": name, "progressDetail": {}, "id": short})


def _pull(state: ApiState, ex: Exchange) -> None:
    """Nothing is sent until the first layer's progress: a missing image or a refused login
    is still an HTTP error (404, 500) the CLI prints as dockerd's."""
    from isobox.images.registry.pull import pull_image
    from isobox.oci.image import Platform

    ref = _pull_reference(ex)
    creds = registry_credentials(ex.headers.get("X-Registry-Auth"))
    try:
        plat = Platform.parse(ex.arg("platform")) if ex.arg("platform") else None
    except ConfigError as e:
        raise ApiError(400, f"platform: {e.message}") from None
    stream = JsonStream(ex)
    from isobox.images.reference import Reference

    shown = Reference(ref.registry, ref.repository).familiar
    progress = _Progress(stream, {"status": f"Pulling from {shown}",
                                  "id": ref.tag or ref.digest})
    with state.engine() as engine:
        try:
            before: str | None = engine.store.resolve_id(str(ref))
        except NotFoundError:
            before = None
        try:
            rec = pull_image(engine.store, ref, options=_registry_options(state),
                             platform=plat, progress=progress, credentials=creds)
        except Exception as e:
            if not stream.started:
                raise
            stream.error(e)
            stream.close()
            return
    progress.send({"status": "Digest: " + next(
        (r.partition("@")[2] for r in rec.repo_digests if r.startswith(ref.name + "@")),
        rec.manifest_digest)})
    what = "Image is up to date" if before == rec.id else "Downloaded newer image"
    stream.send({"status": f"Status: {what} for {ref.familiar}"})
    stream.close()


# push -------------------------------------------------------------------------------------------
@route("POST", "/images/{name:path}/push")
def push(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """``tag`` empty pushes every tag of the repository (``docker push --all-tags``)."""
    from isobox.images.reference import parse_reference
    from isobox.images.registry.push import push_image

    name, tag = params["name"], ex.arg("tag")
    try:
        repo = parse_reference(name, default_tag=False, what="name")
    except ConfigError as e:
        raise ApiError(400, e.message) from None
    creds = registry_credentials(ex.headers.get("X-Registry-Auth"))
    with state.engine() as engine:
        if tag:
            sources = [f"{name}:{tag}" if not repo.tag else name]
            try:
                resolve_image(engine.store, sources[0])
            except NotFoundError:
                raise NotFoundError(f"An image does not exist locally with the tag: "
                                    f"{sources[0]}") from None
        else:
            sources = sorted(ref for ref in engine.store.db.all_refs()
                             if "@" not in ref and ref.rpartition(":")[0] == repo.name)
            if not sources:
                raise NotFoundError(f"An image does not exist locally with the tag: {name}")
        stream = JsonStream(ex)
        stream.send({"status": f"The push refers to repository [{repo.name}]"})
        progress = _Progress(stream, None)
        for source in sources:
            try:
                result = push_image(engine.store, source, source, credentials=creds,
                                    options=_registry_options(state), progress=progress)
            except Exception as e:
                stream.error(e)
                break
            pushed = result.reference.tag
            stream.send({"status": f"{pushed}: digest: {result.digest} size: {result.size}"})
            stream.send({"progressDetail": {}, "aux": {"Tag": pushed, "Digest": result.digest,
                                                       "Size": result.size}})
    stream.close()
