"""A VM's resources as the host sees them, for ``inspect``: the guest's size, the limit of
QEMU's cgroup (guest RAM plus an allowance for QEMU itself) and, while it runs, QEMU's measured
memory split into the guest RAM it touched and its own overhead (PSS of QEMU minus the PSS of
the guest RAM mapping: what benchmarks/vm_boot.py reports per idle VM)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from isobox.engine.engine import Engine
    from isobox.engine.state import ContainerRow

MIB = 1 << 20


def guest_ram_kib(pid: int, guest_mib: int) -> tuple[int, int]:
    """(Rss, Pss) in KiB of the guest RAM: QEMU's anonymous mapping of exactly the -m size."""
    want = guest_mib * 1024
    cur: dict[str, int] = {}
    candidate = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if not head:
                continue
            if "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
                if candidate and cur:
                    break
                lo, _, hi = head[0].partition("-")
                try:
                    size_kib = (int(hi, 16) - int(lo, 16)) // 1024
                except ValueError:
                    continue
                candidate = len(head) < 6 and size_kib == want  # anonymous, guest-sized
                cur = {}
            elif candidate and head[0].endswith(":") and len(head) >= 2 and head[1].isdigit():
                cur[head[0][:-1]] = int(head[1])
    if not (candidate and cur):
        raise LookupError(f"qemu {pid}: no anonymous {guest_mib} MiB mapping")
    return cur.get("Rss", 0), cur.get("Pss", 0)


def process_pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def vm_resources(engine: Engine, row: ContainerRow) -> dict[str, Any]:
    from isobox.engine.inspect import read_spec
    from isobox.vm.runtime.create import overhead_mib
    from isobox.vm.runtime.machine import guest_cpus, guest_memory_mib

    spec = read_spec(engine, row.id)
    guest = guest_memory_mib(spec)
    allowance = overhead_mib(guest)
    out: dict[str, Any] = {
        "GuestMemory": guest * MIB, "VCPUs": guest_cpus(spec),
        "MemoryLimit": (guest + allowance) * MIB, "OverheadAllowance": allowance * MIB}
    if engine.effective_status(row) in ("running", "paused") and row.pid > 0:
        try:
            total = process_pss_kib(row.pid)
            rss, pss = guest_ram_kib(row.pid, guest)
        except (OSError, LookupError):
            return out
        out.update(QemuPss=total * 1024, GuestRamResident=rss * 1024,
                   MeasuredOverhead=max(0, total - pss) * 1024)
        uid = _uid_of(row.pid)
        if uid is not None:
            out["QemuUid"] = uid  # 0 only for a VM with 9p shares (docs/vm.md)
    return out


def _uid_of(pid: int) -> int | None:
    """The effective uid (not /proc/<pid>'s owner: QEMU is not dumpable after -runas)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[2])
    except (OSError, ValueError, IndexError):
        pass
    return None
