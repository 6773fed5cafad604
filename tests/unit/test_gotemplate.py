"""The Go text/template subset behind ``--format`` (cli/gotemplate.py): the idioms of
scripts written for Docker, and what Go prints for them."""

from __future__ import annotations

import pytest

from isobox.cli.gotemplate import TemplateError, parse, render

DOC = {
    "Name": "/web",
    "State": {"Running": True, "Pid": 42, "ExitCode": 0, "Status": "running"},
    "Config": {"Cmd": ["sleep", "1000"], "Labels": {"b": "2", "a": "<1&>"}, "Env": []},
    "NetworkSettings": {"Networks": {"net2": {"IPAddress": "10.0.2.5"},
                                     "net1": {"IPAddress": "10.0.1.5"}}},
    "Mounts": [{"Source": "/s", "Destination": "/d"}],
}


def t(fmt: str, doc: object = DOC) -> str:
    return render(parse(fmt), doc)


@pytest.mark.parametrize(("fmt", "out"), [
    ("{{.Name}} {{.State.Pid}} {{.State.Running}}", "/web 42 true"),
    ("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "10.0.1.5 10.0.2.5 "),
    ("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}", "a=<1&>;b=2;"),
    ("{{range $i, $c := .Config.Cmd}}{{$i}}:{{$c}} {{end}}", "0:sleep 1:1000 "),
    ("{{range .Config.Env}}x{{else}}empty{{end}}", "empty"),
    ("{{range .Mounts}}{{.Source}}->{{.Destination}}{{end}}", "/s->/d"),
    ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
    ("{{if eq .State.Status \"exited\"}}x{{else if .State.Running}}r{{else}}?{{end}}", "r"),
    ("{{with .State}}{{.Pid}}{{end}}", "42"),
    ("{{.Config.Labels.nosuch}}", "<no value>"),
    ("{{index .Config.Labels \"b\"}} {{index .Config.Cmd 1}}", "2 1000"),
    ("{{json .Config.Cmd}} {{json .Config.Labels.a}}", '["sleep","1000"] "\\u003c1\\u0026\\u003e"'),
    ("{{.Config.Cmd | json}}", '["sleep","1000"]'),
    ("{{join .Config.Cmd \",\"}} {{len .Config.Cmd}}", "sleep,1000 2"),
    ("{{printf \"%s:%d\" .Name .State.Pid}}", "/web:42"),
    ("{{upper .State.Status}} {{lower \"AB\"}} {{title \"ab cd\"}}", "RUNNING ab Ab Cd"),
    ("{{not .State.Running}} {{and .State.Running .Name}} {{or .State.ExitCode \"z\"}}",
     "false /web z"),
    ("{{$n := .Name}}{{range .Config.Cmd}}{{$n}}{{end}}", "/web/web"),
    ("{{range .Config.Cmd}}{{$.Name}}{{end}}", "/web/web"),
    ("a {{- \" b \" -}} c", "a b c"),
    ("{{.State}}", "map[ExitCode:0 Pid:42 Running:true Status:running]"),
    ("{{split \"a:b\" \":\"}}", "[a b]"),
])
def test_docker_script_idioms(fmt: str, out: str) -> None:
    assert t(fmt) == out


@pytest.mark.parametrize(("fmt", "message"), [
    ("{{.Nope}}", "can't evaluate field Nope"),
    ("{{$x}}", r'undefined variable "\$x"'),
    ("{{range .Name}}{{end}}", "range can't iterate"),
    ("{{.Name .State}}", "can't give arguments"),
])
def test_errors_at_run_time_name_the_problem(fmt: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message) as e:
        t(fmt)
    assert str(e.value).startswith("--format: template: ")


@pytest.mark.parametrize("fmt", ["{{.A", "{{if .A}}", "{{end}}", "{{range}}{{end}}",
                                 "{{else}}", "{{\"open}}", "{{nosuchfunc .Name}}"])
def test_syntax_errors_before_anything_runs(fmt: str) -> None:
    with pytest.raises(TemplateError):
        parse(fmt)


def test_escapes_in_strings_and_bad_calls_are_no_traceback() -> None:
    """Review findings: quoted \\n/\\t are Go escapes (was a JSONDecodeError traceback);
    a function given the wrong arguments is a TemplateError (was IndexError/ValueError);
    index of a missing key, or of a null map, is Go's zero value for Docker's string maps."""
    doc = {"Names": ["a", "b"], "Config": {"Labels": None}, "A": "x"}
    assert render(parse('{{join .Names "\\n"}}|{{printf "%s\\t%s" .A .A}}'), doc) == \
        "a\nb|x\tx"
    assert render(parse('[{{index .Config.Labels "k"}}]'), doc) == "[]"
    for fmt in ("{{and}}", "{{or}}", "{{lt 1}}", '{{truncate .A "z"}}', '{{split .A ""}}',
                '{{printf "%1.1.1d" 1}}'):
        with pytest.raises(TemplateError):
            render(parse(fmt), doc)
