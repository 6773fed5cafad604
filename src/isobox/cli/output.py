"""Printing for the ``isobox`` CLI: Docker-style tables, JSON for scripts, human sizes."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any


def for_each(refs: Sequence[str], fn: Callable[[str], object], *, echo: bool = True,
             missing_ok: Callable[[str], bool] | None = None) -> bool:
    """Docker's multi-object verbs (``rm A B``): go on after an error, print each name that
    worked, report whether any failed (the command then exits 1). ``missing_ok(ref)``: on a
    NotFoundError, whether it is the object itself that does not (or no longer) exist, which
    is then no failure and not printed (``rm -f``, as docker's)."""
    from isobox.errors import IsoboxError, NotFoundError

    failed = False
    for ref in refs:
        try:
            fn(ref)
        except NotFoundError as e:
            if missing_ok is not None and missing_ok(ref):
                continue
            sys.stderr.write(f"isobox: error: {e}\n")
            failed = True
            continue
        except IsoboxError as e:
            sys.stderr.write(f"isobox: error: {e}\n")
            failed = True
            continue
        if echo:
            sys.stdout.write(f"{ref}\n")
    return failed


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=4)
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded like ``docker images`` (three spaces between columns)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for line in (headers, *rows):
        sys.stdout.write("   ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
                         .rstrip() + "\n")


def human_size(n: float) -> str:
    """Docker's units: decimal, 3 significant digits (``5.58MB``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g}{unit}" if unit != "B" else f"{int(n)}B"
        n /= 1000
    return f"{n}"


def human_ago(rfc3339: str) -> str:
    if not rfc3339:
        return "N/A"
    try:
        when = datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00"))
    except ValueError:
        return "N/A"
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    secs = (datetime.datetime.now(datetime.UTC) - when).total_seconds()
    for limit, unit in ((60, "second"), (3600, "minute"), (86400, "hour"), (86400 * 7, "day"),
                        (86400 * 30, "week"), (86400 * 365, "month")):
        if secs < limit:
            div = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 86400 * 7,
                   "month": 86400 * 30}[unit]
            n = max(1, int(secs // div))
            return "Less than a second ago" if secs < 1 else \
                f"{n} {unit}{'s' if n != 1 else ''} ago"
    n = int(secs // (86400 * 365))
    return f"{n} year{'s' if n != 1 else ''} ago"
