"""Docker's ``--format`` forms for the listing commands (cli/formats.py): ``table``, ``json``,
``table TEMPLATE`` with Docker's column titles, ``TEMPLATE`` a line per row, ``.Label``."""

from __future__ import annotations

import json

import pytest

from isobox.cli.formats import Listing, go_time, render_template
from isobox.errors import ConfigError

HEADERS = {"ID": "CONTAINER ID", "Names": "NAMES", "Status": "STATUS"}


def listing() -> Listing:
    lst = Listing(HEADERS, ["ID", "Names"])
    lst.add({"ID": "abc", "Names": "web", "Status": "Up 2 seconds"}, {"tier": "front"})
    lst.add({"ID": "defdefdef", "Names": "db", "Status": "Exited (0)"})
    return lst


def test_default_table_and_plain_table(capsys: pytest.CaptureFixture[str]) -> None:
    for fmt in ("", "table", " table "):
        listing().print(fmt)
        assert capsys.readouterr().out.splitlines() == [
            "CONTAINER ID   NAMES", "abc            web", "defdefdef      db"]


def test_json_is_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    for fmt in ("json", "{{json .}}"):
        listing().print(fmt)
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["Names"] for r in rows] == ["web", "db"] and rows[0]["Status"] == "Up 2 seconds"


def test_template_is_a_line_per_row(capsys: pytest.CaptureFixture[str]) -> None:
    listing().print('{{.Names}}: {{.Status}} [{{.Label "tier"}}]')
    assert capsys.readouterr().out == "web: Up 2 seconds [front]\ndb: Exited (0) []\n"


def test_table_template_titles_columns_as_docker(capsys: pytest.CaptureFixture[str]) -> None:
    listing().print("table {{.Names}}\\t{{.Status}}\t{{upper .ID}}")
    assert capsys.readouterr().out.splitlines() == [
        "NAMES   STATUS         CONTAINER ID", "web     Up 2 seconds   ABC",
        "db      Exited (0)     DEFDEFDEF"]


@pytest.mark.parametrize("fmt, message", [
    ("{{.Nope}}", "can't evaluate field Nope"),
    ("table {{.ID}", "unclosed action"),
    ("{{range .X}}", "without {{end}}"),
])
def test_bad_templates_name_the_problem(fmt: str, message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=message) as e:
        listing().print(fmt)
    assert "--format" in str(e.value) and capsys.readouterr().out == ""


def test_render_template_values_print_as_go_does() -> None:
    doc = {"A": {"B": [1, True, None]}, "M": {"y": 2, "x": "s"}}
    assert render_template("{{.A.B}} {{.M}} {{json .M}} {{index .M \"y\"}}", doc) == \
        '[1 true <nil>] map[x:s y:2] {"y":2,"x":"s"} 2'
    assert go_time(0) == "1970-01-01 00:00:00 +0000 UTC"


@pytest.mark.parametrize("fmt", ["{{", "table {{.ID}", "{{range .X}}", "{{end}}",
                                 "{{if .A}}{{else}}{{else}}{{end}}"])
def test_a_bad_template_fails_with_nothing_to_list(fmt: str) -> None:
    with pytest.raises(ConfigError, match="--format"):
        Listing(HEADERS, ["ID"]).print(fmt)
