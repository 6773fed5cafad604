"""Image endpoints answered with one JSON body: list, inspect, history, tag, remove, prune and
``/commit``. Archives and registries (load, save, import, pull, push) are in
:mod:`.routes_image_io`, builds in :mod:`.routes_build`. Every route calls the functions the
``isobox`` image commands call (``isobox.images``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isobox.api.docker_json import parse_filters
from isobox.api.errors import ApiError
from isobox.api.image_json import image_history, image_inspect, image_summary, removal_report
from isobox.api.routing import route
from isobox.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from isobox.api.http import Exchange
    from isobox.api.server import ApiState
    from isobox.images.store import ImageRecord, ImageStore


def resolve_image(store: ImageStore, name: str) -> ImageRecord:
    """The image ``name`` names; 404 ``No such image: name`` (Docker's text) otherwise."""
    try:
        return store.resolve(name)
    except NotFoundError:
        raise NotFoundError(f"No such image: {name}") from None


@route("GET", "/images/json")
def list_(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.images.listing import filter_images, shown_refs

    filters = parse_filters(ex.arg("filters"))
    if ex.arg("filter"):  # API < 1.25: ?filter=name is a reference pattern
        filters.setdefault("reference", []).append(ex.arg("filter"))
    with state.engine() as engine:
        images = engine.store.images(include_intermediate=ex.flag("all"))
        try:
            images = filter_images(engine.store, images, filters)
        except ConfigError as e:
            raise ApiError(400, e.message) from None
        out = [image_summary(r, shown_refs(r, filters)) for r in images]
    ex.send_json(200, out)


@route("GET", "/images/{name:path}/json")
def inspect(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    with state.engine() as engine:
        data = image_inspect(resolve_image(engine.store, params["name"]))
    ex.send_json(200, data)


@route("GET", "/images/{name:path}/history")
def history(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    with state.engine() as engine:
        rec = resolve_image(engine.store, params["name"])
        rows = image_history(rec, engine.store.db.layer_sizes())
    ex.send_json(200, rows)


@route("POST", "/images/{name:path}/tag")
def tag(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    repo, tag_ = ex.arg("repo"), ex.arg("tag")
    if not repo:
        raise ApiError(400, "repo: required")
    target = f"{repo}:{tag_}" if tag_ else repo
    with state.engine() as engine:
        source = resolve_image(engine.store, params["name"]).id
        try:
            engine.store.tag(source, target)
        except ConfigError as e:
            raise ApiError(400, e.message) from None
    ex.send(201)


@route("DELETE", "/images/{name:path}")
def remove(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """``noprune`` is accepted and has nothing to do: isobox images have no parent chain of
    untagged images to prune."""
    with state.engine() as engine:
        resolve_image(engine.store, params["name"])
        lines = engine.store.remove(params["name"], force=ex.flag("force"))
    ex.send_json(200, removal_report(lines))


@route("POST", "/images/prune")
def prune(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    filters = parse_filters(ex.arg("filters"))
    unknown = set(filters) - {"dangling"}
    if unknown:
        raise ApiError(400, f"filters: {sorted(unknown)[0]!r} is not supported by image prune")
    dangling = [v.lower() for v in filters.get("dangling") or ["true"]]
    if dangling not in (["true"], ["1"], ["false"], ["0"]):
        raise ApiError(400, f"filters: invalid value for dangling: {','.join(dangling)}")
    from isobox.engine.prune import prune_images

    with state.engine() as engine:
        deleted, freed = prune_images(engine, all_images=dangling[0] in ("false", "0"))
    ex.send_json(200, {"ImagesDeleted": [{"Deleted": d} for d in deleted] or None,
                       "SpaceReclaimed": freed})


@route("POST", "/commit")
def commit(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    """The docker CLI sends no body, docker-py a JSON container config (its keys override
    the container's)."""
    from isobox.engine.image_commit import commit_container
    from isobox.images.reference import parse_reference

    container = ex.arg("container")
    if not container:
        raise ApiError(400, "container: required")
    body = ex.json_body(optional=True)
    if body is not None and not isinstance(body, dict):
        raise ApiError(400, "request body: expected a JSON object")
    repo, tag_ = ex.arg("repo"), ex.arg("tag")
    try:
        refs = [parse_reference(f"{repo}:{tag_}" if tag_ else repo, what="repo")] \
            if repo else []
    except ConfigError as e:
        raise ApiError(400, e.message) from None
    with state.engine() as engine:
        rec = commit_container(engine, container, refs, changes=ex.args("changes"),
                               message=ex.arg("comment") or None,
                               author=ex.arg("author") or None,
                               pause=ex.flag("pause", True), config=body)
    ex.send_json(201, {"Id": rec.id})
