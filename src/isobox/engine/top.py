"""``top``: the ``ps`` lines of a container's processes (moby's way: run the host's ``ps``
and keep the rows whose PID belongs to the container); a VM's come from its guest agent."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from isobox.errors import ConfigError, ConflictError

if TYPE_CHECKING:
    from isobox.engine.engine import Engine


def top_rows(engine: Engine, ref: str, ps_args: tuple[str, ...] | list[str]
             ) -> tuple[list[str], list[list[str]]]:
    """(titles, rows) of ``ps ps_args`` (default ``-ef``) restricted to the container."""
    row = engine.get(ref)
    if engine.effective_status(row) not in ("running", "paused"):
        raise ConflictError(f"Container {row.id} is not running")
    if row.options.get("isolation") == "vm":  # vmops: the guest's processes, via its agent
        from isobox.engine.vm_guest import guest_processes

        return guest_processes(engine, row, tuple(ps_args))
    pids = set(engine.runtime(row).ps_pids(row.id))
    args = list(ps_args) or ["-ef"]
    proc = subprocess.run(["ps", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ConfigError("top", f"ps: {proc.stderr.strip() or 'failed'}")
    lines = proc.stdout.splitlines()
    if not lines:
        return [], []
    titles = lines[0].split()
    if "PID" not in titles:
        raise ConfigError("top", "Couldn't find PID field in ps output")
    col = titles.index("PID")
    out = []
    for line in lines[1:]:
        fields = line.split(None, len(titles) - 1)
        if len(fields) > col and fields[col].isdigit() and int(fields[col]) in pids:
            out.append(fields)
    return titles, out
