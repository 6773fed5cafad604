"""``commit`` of a container: its root filesystem's changes as a new image whose run config
is the container's own (Cmd, Env, WorkingDir, … as it was created), like ``docker commit``.
Shared by ``isobox commit`` and the API's ``POST /commit``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from isobox.errors import ConfigError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.images.reference import Reference
    from isobox.images.store import ImageRecord

# What of a container's Config becomes the image's run config (Docker keeps these).
IMAGE_CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Cmd", "Healthcheck", "Volumes",
                     "WorkingDir", "Entrypoint", "OnBuild", "Labels", "StopSignal")


def container_run_config(engine: Engine, ref: str) -> dict[str, Any]:
    """The container's Config as an image run config (runtime-only variables dropped)."""
    from isobox.engine.inspect import inspect_container

    cfg = inspect_container(engine, engine.get(ref))["Config"]
    out = {k: cfg[k] for k in IMAGE_CONFIG_KEYS if cfg.get(k) not in (None, "", {}, [])}
    out["Env"] = [e for e in cfg.get("Env") or [] if not e.startswith("HOSTNAME=")]
    if out.get("StopSignal") == "SIGTERM":
        del out["StopSignal"]  # the default, reported by inspect but never set
    return out


def commit_container(engine: Engine, ref: str, refs: list[Reference] | tuple[()] = (), *,
                     changes: list[str] | tuple[str, ...] = (), message: str | None = None,
                     author: str | None = None, pause: bool = True,
                     config: dict[str, Any] | None = None) -> ImageRecord:
    """Commit container ``ref``; ``config`` (Docker's commit body) overrides keys of its run
    config before ``changes`` apply. A running container is paused meanwhile (``pause``) so
    the layer is consistent."""
    from isobox.engine.stop import pause_container, unpause_container
    from isobox.images.build.builder import commit_snapshot

    row = engine.get(ref)
    if row.options.get("isolation") == "vm":
        raise ConfigError("commit", f"container {row.id[:12]} runs as a VM (its disk is not "
                                    "an overlay snapshot): commit is not supported for it")
    run_config = container_run_config(engine, row.id)
    for key, value in (config or {}).items():
        if key in IMAGE_CONFIG_KEYS and value is not None:
            run_config[key] = value
    paused = False
    if pause and engine.effective_status(row) == "running":
        pause_container(engine, row.id)
        paused = True
    try:
        return commit_snapshot(engine.store, row.id, refs, changes=changes, message=message,
                               author=author, run_config=run_config)
    finally:
        if paused:
            unpause_container(engine, row.id)
