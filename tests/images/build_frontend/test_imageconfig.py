"""Each instruction's effect on the image config and history, as `docker inspect` shows it."""

from __future__ import annotations

from typing import Any

from isobox.images.build.containerfile import DEFAULT_PATH, Instruction, parse_containerfile
from isobox.images.build.imageconfig import (
    apply_instruction,
    apply_stage,
    go_duration,
    go_quote_list,
    new_scratch_config,
    normalize_workdir,
    prepare_base,
)

T = "2024-01-01T00:00:00Z"


def build(body: str, base: dict[str, Any] | None = None, **args: str) -> dict[str, Any]:
    cf = parse_containerfile("FROM scratch\n" + body, build_args=args, platform="linux/amd64")
    cfg, _ = apply_stage(base or new_scratch_config("linux/amd64"), cf.stages[0].instructions,
                         created=T)
    return cfg


def history(cfg: dict[str, Any]) -> list[str]:
    return [h["created_by"] for h in cfg["history"]]


def test_scratch_config() -> None:
    cfg = new_scratch_config("linux/arm64/v8")
    assert (cfg["architecture"], cfg["os"], cfg["variant"]) == ("arm64", "linux", "v8")
    assert cfg["config"] == {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/",
                             "OnBuild": None}
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": []}


def test_prepare_base_adds_path_only_when_missing() -> None:
    base: dict[str, Any] = {"os": "linux", "created": "x",
                            "config": {"Env": ["A=1"], "OnBuild": ["RUN x"]}}
    cfg = prepare_base(base)
    assert cfg["config"]["Env"] == ["A=1", f"PATH={DEFAULT_PATH}"]
    assert cfg["config"]["OnBuild"] is None and "created" not in cfg
    assert base["config"]["Env"] == ["A=1"]        # input untouched
    kept = prepare_base({"os": "linux", "config": {"Env": ["PATH=/x"]}})
    assert kept["config"]["Env"] == ["PATH=/x"]


def test_env_in_place_and_history() -> None:
    cfg = build('ENV A=1 B="two words"\nENV PATH=/x:$PATH A=3\n')
    assert cfg["config"]["Env"] == [f"PATH=/x:{DEFAULT_PATH}", "A=3", "B=two words"]
    assert history(cfg) == ["ENV A=1 B=two words", f"ENV PATH=/x:{DEFAULT_PATH} A=3"]
    assert all(h["empty_layer"] for h in cfg["history"])
    assert cfg["history"][0]["comment"] == "buildkit.dockerfile.v0"
    assert cfg["history"][0]["created"] == T


def test_run_history_and_layer() -> None:
    cfg = build("ARG V=1\nRUN echo hi\nSHELL [\"/bin/bash\", \"-c\"]\nRUN [\"ls\", \"-l\"]\n"
                "RUN echo bash\n", V="2")
    assert history(cfg) == ["ARG V=2", "RUN |1 V=2 /bin/sh -c echo hi # buildkit",
                            "SHELL [/bin/bash -c]", "RUN |1 V=2 ls -l # buildkit",
                            "RUN |1 V=2 /bin/bash -c echo bash # buildkit"]
    assert "empty_layer" not in cfg["history"][1]
    assert cfg["config"]["Shell"] == ["/bin/bash", "-c"]
    assert "V=2" not in " ".join(cfg["config"]["Env"])    # ARGs never persist


def test_copy_add_history() -> None:
    cfg = build("COPY a b /dst/\nADD x /y\n")
    assert history(cfg) == ["COPY a b /dst/ # buildkit", "ADD x /y # buildkit"]
    assert not any("empty_layer" in h for h in cfg["history"])


def test_cmd_shell_form_uses_shell() -> None:
    cfg = build("CMD echo hi\n")
    assert cfg["config"]["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert cfg["config"]["ArgsEscaped"] is True
    assert history(cfg) == ['CMD ["/bin/sh" "-c" "echo hi"]']
    cfg = build('SHELL ["/bin/ash", "-eo"]\nCMD run "q"\n')
    assert cfg["config"]["Cmd"] == ["/bin/ash", "-eo", 'run "q"']
    assert history(cfg)[-1] == 'CMD ["/bin/ash" "-eo" "run \\"q\\""]'


def test_entrypoint_clears_inherited_cmd_only() -> None:
    base = new_scratch_config("linux/amd64")
    base["config"]["Cmd"] = ["bash"]
    cfg = build('ENTRYPOINT ["/init"]\n', base)
    assert cfg["config"]["Entrypoint"] == ["/init"] and cfg["config"]["Cmd"] is None
    cfg = build('CMD ["--help"]\nENTRYPOINT ["/init"]\n', base)
    assert cfg["config"]["Cmd"] == ["--help"]
    cfg = build("ENTRYPOINT exec app\n", base)
    assert cfg["config"]["Entrypoint"] == ["/bin/sh", "-c", "exec app"]
    assert history(cfg) == ['ENTRYPOINT ["/bin/sh" "-c" "exec app"]']


def test_workdir() -> None:
    cfg = build("WORKDIR /app\nWORKDIR sub/../src\nWORKDIR /\n")
    assert cfg["config"]["WorkingDir"] == "/"
    assert history(cfg) == ["WORKDIR /app", "WORKDIR /app/src", "WORKDIR /"]
    assert [h.get("empty_layer", False) for h in cfg["history"]] == [False, False, True]
    assert normalize_workdir("", "rel") == "/rel"
    assert normalize_workdir("/a", "/b//c/") == "/b/c"


def test_user_stopsignal_maintainer_label() -> None:
    cfg = build("USER app:app\nSTOPSIGNAL SIGQUIT\nMAINTAINER Jo\nLABEL a=1 b=2\nLABEL a=3\n")
    c = cfg["config"]
    assert (c["User"], c["StopSignal"], cfg["author"]) == ("app:app", "SIGQUIT", "Jo")
    assert c["Labels"] == {"a": "3", "b": "2"}
    assert history(cfg) == ["USER app:app", "STOPSIGNAL SIGQUIT", "MAINTAINER Jo",
                            "LABEL a=1 b=2", "LABEL a=3"]


def test_expose_and_volume() -> None:
    cfg = build("EXPOSE 80 53/udp\nEXPOSE 443\nVOLUME /data /logs\nVOLUME [\"/x\"]\n")
    assert cfg["config"]["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}, "443/tcp": {}}
    assert cfg["config"]["Volumes"] == {"/data": {}, "/logs": {}, "/x": {}}
    assert history(cfg) == ["EXPOSE map[53/udp:{} 80/tcp:{}]", "EXPOSE map[443/tcp:{}]",
                            "VOLUME [/data /logs]", "VOLUME [/x]"]


def test_healthcheck() -> None:
    cfg = build("HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://x/\n")
    assert cfg["config"]["Healthcheck"] == {"Test": ["CMD-SHELL", "curl -f http://x/"],
                                            "Interval": 30_000_000_000, "Retries": 3}
    assert history(cfg) == ["HEALTHCHECK {Test:[CMD-SHELL curl -f http://x/] Interval:30s "
                            "Timeout:0s StartPeriod:0s StartInterval:0s Retries:3}"]
    cfg = build("HEALTHCHECK NONE\n")
    assert cfg["config"]["Healthcheck"] == {"Test": ["NONE"]}


def test_arg_history_and_no_config_change() -> None:
    cfg = build("ARG A\nARG B=2\n")
    assert history(cfg) == ["ARG A", "ARG B=2"]
    assert cfg["config"] == new_scratch_config("linux/amd64")["config"]


def test_apply_instruction_is_pure() -> None:
    cfg = new_scratch_config("linux/amd64")
    ins = Instruction("ENV", ("A=1",), {}, 2, "ENV A=1")
    new, entry = apply_instruction(cfg, ins, created=T)
    assert cfg["config"]["Env"] == [f"PATH={DEFAULT_PATH}"]
    assert new["config"]["Env"][-1] == "A=1"
    assert entry == {"created": T, "created_by": "ENV A=1", "comment": "buildkit.dockerfile.v0",
                     "empty_layer": True}
    assert new["history"] == []


def test_go_formatting() -> None:
    assert [go_duration(n) for n in (0, 500_000_000, 1_500_000_000, 90 * 10**9, 3600 * 10**9,
                                     1500)] == ["0s", "500ms", "1.5s", "1m30s", "1h0m0s",
                                                "1.5µs"]
    assert go_quote_list(["a b", 'q"', "t\tx"]) == '["a b" "q\\"" "t\\tx"]'
