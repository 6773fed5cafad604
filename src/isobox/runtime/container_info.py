"""Read-only commands: ``state``, ``list``, ``ps``."""

from __future__ import annotations

import sys

from isobox import fastjson
from isobox.errors import ConfigError
from isobox.runtime.state import StateStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _pretty(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2)


def state(store: StateStore, cid: str) -> str:
    return _pretty(store.load(cid, creating_ok=True).oci_state())


def list_containers(store: StateStore, fmt: str = "table", quiet: bool = False) -> str:
    items: list[dict[str, Any]] = []
    for cid in store.ids():
        try:
            s = store.load(cid, creating_ok=True).oci_state()
        except Exception:  # a container being deleted concurrently
            continue
        s.pop("annotations", None)
        items.append(s)
    if quiet:
        return "".join(f"{s['id']}\n" for s in items)
    if fmt == "json":
        return fastjson.dumps(items) + "\n"
    if fmt != "table":
        raise ConfigError("--format", f"invalid format {fmt!r} (table or json)")
    rows = [["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]]
    rows += [[s["id"], str(s["pid"]), s["status"], s["bundle"], s["created"],
              s["owner"] or "root"] for s in items]
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return "".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n"
                   for r in rows)


def ps(store: StateStore, cid: str, fmt: str = "table", ps_args: list[str] | None = None) -> str:
    from isobox.cgroups import CgroupManager

    st = store.load(cid)
    pids = CgroupManager.from_state(st.data["cgroup"]).pids()
    if fmt == "json":
        return fastjson.dumps(pids) + "\n"
    if fmt != "table":
        raise ConfigError("--format", f"invalid format {fmt!r} (table or json)")
    import subprocess

    out = subprocess.run(["ps", *(ps_args or ["-ef"])], capture_output=True, text=True,
                         check=False).stdout.splitlines()
    if not out:
        return ""
    header = out[0].split()
    col = header.index("PID") if "PID" in header else 1
    lines = [out[0]] + [ln for ln in out[1:] if len(ln.split()) > col
                        and ln.split()[col].isdigit() and int(ln.split()[col]) in pids]
    return "\n".join(lines) + "\n"


def print_out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()
