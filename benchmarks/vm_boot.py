#!/usr/bin/env python3
"""`isobox run --rm --isolation vm --network none busybox true` against a hand-written
`qemu-system-x86_64` booting the same PVH vmlinux with a minimal busybox initramfs that loads
the modules needed to mount the same root disk, runs `true` in it and powers off; alternating.
Then: time to the workload's first output, QEMU's host memory overhead per idle 256 MiB VM,
snapshot save/restore of a running 256 MiB guest, and where isobox's extra time goes.

Usage: benchmarks/vm_boot.py [--rounds 10] [--output-rounds 5] [--snapshots 3]
                             [--skip compare|output|memory|snapshot|profile]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_common import IsoboxEnv, med, pct, timed

from isobox.engine.vm_resources import guest_ram_kib

# What the hand-written VM needs to mount an ext4 virtio-blk disk (isobox loads more:
# vm/initramfs.py DEFAULT_MODULES, compared in the profile).
BARE_MODULES = ("virtio_mmio", "virtio_blk", "crc32c_generic", "ext4")
# /init of the hand-written VM. `benchstamp=1` on the kernel command line (the kernel hands
# unknown dot-less parameters to init as environment) prints uptime stamps on the console.
INIT = """#!/bin/busybox sh
B=/bin/busybox
stamp() { [ -n "$benchstamp" ] && echo "@$1 $($B cut -d' ' -f1 /proc/uptime)" >/dev/console; }
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
stamp init
while read -r m; do $B insmod "$m"; done </modules
stamp modules
i=0
while [ ! -b /dev/vda ] && [ $i -lt 500 ]; do $B usleep 10000; i=$((i + 1)); done
$B mount -t ext4 /dev/vda /rootfs
stamp mount
$B chroot /rootfs true
stamp true
$B umount /rootfs
stamp umount
$B poweroff -f
"""
VM_ARGS = ("run", "--rm", "--isolation", "vm", "--network", "none", "busybox")


def load() -> str:
    """Load average and how many QEMUs run on the machine (other helpers' VMs included)."""
    with open("/proc/loadavg") as f:
        la = " ".join(f.read().split()[:3])
    n = 0
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/comm") as f:
                n += f.read().startswith("qemu-system")
        except OSError:
            pass
    return f"load average {la}, {n} qemu processes running"


# ---- the hand-written VM ---------------------------------------------------------------------


class BareVM:
    """The same kernel and root disk as isobox's, a busybox /init, QEMU options from vm/qemu.py."""

    def __init__(self, iso: IsoboxEnv) -> None:
        from isobox.vm.accel import detect
        from isobox.vm.kernel import guest_kernel

        cache = Path(iso.root) / "vm"
        self.kernel = guest_kernel(cache)
        self.accel = detect()
        bases = sorted((cache / "rootfs").glob("*.ext4"))
        if not bases:
            raise RuntimeError(f"no root disk in {cache}/rootfs: run isobox once first")
        self.base = bases[0]
        self.dir = Path(tempfile.mkdtemp(prefix="ibxvb", dir="/tmp"))
        self.initrd = {"min": self._initramfs("min", BARE_MODULES)}

    def initramfs_full(self) -> Path:
        """The same init with isobox's whole module list (for the profile)."""
        from isobox.vm.initramfs import DEFAULT_MODULES

        if "full" not in self.initrd:
            self.initrd["full"] = self._initramfs("full", DEFAULT_MODULES)
        return self.initrd["full"]

    def _initramfs(self, tag: str, names: tuple[str, ...]) -> Path:
        from isobox.vm.cpio import CpioWriter
        from isobox.vm.initramfs import BUSYBOX, _decompressed, _plain_rel, module_closure

        out = self.dir / f"{tag}.cpio"
        mods = self.kernel.modules_dir
        with open(out, "wb") as f:
            w = CpioWriter(f)
            for d in ("dev", "proc", "sys", "rootfs", "bin", "lib"):
                w.add_dir(d)
            w.add_file("init", INIT.encode(), 0o755)
            w.add_file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
            lst = []
            for i, rel in enumerate(module_closure(mods, names)):
                dest = f"lib/{i:02d}-{os.path.basename(_plain_rel(rel))}"
                w.add_file(dest, _decompressed(mods / rel))
                lst.append("/" + dest)
            w.add_file("modules", "".join(m + "\n" for m in lst).encode())
            w.close()
        return out

    def overlay(self) -> Path:
        from isobox.vm.disk import create_overlay

        disk = self.dir / "disk.qcow2"
        disk.unlink(missing_ok=True)
        create_overlay(self.base, "raw", disk)
        return disk

    def argv(self, initrd: Path, disk: Path, console: Path | None = None,
             extra_cmdline: str = "", memory_mib: int = 512) -> list[str]:
        """Written out by hand; only the option constants come from vm/qemu.py."""
        from isobox.vm.qemu import BASE_CMDLINE, MACHINE_OPTS, QEMU, SANDBOX

        tcg_tsc = self.accel.name == "tcg" and self.accel.tsc_khz
        cmdline = [*BASE_CMDLINE, *([f"tsc_early_khz={self.accel.tsc_khz}"] if tcg_tsc else []),
                   *(["console=ttyS0"] if console else ["quiet", "8250.nr_uarts=0"])]
        if extra_cmdline:
            cmdline.append(extra_cmdline)
        blockdev = {"driver": "qcow2", "node-name": "vda", "read-only": False,
                    "file": {"driver": "file", "filename": str(disk), "read-only": False}}
        argv = [QEMU, "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
                "-sandbox", SANDBOX,
                "-M", f"microvm,{MACHINE_OPTS},pit={'off' if tcg_tsc else 'auto'},"
                      f"isa-serial={'on' if console else 'off'}",
                "-global", "virtio-mmio.force-legacy=false", "-m", f"{memory_mib}M", "-smp", "1",
                "-kernel", str(self.kernel.vmlinux), "-initrd", str(initrd),
                "-append", " ".join(cmdline),
                *(["-accel", "kvm", "-cpu", "host"] if self.accel.name == "kvm"
                  else ["-accel", "tcg", "-cpu", "max"]),
                "-blockdev", json.dumps(blockdev, separators=(",", ":")),
                "-device", "virtio-blk-device,drive=vda"]
        if console:
            argv += ["-chardev", f"file,id=con,path={console}", "-serial", "chardev:con"]
        return argv

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# ---- 1. boot to `true` and back: isobox vs the hand-written VM --------------------------------


def compare(iso: IsoboxEnv, bare: BareVM, rounds: int) -> float:
    run = iso.argv(*VM_ARGS, "true")
    timed(run, iso.env)  # warm-up (the caches are already built)
    timed(bare.argv(bare.initrd["min"], bare.overlay()))
    times: dict[str, list[float]] = {"isobox": [], "qemu": []}
    print(f"\nboot, `true`, power off: {rounds} rounds, alternating ({load()})")
    for i in range(rounds):
        disk = bare.overlay()  # outside the timing, as isobox's is made inside its run
        pair = [("isobox", run, iso.env), ("qemu", bare.argv(bare.initrd["min"], disk), None)]
        for name, argv, env in pair if i % 2 == 0 else pair[::-1]:
            times[name].append(timed(argv, env))
    print(f"{'':<8}{'median s':>10}{'p95 s':>8}{'min s':>8}")
    for name, xs in times.items():
        print(f"{name:<8}{med(xs):>10.3f}{pct(xs, 0.95):>8.3f}{min(xs):>8.3f}")
    r = med(times["isobox"]) / med(times["qemu"])
    print(f"ratio isobox / bare qemu: {r:.2f}x (median; target <= 1.15x: "
          f"{'met' if r <= 1.15 else 'NOT met'}); after: {load()}")
    return r


# ---- 2. time to first output ------------------------------------------------------------------


def first_output(iso: IsoboxEnv, rounds: int) -> None:
    argv = iso.argv(*VM_ARGS, "echo", "hi")
    firsts: list[float] = []
    totals: list[float] = []
    for _ in range(rounds):
        t = time.perf_counter()
        p = subprocess.Popen(argv, env=iso.env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout is not None
        got = b""
        while b"hi" not in got:
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            got += chunk
        dt = time.perf_counter() - t
        _, err = p.communicate()
        if b"hi" not in got or p.returncode != 0:
            raise RuntimeError(f"echo hi: exit {p.returncode}, stdout {got!r}, "
                               f"stderr {err.decode(errors='replace')[-500:]}")
        firsts.append(dt)
        totals.append(time.perf_counter() - t)
    print(f"\n`isobox run --rm --isolation vm --network none busybox echo hi`, {rounds} runs "
          f"({load()})")
    print(f"  first output: median {med(firsts):.3f} s, min {min(firsts):.3f} s; "
          f"whole run: median {med(totals):.3f} s")


# ---- 3./4. an idle 256 MiB VM: memory overhead, snapshots -------------------------------------


def vm_dir(iso: IsoboxEnv, cid: str) -> Path:
    from isobox.engine.layout import Layout

    return Path(Layout.for_root(iso.root).vm_runtime_root) / cid


def qemu_pid(iso: IsoboxEnv, cid: str) -> int:
    with open(vm_dir(iso, cid) / "state.json") as f:
        return int(json.load(f)["pid"])


def top_mappings(pid: int, guest_mib: int) -> list[tuple[int, int, str]]:
    """(Rss KiB, size KiB, name) of each mapping but the guest RAM, largest Rss first."""
    out: list[tuple[int, int, str]] = []
    size = 0
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                size, name = (hi - lo) // 1024, " ".join(head[5:])
            elif head and head[0] == "Rss:" and not (not name and size == guest_mib * 1024):
                out.append((int(head[1]), size, name))
    return sorted(out, reverse=True)


def start_idle(iso: IsoboxEnv, memory_mib: int) -> str:
    cid = iso("run", "-d", "--isolation", "vm", "--network", "none", "--memory",
              f"{memory_mib}m", "busybox", "sleep", "3600").strip()
    iso("exec", cid, "true")  # the agent answers: booted
    return cid


def memory(iso: IsoboxEnv, vms: int, settle: float) -> None:
    from bench_common import pss_kib

    print(f"\nhost memory of idle `sleep` VMs, --memory 256m ({load()})")
    cids = [start_idle(iso, 256) for _ in range(vms)]
    try:
        time.sleep(settle)
        print(f"  {'qemu pid':>9}{'PSS MiB':>9}{'guest RAM touched MiB':>23}{'overhead MiB':>14}")
        over = []
        for cid in cids:
            pid = qemu_pid(iso, cid)
            pss = pss_kib(pid)
            rss, _ = guest_ram_kib(pid, 256)
            over.append((pss - rss) / 1024)
            print(f"  {pid:>9}{pss / 1024:>9.1f}{rss / 1024:>23.1f}{(pss - rss) / 1024:>14.1f}")
        print(f"  overhead per idle VM (PSS - guest RAM Rss): median {med(over):.1f} MiB")
        print("  largest other mappings of the first (Rss MiB, size MiB, name):")
        for rss_k, size_k, name in top_mappings(qemu_pid(iso, cids[0]), 256)[:5]:
            print(f"    {rss_k / 1024:7.1f} {size_k / 1024:9.1f}  {name or '[anon]'}")
    finally:
        iso("rm", "-f", *cids)


def snapshots(iso: IsoboxEnv, reps: int, fill_mib: int) -> None:
    from isobox.vm.qmp import QMPClient

    cid = start_idle(iso, 256)
    try:
        if fill_mib:
            iso("exec", cid, "dd", "if=/dev/urandom", "of=/dev/shm/fill", "bs=1M",
                f"count={fill_mib}")
        pid = qemu_pid(iso, cid)
        rss = guest_ram_kib(pid, 256)[0] / 1024
        saves: list[float] = []
        loads: list[float] = []
        with QMPClient(vm_dir(iso, cid) / "qmp.sock", timeout=120) as q:
            def hmp(cmd: str) -> float:
                t = time.perf_counter()
                out = q.execute("human-monitor-command", {"command-line": cmd}).get("return", "")
                dt = time.perf_counter() - t
                if "rror" in str(out):
                    raise RuntimeError(f"{cmd}: {out}")
                return dt

            for i in range(reps):
                saves.append(hmp(f"savevm bench{i}"))
                loads.append(hmp(f"loadvm bench{i}"))
            info = q.execute("human-monitor-command", {"command-line": "info snapshots"})
            for i in range(reps):
                hmp(f"delvm bench{i}")
        sizes = re.findall(r"bench\d+\s+(\S+ ?\S*iB)", str(info.get("return", "")))
        iso("exec", cid, "true")  # still alive and answering after the restores
        print(f"\nsnapshot of a running --memory 256m `sleep` VM, guest RAM touched "
              f"{rss:.0f} MiB{f' (after writing {fill_mib} MiB to /dev/shm)' if fill_mib else ''}"
              f", {reps} each ({load()})")
        print(f"  savevm: median {med(saves):.3f} s (min {min(saves):.3f}); loadvm: median "
              f"{med(loads):.3f} s (min {min(loads):.3f}); VM state {sizes[:1] or '?'}")
    finally:
        iso("rm", "-f", cid)


# ---- 5. where isobox's extra time goes -------------------------------------------------------


def strace_timeline(iso: IsoboxEnv, out: Path) -> None:
    """One traced run: when each process of the chain starts and ends (execve/exit_group)."""
    argv = ["strace", "-f", "-ttt", "--seccomp-bpf", "-e", "trace=execve,exit_group",
            "-e", "signal=none", "-qq", "-s", "80", "-o", str(out),
            *iso.argv(*VM_ARGS, "true")]
    timed(argv, iso.env)
    events: list[tuple[float, str]] = []
    names: dict[str, str] = {}
    for line in out.read_text().splitlines():
        m = re.match(r"(\d+)\s+([\d.]+) (execve|exit_group)\((.*)", line)
        if not m or "resumed" in line or "= -1" in line:
            continue
        pid, ts, call, rest = m.group(1), float(m.group(2)), m.group(3), m.group(4)
        if call == "execve":
            args = re.findall(r'"((?:[^"\\]|\\.)*)"', rest)
            prog = os.path.basename(args[0]) if args else "?"
            verb = next((a for a in args[1:] if a in ("create", "start", "delete", "kill",
                                                      "state")), "")
            names[pid] = f"{prog} {verb}".strip()
            events.append((ts, f"exec  {names[pid]} [{pid}]"))
        elif pid in names:
            events.append((ts, f"exit  {names[pid]} [{pid}]"))
    t0 = events[0][0] if events else 0.0
    print("  host timeline of one traced run (strace -f, execve/exit_group only; s from the "
          "CLI's exec):")
    for ts, what in events:
        if any(k in what for k in ("isobox", "conmon", "qemu")):
            print(f"    {ts - t0:7.3f}  {what}")


def console_stages(bare: BareVM, initrd: Path, label: str) -> None:
    con = bare.dir / "console.log"
    con.unlink(missing_ok=True)
    timed(bare.argv(initrd, bare.overlay(), console=con, extra_cmdline="quiet benchstamp=1"))
    stamps = re.findall(r"@(\w+) ([\d.]+)", con.read_text(errors="replace"))
    prev = 0.0
    parts = []
    for name, t in stamps:
        parts.append(f"{name} +{float(t) - prev:.2f}")
        prev = float(t)
    print(f"  guest stages, {label} (guest uptime; kernel boot = 'init'): {', '.join(parts)}")


def profile(iso: IsoboxEnv, bare: BareVM, rounds: int) -> None:
    print(f"\nwhere the time goes ({rounds} rounds each, alternating; {load()})")
    full = bare.initramfs_full()
    con = bare.dir / "c.log"
    cmds: dict[str, tuple[list[str] | None, dict[str, str] | None]] = {
        "isobox VM run --rm true": (iso.argv(*VM_ARGS, "true"), iso.env),
        "isobox container run --rm true (no VM)":
            (iso.argv("run", "--rm", "--network", "none", "busybox", "true"), iso.env),
        "bare qemu, 4 modules, quiet": (None, None),
        "bare qemu, isobox's module list": (None, None),
        "bare qemu, 4 modules, console=ttyS0 to a file": (None, None),
        "bare qemu, 4 modules, console=ttyS0 quiet": (None, None),
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for i in range(rounds):
        order = list(cmds) if i % 2 == 0 else list(cmds)[::-1]
        for name in order:
            argv, env = cmds[name]
            if argv is None:
                disk = bare.overlay()
                if "list" in name:
                    argv = bare.argv(full, disk)
                elif "quiet" in name and "console" in name:
                    argv = bare.argv(bare.initrd["min"], disk, console=con, extra_cmdline="quiet")
                elif "console" in name:
                    argv = bare.argv(bare.initrd["min"], disk, console=con)
                else:
                    argv = bare.argv(bare.initrd["min"], disk)
            times[name].append(timed(argv, env))
    for name, xs in times.items():
        print(f"  {name:<48}{med(xs):>7.3f} s")
    console_stages(bare, bare.initrd["min"], "4 modules")
    console_stages(bare, full, "isobox's module list")
    strace_timeline(iso, bare.dir / "strace.out")
    print(f"  after: {load()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--output-rounds", type=int, default=5)
    ap.add_argument("--profile-rounds", type=int, default=5)
    ap.add_argument("--snapshots", type=int, default=3)
    ap.add_argument("--fill-mib", type=int, default=0,
                    help="write this much random data to the guest's /dev/shm before savevm")
    ap.add_argument("--memory-vms", type=int, default=2)
    ap.add_argument("--skip", action="append", default=[],
                    choices=("compare", "output", "memory", "snapshot", "profile"))
    args = ap.parse_args()
    iso = IsoboxEnv()
    bare: BareVM | None = None
    try:
        iso(*VM_ARGS, "true")  # builds the kernel, agent, initramfs and root disk caches
        bare = BareVM(iso)
        print(f"accelerator {bare.accel.name} ({bare.accel.reason}); kernel "
              f"{bare.kernel.version}; {os.cpu_count()} cpus")
        if "compare" not in args.skip:
            compare(iso, bare, args.rounds)
        if "output" not in args.skip:
            first_output(iso, args.output_rounds)
        if "memory" not in args.skip:
            memory(iso, args.memory_vms, settle=3.0)
        if "snapshot" not in args.skip:
            snapshots(iso, args.snapshots, args.fill_mib)
        if "profile" not in args.skip:
            profile(iso, bare, args.profile_rounds)
        left = iso.leftovers()
        if left:
            print(f"\nLEFT BEHIND in {iso.root}: {left[:10]}")
            return 1
        return 0
    finally:
        if bare is not None:
            bare.close()
        iso.close()


if __name__ == "__main__":
    sys.exit(main())
