"""Build the guest initramfs: the agent as /init, static busybox, the kernel modules the VM
needs (with their modules.dep closure, decompressed) and a /modules load-order list.

The archive is an uncompressed newc cpio (the kernel unpacks it without a decompressor,
which is faster than any codec under TCG), cached by a digest of every input. Size is boot
time under TCG (~0.1 s per MiB before ``/init`` runs, benchmarks/vm_boot.py), so the
optional module groups are in an archive only for a VM that has their device: one cached
archive per group set (at most 2^3)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import lzma
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from isobox.atomicfile import atomic_file
from isobox.vm.cpio import CpioWriter
from isobox.vm.errors import VMError
from isobox.vm.kernel import GuestKernel, file_id

BUILDER_VERSION = "2"
BUSYBOX = Path("/bin/busybox")

# crc32c_generic: ext4 and jbd2 ask the crypto API for "crc32c" (metadata_csum, on by default
# in mkfs.ext4); it is a module in Debian and the guest has no modprobe to autoload it.
# No virtio_pci (and its two helper modules): microvm has no PCI bus (pci=off), and each
# module costs boot time under TCG (benchmarks/vm_boot.py).
# Loaded at every boot (/modules): what mounting the root disk and the agent's ports need.
DEFAULT_MODULES: tuple[str, ...] = (
    "virtio_mmio", "virtio_blk", "virtio_console", "crc32c_generic", "ext4",
)
# Loaded only when the VM has the device (/modules.<group>, named on the kernel command line
# as isobox.modules=net,9p,…): each module costs tenths of a second under TCG.
OPTIONAL_MODULES: dict[str, tuple[str, ...]] = {
    "net": ("virtio_net",), "9p": ("9p", "9pnet_virtio"), "balloon": ("virtio_balloon",),
}

_SUFFIXES = (".ko.xz", ".ko.zst", ".ko.gz", ".ko")


@dataclass(frozen=True)
class _Module:
    rel: str          # path under modules_dir as listed in modules.dep (maybe compressed)
    deps: tuple[str, ...]


def module_name(path: str) -> str:
    """The kernel's name for a module file: basename, no suffix, '-' spelled '_'."""
    base = os.path.basename(path)
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def _read_dep(modules_dir: Path) -> dict[str, _Module]:
    path = modules_dir / "modules.dep"
    return _parse_dep(path, file_id(path))


@functools.lru_cache(maxsize=4)
def _parse_dep(path: Path, _version: str) -> dict[str, _Module]:
    """Parsed once per process and file version: a VM start asks for several closures, and
    each parse of Debian's 6000-line modules.dep costs ~18 ms."""
    try:
        text = path.read_text()
    except OSError as e:
        raise VMError(f"{path}: {e.strerror}") from None
    out: dict[str, _Module] = {}
    for line in text.splitlines():
        rel, sep, deps = line.partition(":")
        if sep:
            out[module_name(rel)] = _Module(rel.strip(), tuple(deps.split()))
    return out


def _builtins(modules_dir: Path) -> set[str]:
    try:
        return {module_name(line) for line in
                (modules_dir / "modules.builtin").read_text().split()}
    except OSError:
        return set()


def module_closure(modules_dir: Path, names: Sequence[str]) -> list[str]:
    """modules.dep paths (relative to modules_dir) of ``names`` and their dependencies,
    dependencies first; built-in modules are skipped, unknown ones are an error."""
    dep = _read_dep(modules_dir)
    builtin = _builtins(modules_dir)
    by_rel = {m.rel: m for m in dep.values()}
    order: list[str] = []
    seen: set[str] = set()

    def visit(rel: str, chain: tuple[str, ...]) -> None:
        if rel in seen:
            return
        if rel in chain:
            raise VMError(f"{modules_dir}/modules.dep: dependency cycle through {rel}")
        mod = by_rel.get(rel)
        if mod is None:
            raise VMError(f"{modules_dir}/modules.dep: {rel} is a dependency but has no entry")
        for d in mod.deps:
            visit(d, (*chain, rel))
        seen.add(rel)
        order.append(rel)

    for raw in names:
        name = module_name(raw)
        if name in dep:
            visit(dep[name].rel, ())
        elif name not in builtin:
            raise VMError(f"kernel module {raw!r}: not in {modules_dir}/modules.dep "
                          "nor built in")
    return order


def _decompressed(path: Path) -> bytes:
    data = path.read_bytes()
    name = path.name
    if name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if name.endswith(".ko.zst"):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if name.endswith(".ko.gz"):
        return gzip.decompress(data)
    return data


def _plain_rel(rel: str) -> str:
    for suffix in (".xz", ".zst", ".gz"):
        if rel.endswith(".ko" + suffix):
            return rel[: -len(suffix)]
    return rel


def _is_static_elf(data: bytes) -> bool:
    """An ELF64 executable without a PT_INTERP segment (needs no dynamic loader)."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        base = phoff + i * phentsize
        if base + 4 > len(data):
            return False
        if struct.unpack_from("<I", data, base)[0] == 3:  # PT_INTERP
            return False
    return True


def _read_exe(path: Path, what: str, hint: str, allow_script: bool = False) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise VMError(f"{what} {path}: no such file; {hint}") from None
    except OSError as e:
        raise VMError(f"{what} {path}: {e.strerror}") from None
    if allow_script and data.startswith(b"#!"):
        return data
    if not _is_static_elf(data):
        raise VMError(f"{what} {path}: not a statically linked x86-64 ELF executable; {hint}")
    return data


def guest_initramfs(cache_dir: Path, kernel: GuestKernel, agent: Path,
                    extra_modules: Sequence[str] = (), groups: Sequence[str] = ()) -> Path:
    """The cached initramfs for this kernel, agent and module set (built when missing), with
    the OPTIONAL_MODULES ``groups`` named (the VM's devices)."""
    unknown = sorted(set(groups) - set(OPTIONAL_MODULES))
    if unknown:
        raise VMError(f"unknown guest module group(s): {', '.join(unknown)}")
    groups = sorted(set(groups))
    # First a quick index keyed by the identities of the inputs that name the module set
    # (modules.dep, modules.builtin: depmod rewrites them whenever modules change): a VM start
    # then needs neither a parse of modules.dep (~20 ms) nor a stat of every module.
    quick = hashlib.sha256()
    for part in (BUILDER_VERSION, kernel.version, file_id(agent), file_id(BUSYBOX),
                 _optional_id(kernel.modules_dir / "modules.dep"),
                 _optional_id(kernel.modules_dir / "modules.builtin"), ",".join(extra_modules),
                 "groups=" + ",".join(groups)):
        quick.update(part.encode() + b"\0")
    index = cache_dir / "initramfs" / f"{quick.hexdigest()}.id"
    try:
        name = index.read_text().strip()
        if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
            known = cache_dir / "initramfs" / f"{name}.cpio"
            if known.is_file():
                return known
    except OSError:
        pass
    out = _build(cache_dir, kernel, agent, extra_modules, groups)
    with atomic_file(str(index)) as f:
        f.write(out.stem.encode())
    return out


def _optional_id(path: Path) -> str:
    return file_id(path) if path.exists() else f"{path}:none"


def _build(cache_dir: Path, kernel: GuestKernel, agent: Path,
           extra_modules: Sequence[str], wanted: Sequence[str]) -> Path:
    agent_data = _read_exe(agent, "guest agent", "build it with `make`", allow_script=True)
    busybox = _read_exe(BUSYBOX, "busybox", "`apt-get install busybox-static` provides it")
    groups: dict[str, list[str]] = {}
    seen: set[str] = set()
    chosen = {g: OPTIONAL_MODULES[g] for g in wanted}
    for group, names in {"": (*DEFAULT_MODULES, *extra_modules), **chosen}.items():
        groups[group] = [r for r in module_closure(kernel.modules_dir, names) if r not in seen]
        seen.update(groups[group])
    # The key comes from what identifies each input file (not its content: hashing and
    # decompressing every module on each VM start cost 40-80 ms).
    key = hashlib.sha256()
    for part in (BUILDER_VERSION, kernel.version, file_id(agent), file_id(BUSYBOX),
                 "groups=" + ",".join(wanted)):
        key.update(part.encode() + b"\0")
    for group, rels in groups.items():
        for rel in rels:
            key.update(f"{group}:{rel}:{file_id(kernel.modules_dir / rel)}\0".encode())
    out = cache_dir / "initramfs" / f"{key.hexdigest()}.cpio"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    modules: dict[str, list[tuple[str, bytes]]] = {}
    for group, rels in groups.items():
        for rel in rels:
            try:
                data = _decompressed(kernel.modules_dir / rel)
            except (OSError, lzma.LZMAError, EOFError) as e:
                raise VMError(f"kernel module {kernel.modules_dir / rel}: {e}") from None
            dest = f"/lib/modules/{kernel.version}/{_plain_rel(rel)}"
            modules.setdefault(group, []).append((dest, data))
    with atomic_file(str(out)) as f:
        w = CpioWriter(f)
        for d in ("dev", "proc", "sys", "tmp", "rootfs", "bin", "lib", "lib/modules"):
            w.add_dir(d)
        w.add_file("init", agent_data, 0o755)
        w.add_file("bin/busybox", busybox, 0o755)
        w.add_symlink("bin/sh", "busybox")
        made: set[str] = {"lib/modules"}
        for dest, data in (m for group_mods in modules.values() for m in group_mods):
            parent = os.path.dirname(dest).strip("/")
            missing: list[str] = []
            while parent not in made:
                missing.append(parent)
                parent = os.path.dirname(parent)
            for d in reversed(missing):
                w.add_dir(d)
                made.add(d)
            w.add_file(dest, data)
        for group, mods in modules.items():
            name = f"modules.{group}" if group else "modules"
            w.add_file(name, "".join(f"{dest}\n" for dest, _ in mods).encode())
        w.close()
    return out
