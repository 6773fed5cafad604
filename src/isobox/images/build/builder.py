"""``isobox build``: execute a Containerfile's stages into images, with a build cache.

Every instruction makes an image (intermediate, hidden from ``image ls``) on top of the
previous one, and a cache entry ``key → image ID`` where the key is the parent image ID, the
instruction's normalized text (with the build args in effect for RUN), and for COPY/ADD the
content hash of the sources after ``.dockerignore`` (or the source stage's image ID). An
unchanged rebuild is a chain of cache look-ups: nothing runs, nothing is copied, and the
result is the very same image ID.

* RUN runs in a build snapshot (``Snapshots.create(kind="build")``) through a
  :class:`~isobox.images.build.run_step.StepRunner` (the engine's build hook); its upper dir
  becomes the layer (``snapshot_layer(consume=True)``).
* COPY/ADD stage files into a fresh snapshot (``context.copy_into``).
* WORKDIR other than ``/`` creates the directory as BuildKit does (``mkdir -p``, 0755, owned
  by ``USER`` when set; moby's dockerfile2llb ``dispatchWorkdir``), which is a layer. A step
  whose diff is empty (WORKDIR of an existing directory, a RUN or COPY that changed nothing)
  makes no layer: its history entry says ``empty_layer: true`` (no zero-byte layers).
* Metadata instructions make no layer (``empty_layer: true``).

Output follows ``podman build``/buildah: ``STEP n/N: …``, the step's own output, ``--> ID``
(or ``--> Using cache <ID>``), ``COMMIT …`` and the final image ID.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from isobox.errors import ImageError, NotFoundError
from isobox.images.build import context as bctx
from isobox.images.build.containerfile import (
    DEFAULT_SHELL,
    Containerfile,
    Instruction,
    Stage,
    default_platform,
    parse_containerfile,
    stages_for_target,
)
from isobox.images.build.dockerignore import load_dockerignore
from isobox.images.build.imageconfig import apply_instruction, new_scratch_config, prepare_base
from isobox.images.build.run_step import RunStep, StepRunner
from isobox.images.db import LayerRow
from isobox.images.reference import Reference, parse_reference
from isobox.images.snapshots import Snapshot, Snapshots
from isobox.images.store import ImageRecord, ImageStore, adds_content, now_rfc3339
from isobox.linux import safepath

CACHE_VERSION = "isobox-build-1"
LAYER_KINDS = ("RUN", "COPY", "ADD", "WORKDIR")


class BuildStepError(ImageError):
    """A RUN step exited non-zero; ``status`` is its exit status."""

    def __init__(self, message: str, status: int, command: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.command = list(command or [])


@dataclass
class BuildOptions:
    context_dir: str
    containerfile: str | None = None
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    quiet: bool = False
    platform: str | None = None
    labels: dict[str, str] = field(default_factory=dict)  # LABELs added to the final stage


@dataclass
class BuildResult:
    image: ImageRecord
    refs: list[Reference]
    steps: int
    cached: int  # steps answered from the cache
    executed: int  # RUN steps that ran


@dataclass
class _StageState:
    image: ImageRecord | None  # None: FROM scratch and no step yet
    config: dict[str, Any]
    key: str  # the parent part of the next cache key
    cmd_set: bool = False


def _noop(_: str) -> None:
    pass


class Builder:
    def __init__(self, store: ImageStore, runner: StepRunner | None,
                 out: Callable[[str], None] = _noop) -> None:
        self.store = store
        self.snaps = Snapshots(store)
        self.runner = runner
        self.out = out
        self.cached = 0
        self.executed = 0
        self.proxy_args: dict[str, str] = {}

    # ----------------------------------------------------------------------------- entry
    def build(self, opts: BuildOptions) -> BuildResult:
        with self.store.adding_content():
            return self._build(opts)

    def _build(self, opts: BuildOptions) -> BuildResult:
        context_dir = os.path.abspath(opts.context_dir)
        if not os.path.isdir(context_dir):
            raise NotFoundError(f"build context {opts.context_dir!r} is not a directory")
        refs = [parse_reference(t, what="tag") for t in opts.tags]
        for ref in refs:
            if ref.digest:
                raise ImageError(f"tag {ref}: cannot tag with a digest")
        cf_path = bctx.find_containerfile(context_dir, opts.containerfile)
        text = bctx.read_containerfile(cf_path)
        platform = opts.platform or default_platform()
        name = os.path.basename(cf_path)
        first = parse_containerfile(text, build_args=opts.build_args, path=name,
                                    platform=platform)
        bases = self._resolve_bases(first)
        base_env = {b: _env_dict(rec.config.raw) for b, rec in bases.items()}
        cf = parse_containerfile(text, build_args=opts.build_args, path=name,
                                 platform=platform, base_env=base_env)
        stages = stages_for_target(cf, opts.target)
        self.proxy_args = dict(cf.proxy_args)
        matcher = load_dockerignore(context_dir, cf_path)
        source = bctx.SourceRoot(context_dir, matcher)
        labels = _label_instruction(opts.labels)
        total = sum(1 + len(s.instructions) for s in stages) + (1 if labels else 0)
        self.cached = self.executed = 0
        results: dict[int, _StageState] = {}
        n = 0
        for stage in stages:
            n += 1
            self.out(f"STEP {n}/{total}: FROM {stage.base}"
                     + (f" AS {stage.name}" if stage.name else ""))
            st = self._from(stage, results, bases, platform)
            extra = [labels] if labels is not None and stage is stages[-1] else []
            for instr in [*stage.instructions, *extra]:
                n += 1
                self.out(f"STEP {n}/{total}: {instr.original}")
                st = self._step(st, stage, instr, n, cf, source, results, opts)
            results[stage.index] = st
        final = results[stages[-1].index]
        image = final.image
        if image is None:  # FROM scratch and nothing else
            image = self.store.create_image(final.config, [], [])
        label = " ".join(r.familiar for r in refs)
        self.out(f"COMMIT {label}".rstrip())
        image = self.store.commit_image(image.manifest_digest, refs, intermediate=False)
        self.out(f"--> {image.short_id}")
        for ref in refs:
            self.out(f"Successfully tagged {ref}")
        return BuildResult(image, refs, total, self.cached, self.executed)

    def _resolve_bases(self, cf: Containerfile) -> dict[str, ImageRecord]:
        out: dict[str, ImageRecord] = {}
        for stage in cf.stages:
            if stage.base_stage is not None or stage.base == "scratch" or stage.base in out:
                continue
            try:
                out[stage.base] = self.store.resolve(stage.base)
            except NotFoundError:
                raise NotFoundError(f"{cf.path}:{stage.line}: FROM {stage.base}: no such image "
                                    f"in the store (pull or load it first)") from None
        return out

    def _from(self, stage: Stage, results: dict[int, _StageState],
              bases: dict[str, ImageRecord], platform: str) -> _StageState:
        if stage.base_stage is not None:
            parent = results[stage.base_stage]
            return _StageState(parent.image, copy.deepcopy(parent.config), parent.key)
        if stage.base == "scratch":
            return _StageState(None, new_scratch_config(platform), f"scratch:{platform}")
        rec = bases[stage.base]
        self.out(f"--> {rec.short_id}")
        return _StageState(rec, prepare_base(rec.config.raw), rec.id)

    # ----------------------------------------------------------------------------- steps
    def _step(self, st: _StageState, stage: Stage, instr: Instruction, n: int,
              cf: Containerfile, source: bctx.SourceRoot, results: dict[int, _StageState],
              opts: BuildOptions) -> _StageState:
        inner = st.config.get("config") or {}
        shell = list(inner.get("Shell") or DEFAULT_SHELL)
        extra = ""
        copy_src: bctx.SourceRoot | None = None
        from_image: ImageRecord | None = None
        what = f"{cf.path}:{instr.line}: {instr.kind}"
        if instr.kind in ("COPY", "ADD"):
            srcs = list(instr.args[:-1])
            if instr.kind == "ADD" and any(bctx.is_remote(s) for s in srcs):
                raise bctx.BuildError(f"{what}: ADD from a URL or git repository is not "
                                      "supported by isobox build (download it in a RUN step)")
            from_ = instr.flags.get("from")
            if from_:
                from_image = self._from_source(from_, results, cf, what)
                extra = f"from:{from_image.id if from_image else 'scratch'}"
            else:
                copy_src = source
                extra = "ctx:" + bctx.content_hash(source, srcs, what)
        elif instr.kind == "RUN":
            extra = json.dumps(sorted(cf.proxy_args.items()))
        key_text = json.dumps([CACHE_VERSION, st.key, instr.cache_key(shell), extra,
                               st.cmd_set])
        key = "sha256:" + hashlib.sha256(key_text.encode()).hexdigest()
        cmd_set = st.cmd_set or instr.kind == "CMD"
        if not opts.no_cache:
            hit = self._cache_hit(key)
            if hit is not None:
                self.cached += 1
                self.out(f"--> Using cache {hit.id[7:]}")
                self.out(f"--> {hit.short_id}")
                return _StageState(hit, _strip(hit.config.raw), hit.id, cmd_set)
        created = now_rfc3339()
        config, history = apply_instruction(st.config, instr, created=created,
                                            cmd_set=st.cmd_set)
        layer: LayerRow | None = None
        if instr.kind in LAYER_KINDS and not history.get("empty_layer"):
            layer = self._layer_step(st, instr, n, config, copy_src, from_image, what, opts)
            if layer is None:
                history["empty_layer"] = True
        config["created"] = created
        rec = _image_with_layer(self.store, st.image, config, layer, history)
        self.store.db.cache_put(key, rec.id)
        self.out(f"--> {rec.short_id}")
        return _StageState(rec, _strip(rec.config.raw), rec.id, cmd_set)

    def _cache_hit(self, key: str) -> ImageRecord | None:
        image_id = self.store.db.cache_get(key)
        if image_id is None:
            return None
        try:
            return self.store.get(image_id)
        except (NotFoundError, ImageError, OSError):
            return None

    def _from_source(self, from_: str, results: dict[int, _StageState], cf: Containerfile,
                     what: str) -> ImageRecord | None:
        idx: int | None = None
        if from_.isdigit():
            idx = int(from_)
        else:
            idx = next((s.index for s in cf.stages if s.name == from_.lower()), None)
        if idx is not None:
            if idx not in results:
                raise bctx.BuildError(f"{what}: --from={from_}: stage was not built")
            return results[idx].image
        try:
            return self.store.resolve(from_)
        except NotFoundError:
            raise NotFoundError(f"{what}: --from={from_}: no such stage or image") from None

    def _new_snapshot(self, st: _StageState) -> Snapshot:
        snap_id = f"build-{secrets.token_hex(8)}"
        if st.image is None:
            return self.snaps.create(snap_id, layers=[], kind="build")
        return self.snaps.create(snap_id, image_id=st.image.id, kind="build")

    def _layer_step(self, st: _StageState, instr: Instruction, n: int, config: dict[str, Any],
                    copy_src: bctx.SourceRoot | None, from_image: ImageRecord | None,
                    what: str, opts: BuildOptions) -> LayerRow | None:
        """Run a filesystem step in a fresh snapshot; its layer, or None when it changed
        nothing. The snapshot is gone afterwards, whatever happens."""
        from isobox.images.commit import snapshot_layer

        snap = self._new_snapshot(st)
        consumed = False
        try:
            inner = config.get("config") or {}
            workdir = inner.get("WorkingDir") or "/"
            if instr.kind == "RUN":
                self._run(snap, instr, n, st, inner, opts)
            elif instr.kind == "WORKDIR":
                _workdir(snap.rootfs, workdir, inner.get("User") or "")
            else:
                self._copy(snap, instr, inner, workdir, copy_src, from_image, what)
            if not os.listdir(snap.upper):
                return None
            consumed = True
            return snapshot_layer(self.store, self.snaps, snap.id, consume=True)
        finally:
            if not consumed or self.store.db.snapshot(snap.id) is not None:
                self.snaps.remove(snap.id)

    def _run(self, snap: Snapshot, instr: Instruction, n: int, st: _StageState,
             inner: dict[str, Any], opts: BuildOptions) -> None:
        if self.runner is None:
            raise ImageError("this builder cannot run RUN steps (no step runner)")
        env = list(inner.get("Env") or [])
        keys = {e.partition("=")[0] for e in env}
        proxy = (f"{k}={v}" for k, v in sorted(self.proxy_args.items()))
        for item in (*instr.run_args, *proxy):
            k = item.partition("=")[0]
            if k not in keys:
                env.append(item)
                keys.add(k)
        cwd = inner.get("WorkingDir") or "/"
        _mkdir_in(snap.rootfs, cwd)
        user = bctx.lookup_user(snap.rootfs, inner.get("User") or "0") \
            if inner.get("User") else bctx.User(0, 0)
        shell = list(inner.get("Shell") or DEFAULT_SHELL)
        step = RunStep(snap.rootfs, instr.command(shell), env, cwd, user.uid, user.gid,
                       list(user.additional_gids), quiet=opts.quiet)
        self.executed += 1
        code = self.runner.run(step)
        if code != 0:
            raise BuildStepError(f'build step {n} "{instr.original}" failed: exit status {code}',
                                 code, step.args)

    def _copy(self, snap: Snapshot, instr: Instruction, inner: dict[str, Any], workdir: str,
              copy_src: bctx.SourceRoot | None, from_image: ImageRecord | None,
              what: str) -> None:
        opts = bctx.CopyOptions(add=instr.kind == "ADD")
        if "chown" in instr.flags:
            u = bctx.lookup_user(snap.rootfs, instr.flags["chown"], groups=False)
            opts.chown = (u.uid, u.gid)
        if "chmod" in instr.flags:
            opts.chmod = bctx.parse_chmod(instr.flags["chmod"])
        srcs, dest = list(instr.args[:-1]), instr.args[-1]
        if copy_src is not None:
            bctx.copy_into(copy_src, srcs, dest, snap.rootfs, workdir, opts, what)
            return
        src_snap = self.snaps.create(f"build-{secrets.token_hex(8)}",
                                     image_id=from_image.id if from_image else None,
                                     layers=None if from_image else [], kind="build")
        try:
            root = bctx.SourceRoot(src_snap.rootfs, None, keep_owner=True)
            bctx.copy_into(root, srcs, dest, snap.rootfs, workdir, opts, what)
        finally:
            self.snaps.remove(src_snap.id)


def _label_instruction(labels: dict[str, str]) -> Instruction | None:
    """``--label`` (Docker's build ``labels``) as one more LABEL step of the final stage,
    as the classic builder does."""
    if not labels:
        return None
    text = " ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in sorted(labels.items()))
    return Instruction("LABEL", tuple(f"{k}={v}" for k, v in sorted(labels.items())), {}, 0,
                       f"LABEL {text}")


def _mkdir_in(rootfs: str, path: str) -> None:
    rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.close(safepath.mkdir_all(rootfd, path))
    except OSError as e:
        raise bctx.BuildError(f"cannot create directory {path}: {e.strerror or e}") from None
    finally:
        os.close(rootfd)


def _workdir(rootfs: str, path: str, user: str) -> None:
    """BuildKit's WORKDIR: ``mkdir -p`` (0755), the new directory owned by ``USER``."""
    rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.close(safepath.open_in_root(rootfd, path, os.O_PATH | os.O_DIRECTORY))
            return  # exists: nothing to do (the step makes no layer)
        except OSError:
            pass
    finally:
        os.close(rootfd)
    _mkdir_in(rootfs, path)
    if user:
        u = bctx.lookup_user(rootfs, user, groups=False)
        rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = safepath.open_in_root(rootfd, path, os.O_PATH | os.O_DIRECTORY)
            try:
                os.chown(safepath.fd_path(fd), u.uid, u.gid)
            finally:
                os.close(fd)
        finally:
            os.close(rootfd)


def _env_dict(config: dict[str, Any]) -> dict[str, str]:
    env = (config.get("config") or {}).get("Env") or []
    return {k: v for k, _, v in (str(e).partition("=") for e in env)}


def _strip(raw: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(raw)
    cfg.pop("created", None)
    return cfg


def _image_with_layer(store: ImageStore, base: ImageRecord | None, config: dict[str, Any],
                      layer: LayerRow | None, history: dict[str, Any]) -> ImageRecord:
    from isobox.images.commit import image_with_layer

    return image_with_layer(store, base, config, layer, history, intermediate=True)


@adds_content
def commit_snapshot(store: ImageStore, snap_id: str, refs: list[Reference] | tuple[()] = (),
                    *, changes: list[str] | tuple[str, ...] = (), message: str | None = None,
                    author: str | None = None,
                    run_config: dict[str, Any] | None = None) -> ImageRecord:
    """``isobox commit``: the snapshot's changes as a new layer on its image, with ``-c``
    instructions applied to the config (``docker commit``). ``run_config`` replaces the base
    image's run config (Cmd, Env, …): a committed container keeps its own, as Docker's."""
    from isobox.images.commit import image_with_layer, snapshot_layer
    from isobox.images.rootfs_import import apply_changes

    snaps = Snapshots(store)
    snap = snaps.get(snap_id)
    base = store.get(snap.image_id) if snap.image_id else None
    config = _strip(base.config.raw) if base else new_scratch_config(default_platform())
    inner = run_config if run_config is not None else config.get("config") or {}
    config["config"] = apply_changes(inner, changes)
    created = now_rfc3339()
    config["created"] = created
    for key, value in (("author", author), ("comment", message)):
        if value:
            config[key] = value
        else:
            config.pop(key, None)
    layer = snapshot_layer(store, snaps, snap_id, consume=False)
    history: dict[str, Any] = {"created": created}
    if author:
        history["author"] = author
    if message:
        history["comment"] = message
    return image_with_layer(store, base, config, layer, history, refs)
