"""``POST /build``: the classic builder (``DOCKER_BUILDKIT=0``) on isobox's Containerfile
builder, with Docker's JSON progress: ``{"stream": "Step 1/3 : FROM busybox\\n"}``, the RUN
steps' output, ``{"aux": {"ID": …}}``, ``Successfully built <12 hex>`` (docker-py finds the
image there) and ``Successfully tagged name:tag``; errors in-band, a failed RUN as
``The command '/bin/sh -c exit 1' returned a non-zero code: 1`` with ``errorDetail.code``."""

from __future__ import annotations

import codecs
import json
import re
from typing import TYPE_CHECKING, BinaryIO, cast

from isobox.api.errors import ApiError
from isobox.api.json_stream import JsonStream
from isobox.api.routing import route
from isobox.errors import ConfigError

if TYPE_CHECKING:
    from isobox.api.http import Exchange
    from isobox.api.server import ApiState
    from isobox.images.build.builder import BuildOptions

_STEP = re.compile(r"^STEP (\d+/\d+): (.*)$", re.S)
_ARROW = re.compile(r"^--> (Using cache )?(\S+)$")


class DockerBuildOutput:
    """The builder's buildah-style lines (``STEP 1/3: …``, ``--> 1a2b3c``) and the RUN steps'
    raw output as the classic builder's ``{"stream": …}`` messages."""

    def __init__(self, stream: JsonStream) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.committed = False

    def line(self, text: str) -> None:
        if text.startswith("COMMIT"):
            self.committed = True  # its "--> id" repeats the last step's
        elif self.committed:
            pass
        elif m := _STEP.match(text):
            self.stream.send({"stream": f"Step {m.group(1)} : {m.group(2)}\n"})
        elif m := _ARROW.match(text):
            self.stream.send({"stream": " ---> Using cache\n" if m.group(1) else
                              f" ---> {m.group(2)[:12]}\n"})
        else:
            self.stream.send({"stream": text + "\n"})

    def raw(self, data: bytes) -> None:
        text = self.decoder.decode(data)
        if text:
            self.stream.send({"stream": text})


def _json_map(ex: Exchange, name: str) -> dict[str, str]:
    """``buildargs`` / ``labels``: a JSON object of strings (a null build arg is unset)."""
    text = ex.arg(name)
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ApiError(400, f"{name}: malformed JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ApiError(400, f"{name}: expected a JSON object")
    out = {}
    for k, v in raw.items():
        if v is None:
            continue
        if not isinstance(v, str):
            raise ApiError(400, f"{name}.{k}: expected a string")
        out[str(k)] = v
    return out


def _options(ex: Exchange, context: str, dockerfile: str) -> BuildOptions:
    from isobox.images.build.builder import BuildOptions
    from isobox.images.reference import parse_reference

    tags = [t for t in ex.args("t") if t]
    for t in tags:
        try:
            parse_reference(t, what="t")
        except ConfigError as e:
            raise ApiError(400, e.message) from None
    return BuildOptions(context, dockerfile, tags, _json_map(ex, "buildargs"),
                        ex.arg("target") or None, ex.flag("nocache"), ex.flag("q"),
                        ex.arg("platform") or None, _json_map(ex, "labels"))


def _check_unsupported(ex: Exchange) -> None:
    if ex.arg("remote"):
        raise ApiError(400, "remote: isobox builds only from the context in the request body")
    if ex.arg("version") not in ("", "1"):
        raise ApiError(400, f"version: builder version {ex.arg('version')} (BuildKit) is not "
                            "supported; use the classic builder (DOCKER_BUILDKIT=0)")
    if ex.arg("networkmode") not in ("", "default", "none"):
        raise ApiError(400, f"networkmode: {ex.arg('networkmode')!r} is not supported: RUN "
                            "steps have a network namespace of their own (loopback only)")


@route("POST", "/build")
def build(state: ApiState, ex: Exchange, params: dict[str, str]) -> None:
    from isobox.api.build_context import dockerfile_in, extracted_context
    from isobox.engine.build_hook import RuntimeStepRunner
    from isobox.images.build.builder import Builder, BuildStepError

    _check_unsupported(ex)
    stream = JsonStream(ex)
    out = DockerBuildOutput(stream)
    with state.engine() as engine, \
            extracted_context(engine.store.root, cast(BinaryIO, ex.body)) as context:
        opts = _options(ex, context, dockerfile_in(context, ex.arg("dockerfile")))
        builder = Builder(engine.store, RuntimeStepRunner(engine.store.root, output=out.raw),
                          out=(lambda _line: None) if opts.quiet else out.line)
        try:
            result = builder.build(opts)
        except BuildStepError as e:
            text = (f"The command '{' '.join(e.command)}' returned a non-zero code: "
                    f"{e.status}")
            stream.send({"errorDetail": {"code": e.status, "message": text}, "error": text})
            stream.close()
            return
        except Exception as e:
            if not stream.started:
                raise  # nothing sent yet (a bad Dockerfile, a missing base): an HTTP error
            stream.error(e)
            stream.close()
            return
    image = result.image
    stream.send({"aux": {"ID": image.id}})
    if opts.quiet:
        stream.send({"stream": f"{image.id}\n"})
    else:
        stream.send({"stream": f"Successfully built {image.short_id}\n"})
        for ref in result.refs:
            stream.send({"stream": f"Successfully tagged {ref.familiar}\n"})
    stream.close()

