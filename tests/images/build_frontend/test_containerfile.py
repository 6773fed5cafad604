"""Containerfile parsing: lines, substitution, ARG scoping, every instruction, targets."""

from __future__ import annotations

import pytest

from isobox.errors import ConfigError
from isobox.images.build.containerfile import (
    Containerfile,
    Instruction,
    expand,
    parse_containerfile,
    parse_duration,
    parse_words,
    stages_for_target,
)


def parse(text: str, **build_args: str) -> Containerfile:
    return parse_containerfile(text, build_args=build_args, platform="linux/amd64")


def instrs(text: str, **build_args: str) -> list[Instruction]:
    return parse(text, **build_args).stages[-1].instructions


def error(text: str, **build_args: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, **build_args)
    return str(info.value)


# ---------------------------------------------------------------- lines


def test_continuation_comments_and_empty_lines() -> None:
    text = "FROM a\nRUN echo a \\\n# inner comment\n\n    && echo b \\  \n  c\n# end\nUSER x\n"
    run, user = instrs(text)
    assert run.args == ("echo a     && echo b   c",)
    assert (run.line, user.line) == (2, 8)


def test_escape_directive_backtick() -> None:
    text = "# escape=`\nFROM a\nRUN dir c:\\ `\n  /w\nWORKDIR c:\\x\n"
    run, wd = instrs(text)
    assert run.args == ("dir c:\\   /w",)
    assert wd.args == ("c:\\x",)
    assert parse(text).escape == "`"


def test_directive_only_at_top() -> None:
    assert parse("FROM a\n# escape=`\n").escape == "\\"
    assert parse("\n# escape=`\nFROM a\n").escape == "\\"
    assert "invalid escape token" in error("# escape=x\nFROM a\n")


def test_bom_and_crlf_and_case() -> None:
    (run,) = instrs("\ufefffrom a\r\nrun echo hi\r\n")
    assert run.kind == "RUN" and run.args == ("echo hi",)


def test_unknown_instruction_names_the_line() -> None:
    assert error("FROM a\n\nFORM b\n") == "Containerfile:3: unknown instruction: FORM"


def test_heredoc_rejected() -> None:
    assert error("FROM a\nRUN <<EOF\necho\nEOF\n").startswith("Containerfile:2: heredocs")
    assert "heredocs" in error("FROM a\nCOPY <<EOF /x\n")


def test_instruction_before_from() -> None:
    assert "no build stage" in error("RUN x\nFROM a\n")
    assert "no build stage" in error("ARG x\n")


# ---------------------------------------------------------------- words


@pytest.mark.parametrize(("word", "expected"), [
    ("$A", "a"), ("${A}", "a"), ("x${A}y", "xay"), ("$A$B", "a"),
    ("${B:-def}", "def"), ("${E:-def}", "def"), ("${E-def}", ""), ("${B-def}", "def"),
    ("${A:-def}", "a"), ("${A:+alt}", "alt"), ("${E:+alt}", ""), ("${E+alt}", "alt"),
    ("${B:+alt}", ""), ("\\$A", "$A"), ("'$A'", "$A"), ('"$A"', "a"), ('"\\$A"', "$A"),
    ('"a\\nb"', "a\\nb"), ("a\\ b", "a b"), ("$", "$"), ("$-", "$-"), ("${A:-${C}}", "a"),
    ("${B:-${C}x}", "cx"), ('"it\'s"', "it's"),
])
def test_expand(word: str, expected: str) -> None:
    assert expand(word, {"A": "a", "C": "c", "E": ""}) == expected


def test_expand_errors() -> None:
    with pytest.raises(ValueError):
        expand("${A:?must be set}", {})
    with pytest.raises(ValueError):
        expand("'open", {})
    with pytest.raises(ValueError):
        expand("${A", {"A": "x"})


def test_parse_words() -> None:
    assert parse_words('a=1 b="x y" c=\'q r\' d=e\\ f') == ["a=1", 'b="x y"', "c='q r'",
                                                           "d=e\\ f"]


# ---------------------------------------------------------------- substitution scope


def test_substitution_in_right_instructions_only() -> None:
    text = ("FROM a\nENV D=/srv P=8080 U=app\nWORKDIR $D\nUSER ${U}\nEXPOSE $P\n"
            "LABEL dir=$D\nVOLUME $D/data\nCOPY $D/x ${D}/y\nRUN echo $D\nCMD echo $D\n"
            "ENTRYPOINT [\"$D\"]\nSTOPSIGNAL ${SIG:-SIGINT}\n")
    got = {i.kind: i.args for i in instrs(text)}
    assert got["WORKDIR"] == ("/srv",)
    assert got["USER"] == ("app",)
    assert got["EXPOSE"] == ("8080/tcp",)
    assert got["LABEL"] == ("dir=/srv",)
    assert got["VOLUME"] == ("/srv/data",)
    assert got["COPY"] == ("/srv/x", "/srv/y")
    assert got["RUN"] == ("echo $D",)
    assert got["CMD"] == ("echo $D",)
    assert got["ENTRYPOINT"] == ("$D",)
    assert got["STOPSIGNAL"] == ("SIGINT",)


def test_env_forms_and_simultaneous_expansion() -> None:
    text = 'FROM a\nENV abc=hello\nENV abc=bye def=$abc\nENV K2="v 2" k3=x\\ y\nENV old value "q"\n'
    envs = [i.args for i in instrs(text)]
    assert envs[1] == ("abc=bye", "def=hello")
    assert envs[2] == ("K2=v 2", "k3=x y")
    assert envs[3] == ("old=value q",)
    assert "can't find =" in error("FROM a\nENV a=1 b\n")
    assert "must have two arguments" in error("FROM a\nENV a\n")


def test_base_env_used_for_substitution() -> None:
    cf = parse_containerfile("FROM golang\nWORKDIR $GOPATH/src\nENV P=$PATH\n",
                             build_args={}, base_env={"golang": {"GOPATH": "/go"}})
    wd, env = cf.stages[0].instructions
    assert wd.args == ("/go/src",)
    assert env.args[0].startswith("P=/usr/local/sbin")


def test_global_args_in_from_and_stage_inheritance() -> None:
    text = "ARG TAG=3.19\nARG IMG\nFROM alpine:$TAG\nARG TAG\nRUN x\nENV T=$TAG I=$IMG\n"
    cf = parse(text, IMG="ignored-for-undeclared-scope")
    st = cf.stages[0]
    assert st.base == "alpine:3.19"
    assert cf.global_args["TAG"] == "3.19"
    assert st.instructions[0].args == ("TAG=3.19",)
    assert st.instructions[1].run_args == ("TAG=3.19",)
    assert st.instructions[2].args == ("T=3.19", "I=")   # IMG not redeclared in the stage
    assert parse(text, TAG="3.20").stages[0].base == "alpine:3.20"


def test_build_args_only_for_declared() -> None:
    text = "FROM a\nARG V=1\nARG W\nENV X=$V Y=$W Z=$U\nRUN echo\n"
    cf = parse(text, V="2", U="3", HTTP_PROXY="http://p")
    env, run = cf.stages[0].instructions[2:]
    assert env.args == ("X=2", "Y=", "Z=")
    assert run.run_args == ("V=2",)
    assert cf.proxy_args == {"HTTP_PROXY": "http://p"}
    assert cf.unused_build_args == ["U"]


def test_arg_default_expanded_and_env_overrides() -> None:
    text = "FROM a\nENV A=e\nARG B=${A}-x\nARG C\nENV C=env\nRUN true\n"
    run = instrs(text, C="arg")[-1]
    assert instrs(text)[1].args == ("B=e-x",)
    assert run.run_args == ("B=e-x", "C=env")
    assert run.cache_key() == "RUN |2 B=e-x C=env /bin/sh -c true"


def test_platform_args() -> None:
    cf = parse("FROM --platform=$BUILDPLATFORM a AS b\nARG TARGETARCH\nENV X=$TARGETARCH\n")
    assert cf.stages[0].platform is not None and cf.stages[0].platform.startswith("linux/")
    assert cf.stages[0].instructions[1].args == ("X=amd64",)


# ---------------------------------------------------------------- instructions


def test_run_forms_and_flags() -> None:
    shell, exe = instrs('FROM a\nRUN echo hi\nRUN ["echo", "hi"]\n')
    assert not shell.json_form and shell.cache_key() == "RUN /bin/sh -c echo hi"
    assert exe.json_form and exe.command() == ["echo", "hi"]
    assert exe.cache_key() == "RUN echo hi"
    assert shell.cache_key(["/bin/bash", "-c"]) == "RUN /bin/bash -c echo hi"
    assert "RUN --mount is not supported" in error("FROM a\nRUN --mount=type=cache,target=/x y\n")
    assert "RUN --network" in error("FROM a\nRUN --network=none y\n")
    assert "RUN requires" in error("FROM a\nRUN\n")


def test_copy_add() -> None:
    text = ("FROM a AS one\nFROM b\nCOPY --from=one --chown=1:2 --chmod=644 a b /dst/\n"
            'COPY ["x y", "/z"]\nADD --chown=u http://h/f /f\n')
    cp, js, add = instrs(text)
    assert cp.args == ("a", "b", "/dst/")
    assert cp.flags == {"from": "one", "chown": "1:2", "chmod": "644"}
    assert cp.cache_key() == "COPY --chmod=644 --chown=1:2 --from=one a b /dst/"
    assert js.args == ("x y", "/z") and js.json_form
    assert add.args == ("http://h/f", "/f")
    assert "unknown flag: --from" in error("FROM a\nADD --from=x a b\n")
    assert "at least two arguments" in error("FROM a\nCOPY a\n")
    assert "variable expansion is not supported" in error("FROM a\nARG S=x\nCOPY --from=$S a b\n")


def test_cmd_entrypoint_shell() -> None:
    cmd, ep, sh = instrs('FROM a\nCMD ["a", "b"]\nENTRYPOINT run it\nSHELL ["/bin/bash", "-c"]\n')
    assert cmd.json_form and cmd.args == ("a", "b")
    assert not ep.json_form and ep.args == ("run it",)
    assert sh.args == ("/bin/bash", "-c")
    assert "JSON form" in error("FROM a\nSHELL /bin/bash -c\n")
    (bad_json,) = instrs("FROM a\nCMD [not json]\n")
    assert not bad_json.json_form and bad_json.args == ("[not json]",)


def test_expose() -> None:
    (e,) = instrs("FROM a\nEXPOSE 80 443/tcp 53/UDP 8000-8002/udp\n")
    assert e.args == ("80/tcp", "443/tcp", "53/udp", "8000/udp", "8001/udp", "8002/udp")
    assert "invalid containerPort" in error("FROM a\nEXPOSE http\n")
    assert "invalid proto" in error("FROM a\nEXPOSE 80/foo\n")


def test_label_volume_user_workdir_stopsignal_maintainer() -> None:
    text = ('FROM a\nLABEL a=1 "b c"="d e" legacy\\ key=v\nVOLUME ["/v1", "/v2"]\n'
            "VOLUME /v3 /v4\nUSER 1000:1000\nWORKDIR rel\nSTOPSIGNAL 9\nMAINTAINER Jo <j@x>\n")
    label, v1, v2, user, wd, sig, mt = instrs(text)
    assert label.pairs() == [("a", "1"), ("b c", "d e"), ("legacy key", "v")]
    assert v1.args == ("/v1", "/v2") and v2.args == ("/v3", "/v4")
    assert user.args == ("1000:1000",) and wd.args == ("rel",) and sig.args == ("9",)
    assert mt.args == ("Jo <j@x>",)
    assert "invalid signal" in error("FROM a\nSTOPSIGNAL SIGFOO\n")
    assert instrs("FROM a\nSTOPSIGNAL sigrtmin+3\n")[0].args == ("sigrtmin+3",)


def test_healthcheck() -> None:
    text = ("FROM a\nHEALTHCHECK NONE\nHEALTHCHECK --interval=30s --timeout=1m30s "
            "--start-period=500ms --retries=3 CMD curl -f http://x/\n"
            'HEALTHCHECK CMD ["/bin/check", "-q"]\n')
    none, shell, exe = instrs(text)
    assert none.args == ("NONE",)
    assert shell.args == ("CMD-SHELL", "curl -f http://x/")
    assert shell.flags == {"interval": "30000000000", "timeout": "90000000000",
                           "start-period": "500000000", "retries": "3"}
    assert exe.args == ("CMD", "/bin/check", "-q")
    assert "takes no arguments" in error("FROM a\nHEALTHCHECK NONE x\n")
    assert "unknown type" in error("FROM a\nHEALTHCHECK RUN x\n")
    assert "retries" in error("FROM a\nHEALTHCHECK --retries=-1 CMD x\n")
    assert "unknown flag" in error("FROM a\nHEALTHCHECK --foo=1 CMD x\n")


def test_parse_duration() -> None:
    assert parse_duration("1h2m3.5s") == 3723_500_000_000
    assert parse_duration("0") == 0
    with pytest.raises(ValueError):
        parse_duration("5")


def test_onbuild_rejected() -> None:
    assert "ONBUILD is not supported" in error("FROM a\nONBUILD RUN x\n")


def test_from_errors() -> None:
    assert "one or three" in error("FROM a b\n")
    assert "invalid name" in error("FROM a AS 1x\n")
    assert "duplicate stage name" in error("FROM a AS x\nFROM b AS X\n")
    assert "should not be blank" in error("FROM $NOPE\n")


# ---------------------------------------------------------------- stages


MULTI = """\
FROM golang AS base
ENV GO=1
FROM base AS build
RUN go build
FROM alpine AS tools
FROM scratch AS unused
FROM alpine AS final
COPY --from=build /app /app
COPY --from=2 /t /t
COPY --from=nginx:latest /etc/nginx /etc/nginx
"""


def test_stages_and_targets() -> None:
    cf = parse(MULTI)
    assert [(s.index, s.name, s.base) for s in cf.stages] == [
        (0, "base", "golang"), (1, "build", "base"), (2, "tools", "alpine"),
        (3, "unused", "scratch"), (4, "final", "alpine")]
    assert cf.stages[1].base_stage == 0
    assert cf.stages[1].env["GO"] == "1"
    assert cf.stages[4].deps == {1, 2}
    assert [s.index for s in stages_for_target(cf, None)] == [0, 1, 2, 4]
    assert [s.index for s in stages_for_target(cf, "BUILD")] == [0, 1]
    assert [s.index for s in stages_for_target(cf, "unused")] == [3]
    with pytest.raises(ConfigError, match='target stage "nope" could not be found'):
        stages_for_target(cf, "nope")


def test_copy_from_future_stage() -> None:
    assert "current or future" in error("FROM a\nCOPY --from=0 a b\n")
    assert "needs to be defined before" in error("FROM a AS x\nCOPY --from=y a b\nFROM b AS y\n")


def test_stage_args_inherited_from_parent_stage() -> None:
    cf = parse("FROM a AS p\nARG V=1\nFROM p\nRUN x\n")
    assert cf.stages[1].instructions[0].run_args == ("V=1",)


def test_error_path_used() -> None:
    with pytest.raises(ConfigError) as info:
        parse_containerfile("FROM a\nBAD x\n", build_args={}, path="ctx/Dockerfile")
    assert info.value.where == "ctx/Dockerfile:2"
    with pytest.raises(ConfigError):
        parse_containerfile("", build_args={})
