"""``.dockerignore`` as Docker reads it (BuildKit's ``dockerignore.ReadAll`` and
``moby/patternmatcher``).

A path is excluded when the last pattern that matches it, or one of its parent directories,
is not a ``!`` exception. ``*`` and ``?`` stop at ``/``; ``**`` spans any number of
directories; ``[...]`` is a class; ``\\`` escapes. Patterns are cleaned like Go's
``filepath.Clean`` and a leading ``/`` is dropped, so ``/a``, ``./a`` and ``a/`` are all ``a``.

The Containerfile and the ignore file themselves: as with BuildKit, the builder reads them
straight from the context directory (or wherever ``-f`` points), so excluding them never
stops a build; the exclusion only keeps them out of ``COPY``/``ADD`` of the context, which
is what ``Matcher.excluded`` answers.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from isobox.errors import ConfigError

IGNORE_FILES = (".containerignore", ".dockerignore")
_ESCAPE = frozenset(".+()|{}$")


def go_clean(path: str) -> str:
    """Go's ``path.Clean``: ``.``/``..`` resolved, duplicate slashes gone, ``""`` is ``.``."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def read_patterns(text: str) -> list[str]:
    """The patterns of an ignore file, normalized like ``dockerignore.ReadAll``."""
    out: list[str] = []
    for n, line in enumerate(text.split("\n")):
        if n == 0:
            line = line.lstrip("\ufeff")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


@dataclass
class Pattern:
    """One compiled pattern: exact, prefix (``a/**``), suffix (``**/a``) or regexp."""

    text: str
    exclusion: bool
    kind: str = "exact"
    regex: re.Pattern[str] | None = None
    dirs: list[str] = field(default_factory=list)

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None


def compile_pattern(text: str, exclusion: bool) -> Pattern:
    """Translate like ``patternmatcher.Pattern.compile`` (slash separator)."""
    regex, kind, i = "^", "exact", 0
    while i < len(text):
        ch = text[i]
        i += 1
        if ch == "*" and text[i:i + 1] == "*":
            first = i == 1
            i += 2 if text[i + 1:i + 2] == "/" else 1
            if i < len(text):
                regex, kind = regex + "(.*/)?", "regexp"
            elif kind == "exact":
                kind = "prefix"
            else:
                regex, kind = regex + ".*", "regexp"
            if first:
                kind = "suffix"
        elif ch == "*":
            regex, kind = regex + "[^/]*", "regexp"
        elif ch == "?":
            regex, kind = regex + "[^/]", "regexp"
        elif ch in _ESCAPE:
            regex += "\\" + ch
        elif ch == "\\":
            if i < len(text):
                regex, kind = regex + re.escape(text[i]), "regexp"
                i += 1
            else:
                regex += "\\\\"
        elif ch in "[]":
            regex, kind = regex + ch, "regexp"
        else:
            regex += ch
    pat = Pattern(text, exclusion, kind, dirs=text.split("/"))
    if kind == "regexp":
        pat.regex = re.compile(regex + r"\Z")
    return pat


def _check_syntax(text: str) -> None:
    """Refuse what Go's ``filepath.Match`` calls a bad pattern (unclosed ``[``, trailing
    ``\\``, empty class)."""
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 == len(text):
                raise ValueError("syntax error in pattern")
            i += 2
            continue
        if ch == "[":
            end = text.find("]", i + 2 if text[i + 1:i + 2] in ("^", "]") else i + 1)
            if end < 0 or end == i + 1 or (text[i + 1] == "^" and end == i + 2):
                raise ValueError("syntax error in pattern")
            i = end
        i += 1


class Matcher:
    """Answers whether a context path is excluded by a list of ignore patterns."""

    def __init__(self, patterns: list[str], *, where: str = ".dockerignore") -> None:
        self.patterns: list[Pattern] = []
        for raw in patterns:
            text = raw.strip()
            if not text:
                continue
            text = go_clean(text)
            exclusion = text.startswith("!")
            if exclusion:
                if text == "!":
                    raise ConfigError(where, 'illegal exclusion pattern: "!"')
                text = text[1:]
            try:
                _check_syntax(text)
                self.patterns.append(compile_pattern(text, exclusion))
            except (ValueError, re.error):
                raise ConfigError(where, f"syntax error in pattern: {raw}") from None
        self.exclusions = any(p.exclusion for p in self.patterns)

    def excluded(self, relpath: str, is_dir: bool = False) -> bool:
        """True when ``relpath`` (slash-separated, relative to the context) is left out.

        ``is_dir`` does not change the answer (patterns never end in ``/`` once cleaned);
        walkers use ``descend`` to decide whether an excluded directory can be skipped.
        """
        path = go_clean(relpath.lstrip("/")) if relpath.strip("/") else "."
        if path == ".":
            return False
        parents = posixpath.dirname(path).split("/") if "/" in path else []
        matched = False
        for pat in self.patterns:
            if pat.exclusion != matched:
                continue
            hit = pat.match(path) or any(
                pat.match("/".join(parents[:i + 1])) for i in range(len(parents)))
            if hit:
                matched = not pat.exclusion
        return matched

    def descend(self, reldir: str) -> bool:
        """Whether a walker must look inside ``reldir``: it is not excluded, or an exception
        pattern could match something below it."""
        if not self.excluded(reldir, True):
            return True
        parts = go_clean(reldir).split("/")
        return any(p.exclusion and _could_match_below(p, parts) for p in self.patterns)


def _could_match_below(pat: Pattern, parts: list[str]) -> bool:
    """Whether ``pat`` may match a path strictly inside the directory ``parts``."""
    dirs = pat.dirs
    for i, part in enumerate(parts):
        if i >= len(dirs) or "**" in dirs[i]:
            return i < len(dirs)
        if not compile_pattern(dirs[i], False).match(part):
            return False
    return len(dirs) > len(parts)


def load_dockerignore(context_dir: str, containerfile: str | None = None) -> Matcher:
    """The matcher for a build context: ``<containerfile>.dockerignore`` next to the
    Containerfile if present, else ``.containerignore``, else ``.dockerignore``, else none."""
    candidates = [containerfile + ".dockerignore"] if containerfile else []
    candidates += [os.path.join(context_dir, name) for name in IGNORE_FILES]
    for path in candidates:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        except FileNotFoundError:
            continue
        return Matcher(read_patterns(text), where=path)
    return Matcher([])


def walk_context(context_dir: str, matcher: Matcher) -> Iterator[tuple[str, bool]]:
    """Yield ``(relpath, is_dir)`` for every context entry the matcher keeps, parents first;
    excluded directories are still entered when an exception may match inside them."""
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(context_dir, rel) if rel else context_dir) as it:
            entries = sorted(it, key=lambda e: e.name, reverse=True)
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            is_dir = entry.is_dir(follow_symlinks=False)
            if not matcher.excluded(path, is_dir):
                yield path, is_dir
            if is_dir and matcher.descend(path):
                stack.append(path)
