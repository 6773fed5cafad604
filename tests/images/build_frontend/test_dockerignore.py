"""`.dockerignore` semantics: cases from moby/patternmatcher and Docker's documentation."""

from __future__ import annotations

import os

import pytest

from isobox.errors import ConfigError
from isobox.images.build.dockerignore import (
    Matcher,
    go_clean,
    load_dockerignore,
    read_patterns,
    walk_context,
)


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    ("**", "file", True),
    ("**", "dir/file", True),
    ("**/", "dir/file", True),
    ("**/file", "file", True),
    ("**/file", "dir/file", True),
    ("**/file", "dir/dir2/file", True),
    ("dir/**", "dir/file", True),
    ("dir/**", "dir/dir2/file", True),
    ("dir/**", "dirx/file", False),
    ("dir/**/file", "dir/file", True),
    ("dir/**/file", "dir/dir2/dir3/file", True),
    ("**/dir2/*", "dir/dir2/file", True),
    ("**file", "dir/file", True),
    ("**.txt", "a/b/file.txt", True),
    ("**/*.txt", "a/file.txt", True),
    ("**/*.txt", "a/file.go", False),
    ("*", "file", True),
    ("*", "dir/file", True),            # the parent "dir" matches
    ("*.go", "dir/main.go", False),     # * stops at /
    ("*/*.go", "dir/main.go", True),
    ("a?c", "abc", True),
    ("a?c", "a/c", False),
    ("[a-c]x", "bx", True),
    ("[a-c]x", "dx", False),
    ("[^a]x", "bx", True),
    ("a\\*b", "a*b", True),
    ("a\\*b", "acb", False),
    ("a.b", "axb", False),              # regexp metacharacters are literal
    ("a+b", "a+b", True),
    ("docs", "docs/deep/file.md", True),
    ("docs/", "docs/file", True),
    ("/docs", "docs/file", True),
    ("./docs", "docs/file", True),
    ("x/../docs", "docs/file", True),
    ("temp?", "temp1/file", True),
    ("*/temp*", "somedir/temporary.txt", True),
    ("*/*/temp*", "somedir/subdir/temporary.txt", True),
    ("*/temp*", "temporary.txt", False),
])
def test_single_pattern(pattern: str, path: str, expected: bool) -> None:
    assert Matcher(read_patterns(pattern)).excluded(path) is expected


def test_exceptions_last_match_wins() -> None:
    m = Matcher(read_patterns("*.md\n!README*.md\nREADME-secret.md\n"))
    assert m.excluded("CHANGES.md")
    assert not m.excluded("README.md")
    assert not m.excluded("README-a.md")
    assert m.excluded("README-secret.md")


def test_exception_inside_excluded_dir() -> None:
    m = Matcher(read_patterns("build\n!build/keep\n"))
    assert m.excluded("build", True)
    assert m.excluded("build/other")
    assert not m.excluded("build/keep")
    assert m.descend("build")
    assert not Matcher(["build"]).descend("build")
    assert Matcher(["build", "!*/keep"]).descend("build")
    assert not Matcher(["build", "!other/keep"]).descend("build")
    assert Matcher(["build", "!**/keep"]).descend("build")


def test_read_patterns_normalizes() -> None:
    text = "\ufeff# comment\n\n  /abs/path/  \n ! ./neg \n #not-a-comment\n/\na//b/./c\n"
    assert read_patterns(text) == ["abs/path", "!neg", "#not-a-comment", "/", "a/b/c"]


def test_context_root_never_excluded() -> None:
    assert not Matcher(["**"]).excluded(".")
    assert not Matcher(["*"]).excluded("")


def test_bad_patterns() -> None:
    with pytest.raises(ConfigError, match="illegal exclusion"):
        Matcher(read_patterns("!\n"))
    with pytest.raises(ConfigError, match="syntax error"):
        Matcher(["[abc"])


def test_go_clean() -> None:
    assert go_clean("") == "."
    assert go_clean("//a//b/") == "/a/b"
    assert go_clean("a/../../b") == "../b"


def test_load_and_walk(tmp_path: object) -> None:
    root = str(tmp_path)
    for rel in ("src/main.go", "src/main_test.go", "node_modules/x/y.js", "README.md",
                "Containerfile", ".git/HEAD"):
        os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
        open(os.path.join(root, rel), "w").close()
    with open(os.path.join(root, ".dockerignore"), "w") as f:
        f.write(".git\nnode_modules\n**/*_test.go\n*.md\n!README.md\nContainerfile\n")
    m = load_dockerignore(root)
    kept = {p for p, _ in walk_context(root, m)}
    assert kept == {"src", "src/main.go", "README.md", ".dockerignore"}


def test_containerignore_preferred(tmp_path: object) -> None:
    root = str(tmp_path)
    with open(os.path.join(root, ".dockerignore"), "w") as f:
        f.write("a\n")
    with open(os.path.join(root, ".containerignore"), "w") as f:
        f.write("b\n")
    m = load_dockerignore(root)
    assert m.excluded("b") and not m.excluded("a")
    with open(os.path.join(root, "Build.file.dockerignore"), "w") as f:
        f.write("c\n")
    assert load_dockerignore(root, os.path.join(root, "Build.file")).excluded("c")
    assert not load_dockerignore(os.path.join(root, "nope")).excluded("a")
