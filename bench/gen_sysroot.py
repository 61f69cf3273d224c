#!/usr/bin/env python3
"""Synthetic sysroots shaped like the KHO captures, at the size of the largest hosts in a fleet.

    bench/gen_sysroot.py SCALE OUT [--force]       # SCALE: 1x, 10x, 100x or a number (percent)
    bench/gen_sysroot.py SCALE --cached            # under /tmp/khotui-bench/<scale>, print it

100x is the largest host khotui is built for: 32 NUMA nodes (34 KHO scratch regions: lowmem,
global, one per node), 24 TiB of RAM in 128 MiB memory blocks (196,608 `memoryN` directories
with the attribute files the captures have, and the `nodeN/memoryM` entries), a nested
/proc/iomem of 20,000 lines, an outgoing `kho-v4` FDT with 10,000 sub-nodes and 500 sub-blobs
under kho/out/sub_fdts. 1x and 10x are proportionally smaller. Everything else (config.gz,
cmdline with kho=on, meminfo, kexec state, lockdown) is as in the `two-nodes` capture.

Layout choices, all as in the captures ($KHOTUI_SHARED or ../shared: kho/two-nodes/sysroot):
* sysfs links (`nodeN/memoryM`, `memoryM/nodeN`) are small files holding the link target;
* no `node/has_memory` (the captures have none), so readers fall back to the node listings;
* files with equal contents (`online`, `state`, ...) are hard links to one inode per ~60,000
  (ext4 allows 65,000 links): creating 1.4 million separate files takes minutes here, a link
  is ~10x cheaper than create+write+close, and readers cannot tell the difference.

The root FDT has `fdt_nodes` sub-nodes but only `sub_blobs` files: the first `sub_blobs`
sub-nodes have a file (kexec-metadata, LUO, memblock, kho_test, then FDTs and raw blobs
alternately); the rest name preserved data without a debugfs file, which a real kernel would
show (it creates one file per sub-node) — the brief asks for 10,000 nodes and 500 blobs.

The text builders (`iomem_text`, `kho_fdt`, `sub_blob`, ...) are importable so a test can time
a parser on its input without touching the disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

if str(Path(__file__).resolve().parents[1]) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from khotui.host.memory import _ranges
from tests.fixtures.where import CAPTURES

GENERATOR_VERSION = 1
CACHE_BASE = Path(os.environ.get("KHOTUI_BENCH_CACHE", "/tmp/khotui-bench"))
CAPTURE = CAPTURES / "two-nodes" / "sysroot"

MiB, GiB, TiB = 1 << 20, 1 << 30, 1 << 40
BLOCK_SIZE = 128 * MiB
LOW_RAM_END = 2 * GiB          # RAM below the 32-bit PCI hole: [1 MiB, 2 GiB)
HIGH_RAM_START = 4 * GiB
LINK_CHUNK = 60_000            # hard links per source inode (ext4: at most 65,000)

# The largest host (100x); smaller scales divide these.
FULL = {"nodes": 32, "blocks": 24 * TiB // BLOCK_SIZE, "iomem_lines": 20_000, "fdt_nodes": 10_000,
            "sub_blobs": 500}


@dataclass(frozen=True)
class Shape:
    """What a synthetic host has. `blocks` counts memory blocks of `block_size` bytes."""

    nodes: int
    blocks: int
    iomem_lines: int
    fdt_nodes: int
    sub_blobs: int
    block_size: int = BLOCK_SIZE

    @property
    def ram_bytes(self) -> int:
        return self.blocks * self.block_size

    @property
    def scratch_regions(self) -> int:
        return self.nodes + 2

    def label(self) -> str:
        return (f"{self.nodes} nodes, {self.ram_bytes / TiB:.2f} TiB = {self.blocks} blocks, "
                f"{self.iomem_lines} iomem lines, {self.fdt_nodes} FDT nodes, "
                f"{self.sub_blobs} sub-blobs")


def shape_for_scale(scale: float | str) -> Shape:
    """1x / 10x / 100x (or any percentage of the largest host) as a Shape."""
    s = parse_scale(scale)
    f = s / 100.0
    return Shape(nodes=max(1, round(FULL["nodes"] * f)),
                 blocks=max(32, round(FULL["blocks"] * f)),
                 iomem_lines=max(60, round(FULL["iomem_lines"] * f)),
                 fdt_nodes=max(4, round(FULL["fdt_nodes"] * f)),
                 sub_blobs=max(4, round(FULL["sub_blobs"] * f)))


def parse_scale(scale: float | str) -> float:
    if isinstance(scale, str):
        scale = scale.strip().lower().rstrip("x")
    value = float(scale)
    if not 0 < value <= 1000:
        raise ValueError(f"scale must be in (0, 1000], got {value}")
    return value


def scale_name(scale: float | str) -> str:
    s = parse_scale(scale)
    return f"{int(s)}x" if s == int(s) else f"{s}x"


# --- memory layout ------------------------------------------------------------------------


def node_blocks(shape: Shape) -> list[list[int]]:
    """Memory block indices of each node. Blocks of the 2-4 GiB PCI hole do not exist; node 0
    has the RAM below it; the others follow, each with an equal share."""
    per_low = LOW_RAM_END // shape.block_size
    first_high = HIGH_RAM_START // shape.block_size
    indices = list(range(min(per_low, shape.blocks)))
    indices += range(first_high, first_high + shape.blocks - len(indices))
    out: list[list[int]] = []
    base, extra = divmod(len(indices), shape.nodes)
    pos = 0
    for n in range(shape.nodes):
        take = base + (1 if n < extra else 0)
        out.append(indices[pos:pos + take])
        pos += take
    return out


_runs = _ranges  # sorted ids as runs [(first, last)], as khotui.host.memory groups them


def node_ram(shape: Shape) -> list[list[tuple[int, int]]]:
    """Per node, its RAM as [start, end) byte ranges (contiguous block runs)."""
    bs = shape.block_size
    return [[(a * bs, (b + 1) * bs) for a, b in _runs(ids)] for ids in node_blocks(shape)]


# --- scratch regions ------------------------------------------------------------------------

LOWMEM_SCRATCH = (0x70000000, 0x8000000)      # 128 MiB below 2 GiB, as kho_scratch lowmem
GLOBAL_SCRATCH_SIZE = 1 * GiB
NODE_SCRATCH_SIZE = 512 * MiB


def scratch(shape: Shape) -> list[tuple[int, int]]:
    """(addr, size) of kho_scratch[]: lowmem, global, then one per node (top of its RAM)."""
    regions = [LOWMEM_SCRATCH]
    ram = node_ram(shape)
    high0 = [r for r in ram[0] if r[0] >= HIGH_RAM_START] or ram[0]
    start, end = high0[0]
    g = min(GLOBAL_SCRATCH_SIZE, (end - start) // 4)
    regions.append((start + BLOCK_SIZE, g))          # inside the first System RAM piece
    for ranges in ram:
        start, end = ranges[-1]
        size = min(NODE_SCRATCH_SIZE, (end - start) // 4)
        regions.append((end - size, size))
    return regions


# --- /proc/iomem ------------------------------------------------------------------------------

_HEAD = """\
00000000-00000fff : Reserved
00001000-0009ffff : System RAM
000a0000-000bffff : PCI Bus 0000:00
000c0000-000c7fff : Video ROM
000e0000-000fffff : Reserved
  000f0000-000fffff : System ROM
"""
_TAIL_FIXED = """\
fec00000-fec003ff : IOAPIC 0
fed00000-fed003ff : HPET 0
  fed00000-fed003ff : PNP0103:00
fee00000-feefffff : Reserved
ff000000-ffffffff : Reserved
"""
_DRIVERS = ("mlx5_core", "nvme", "ahci", "ixgbe", "xhci_hcd", "i40e")


def _line(depth: int, start: int, end_incl: int, name: str) -> str:
    return f"{'  ' * depth}{start:08x}-{end_incl:08x} : {name}\n"


def iomem_text(shape: Shape) -> str:
    """/proc/iomem as the kernel prints it (r_show()), about `shape.iomem_lines` lines.

    Below 4 GiB: the low RAM with the kernel's code/data and the crash kernel nested, the
    32-bit PCI window with devices, the fixed x86 ranges. Then per node: its RAM as several
    `System RAM` ranges separated by `Reserved` holes (ACPI tables, firmware), then a 64-bit
    PCI root bus above all RAM with bridges, device BARs and driver names nested 3 deep.
    """
    out: list[str] = [_HEAD]
    low_end = min(LOW_RAM_END, shape.blocks * shape.block_size) - 1
    out.append(_line(0, 0x100000, low_end, "System RAM"))
    for name, a, b in (("Kernel code", 0x2a000000, 0x2b1fffff),
                       ("Kernel rodata", 0x2b200000, 0x2bbfffff),
                       ("Kernel data", 0x2bc00000, 0x2c0fffff),
                       ("Kernel bss", 0x2c600000, 0x2cffffff),
                       ("Crash kernel", 0x4f000000, 0x6effffff)):
        if b <= low_end:
            out.append(_line(1, a, b, name))
    out.append(_line(0, 0x80000000, 0xfebfffff, "PCI Bus 0000:00"))
    fixed = sum(s.count("\n") for s in out) + _TAIL_FIXED.count("\n")
    budget = max(shape.iomem_lines - fixed, 4 * shape.nodes)
    # ~30% of the remaining lines are RAM/holes, the rest PCI (as on real large hosts)
    ram_lines = max(1, int(budget * 0.3) // shape.nodes)
    pci_lines = max(3, (budget - ram_lines * shape.nodes) // (shape.nodes + 1))
    # a little PCI in the 32-bit window too
    out.extend(_pci_tree(0x80000000, 0xfebfffff, 0, pci_lines, depth=1))
    out.append(_TAIL_FIXED)
    ram = node_ram(shape)
    pci_base = 1 << 46   # 64 TiB: above every host's RAM
    pci_windows: list[str] = []
    for nid, ranges in enumerate(ram):
        high = [r for r in ranges if r[0] >= HIGH_RAM_START]
        out.extend(_ram_with_holes(high, ram_lines))
        bus = 0x10 * (nid + 1) % 0x100
        start = pci_base + nid * (64 * GiB)
        end = start + 64 * GiB - 1
        pci_windows.append(_line(0, start, end, f"PCI Bus {nid:04x}:{bus:02x}"))
        pci_windows.extend(_pci_tree(start, end, nid, pci_lines - 1, depth=1))
    out.extend(pci_windows)
    return "".join(out)


def _ram_with_holes(ranges: list[tuple[int, int]], lines: int) -> list[str]:
    """`System RAM` split by `Reserved` holes: about `lines` top-level lines in all."""
    out: list[str] = []
    pieces_total = max(1, (lines + 1) // 2)
    total = sum(e - s for s, e in ranges) or 1
    for s, e in ranges:
        pieces = max(1, round(pieces_total * (e - s) / total))
        step = (e - s) // pieces // BLOCK_SIZE * BLOCK_SIZE or (e - s)
        pos = s
        for i in range(pieces):
            piece_end = e if i == pieces - 1 else pos + step
            if i < pieces - 1:
                hole = 2 * MiB           # firmware/ACPI reservation at the end of the piece
                out.append(_line(0, pos, piece_end - hole - 1, "System RAM"))
                out.append(_line(0, piece_end - hole, piece_end - 1, "Reserved"))
            else:
                out.append(_line(0, pos, piece_end - 1, "System RAM"))
            pos = piece_end
    return out


def _pci_tree(start: int, end: int, seg: int, lines: int, depth: int) -> list[str]:
    """Bridges with devices and their driver claims, nested below one root window."""
    out: list[str] = []
    if lines <= 0:
        return out
    per_bridge = 9                     # bridge + 4 × (device BAR + driver)
    bridges = max(1, lines // per_bridge)
    span = (end - start + 1) // (bridges + 1)
    span = max(span & ~0xfffff, 0x100000)
    used = 0
    for b in range(bridges):
        bstart = start + b * span
        bend = bstart + span - 1
        if bend > end or used >= lines:
            break
        out.append(_line(depth, bstart, bend, f"PCI Bus {seg:04x}:{(b + 1) % 256:02x}"))
        used += 1
        dev_span = span // 4
        for d in range(4):
            if used + 2 > lines:
                break
            dstart = bstart + d * dev_span
            dev = f"{seg:04x}:{(b + 1) % 256:02x}:{d:02x}.0"
            out.append(_line(depth + 1, dstart, dstart + dev_span - 1, dev))
            out.append(_line(depth + 2, dstart, dstart + dev_span - 1,
                             _DRIVERS[(b + d) % len(_DRIVERS)]))
            used += 2
    return out


# --- the KHO FDT and sub-blobs ------------------------------------------------------------------


class FdtWriter:
    """A minimal sequential-write FDT (version 17), as libfdt's fdt_create() lays it out."""

    def __init__(self) -> None:
        self.struct = bytearray()
        self.strings = bytearray()
        self.offsets: dict[str, int] = {}

    def begin(self, name: str) -> None:
        raw = name.encode() + b"\0"
        self.struct += struct.pack(">I", 1) + raw + b"\0" * (-len(raw) % 4)

    def end(self) -> None:
        self.struct += struct.pack(">I", 2)

    def prop(self, name: str, value: bytes) -> None:
        off = self.offsets.get(name)
        if off is None:
            off = self.offsets[name] = len(self.strings)
            self.strings += name.encode() + b"\0"
        self.struct += struct.pack(">III", 3, len(value), off) + value + b"\0" * (-len(value) % 4)

    def finish(self) -> bytes:
        self.struct += struct.pack(">I", 9)
        off_rsv = 40
        off_struct = off_rsv + 16
        off_strings = off_struct + len(self.struct)
        total = off_strings + len(self.strings)
        header = struct.pack(">10I", 0xD00DFEED, total, off_struct, off_strings, off_rsv, 17, 16,
                             0, len(self.strings), len(self.struct))
        return header + b"\0" * 16 + bytes(self.struct) + bytes(self.strings)


def u64(value: int) -> bytes:
    """A KHO u64 property value: 8 bytes, little-endian (CPU order), as the kernel writes it."""
    return struct.pack("<Q", value)


def sub_node_name(i: int, shape: Shape) -> str:
    fixed = ("kexec-metadata", "LUO", "memblock", "kho_test")
    if i < len(fixed):
        return fixed[i]
    if i < shape.sub_blobs:
        return f"fdt-{i:05d}" if i % 2 == 0 else f"raw-{i:05d}"
    return f"preserved-{i:05d}"


def sub_blob(name: str, i: int) -> bytes:
    """The bytes of sub-blob `name` (index `i`): as the 7.3 kernel writes each kind."""
    if name == "kexec-metadata":
        return struct.pack("<I65sI", 1, b"7.3.4", 1)
    if name == "LUO":
        return b"luo-v2\0\0" + u64(0) + u64(0) + u64(0x7ffe5000)
    if name == "memblock":
        w = FdtWriter()
        w.begin("")
        w.prop("compatible", b"memblock-v1\0")
        for r in range(4):
            w.begin(f"r{r}")
            w.prop("compatible", b"reserve-mem-v1\0")
            w.prop("start", u64(0x100000000 + r * 0x40000000))
            w.prop("size", u64(0x10000000))
            w.end()
        w.end()
        return w.finish()
    if name == "kho_test" or name.startswith("fdt-"):
        w = FdtWriter()
        w.begin("")
        w.prop("compatible", b"kho-test-v1\0" if name == "kho_test" else b"example-v1\0")
        for c in range(1 + i % 8):
            w.begin(f"item{c}")
            w.prop("data", u64(0x2f000000 + c * 0x1000))
            w.prop("len", u64(0x1000 * (1 + c)))
            w.end()
        w.end()
        return w.finish()
    # kexec-metadata-like packed structs and opaque data: sizes from 73 bytes to 4 KiB
    size = (73, 32, 512, 4096)[i % 4]
    return struct.pack("<I65sI", 1, f"blob-{i}".encode(), i)[:size].ljust(size, bytes([i % 251]))


def kho_fdt(shape: Shape, blob_sizes: dict[str, int] | None = None) -> bytes:
    """The outgoing root FDT: kho-v4, preserved-memory-map, `fdt_nodes` sub-nodes."""
    w = FdtWriter()
    w.begin("")
    w.prop("compatible", b"kho-v4\0")
    w.prop("preserved-memory-map", u64(0x1_2345_6000))
    for i in range(shape.fdt_nodes):
        name = sub_node_name(i, shape)
        w.begin(name)
        w.prop("preserved-data", u64(0x2_0000_0000 + i * 0x2000))
        size = (blob_sizes or {}).get(name)
        w.prop("blob-size", u64(size if size is not None else 0x1000 + (i % 16) * 0x100))
        w.end()
    w.end()
    return w.finish()


def sub_blobs(shape: Shape) -> dict[str, bytes]:
    return {sub_node_name(i, shape): sub_blob(sub_node_name(i, shape), i)
            for i in range(shape.sub_blobs)}


# --- small text files ---------------------------------------------------------------------------

CMDLINE = ("BOOT_IMAGE=/boot/vmlinuz-7.3.4 root=/dev/md0 ro console=ttyS0,115200n8 "
           "crashkernel=512M numa_balancing=disable transparent_hugepage=madvise kho=on\n")


def meminfo_text(shape: Shape) -> str:
    template = (CAPTURE / "proc/meminfo").read_text()
    total_kb = shape.ram_bytes // 1024 - shape.ram_bytes // 1024 // 64   # minus the memmap
    out = []
    for line in template.splitlines():
        key = line.split(":")[0]
        if key == "MemTotal":
            line = f"MemTotal:       {total_kb:>10} kB"
        elif key in ("MemFree", "MemAvailable"):
            line = f"{key + ':':<16}{total_kb * 97 // 100:>10} kB"
        out.append(line)
    return "\n".join(out) + "\n"


def node_meminfo(nid: int, blocks: int, block_size: int) -> str:
    total = blocks * block_size // 1024
    template = (CAPTURE / "sys/devices/system/node/node1/meminfo").read_text()
    out = []
    for line in template.splitlines():
        line = line.replace("Node 1 ", f"Node {nid} ")
        if "MemTotal:" in line:
            line = f"Node {nid} MemTotal:       {total:>10} kB"
        elif "MemFree:" in line:
            line = f"Node {nid} MemFree:        {total * 97 // 100:>10} kB"
        out.append(line)
    return "\n".join(out) + "\n"


def _cpulist(nid: int, per_node: int = 16) -> str:
    return f"{nid * per_node}-{nid * per_node + per_node - 1}\n"


def _klist(n: int) -> str:
    return "0\n" if n == 1 else f"0-{n - 1}\n"


# --- writing a tree -----------------------------------------------------------------------------


def _write(path: Path, data: str | bytes, mode: int = 0o444) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


_BLOCK_ATTRS = (("online", b"1\n"), ("phys_device", b"0\n"), ("removable", b"0\n"),
                ("state", b"online\n"), ("valid_zones", b""))


def _write_blocks(args: tuple[str, list[tuple[int, int]]]) -> int:
    """Memory block directories for [(index, node)]; equal files hard-linked in chunks."""
    memory_dir, work = args
    src: dict[str, str] = {}
    count = 0
    for index, nid in work:
        d = f"{memory_dir}/memory{index}"
        os.mkdir(d)
        if count % LINK_CHUNK == 0:
            src.clear()
        for name, value in _BLOCK_ATTRS:
            key = name
            target = f"{d}/{name}"
            if key in src:
                os.link(src[key], target)
            else:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o444)
                os.write(fd, value)
                os.close(fd)
                src[key] = target
        link_key = f"node{nid}"
        target = f"{d}/node{nid}"
        if link_key in src:
            os.link(src[link_key], target)
        else:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o444)
            os.write(fd, f"../../node/node{nid}".encode())
            os.close(fd)
            src[link_key] = target
        fd = os.open(f"{d}/phys_index", os.O_WRONLY | os.O_CREAT, 0o444)
        os.write(fd, b"%08x\n" % index)
        os.close(fd)
        count += 1
    return count


def _write_node_links(args: tuple[str, int, list[int]]) -> int:
    """nodeN/memoryM entries (files holding the link target, as in the captures)."""
    node_dir, _nid, blocks = args
    for index in blocks:
        fd = os.open(f"{node_dir}/memory{index}", os.O_WRONLY | os.O_CREAT, 0o444)
        os.write(fd, f"../../memory/memory{index}".encode())
        os.close(fd)
    return len(blocks)


def _write_block_record(root: Path, per_node: list[list[int]]) -> None:
    """The memory blocks as `khotui snapshot` records them (khotui.host.blockrecord): what a
    snapshot of this host holds, written in a second rather than 1.6M files in minutes."""
    from khotui.host.blockrecord import RECORD, format_record, runs_of
    from khotui.host.memory import BLOCK_READ
    attrs = dict(_BLOCK_ATTRS)
    values = tuple(attrs[name].decode() for name in BLOCK_READ)
    keyed = sorted((i, ((nid,), (nid,), values)) for nid, blocks in enumerate(per_node)
                   for i in blocks)
    _write(root / RECORD.lstrip("/"), format_record(runs_of(keyed), BLOCK_READ))


def generate(out: str | os.PathLike[str], shape: Shape, *, jobs: int | None = None,
             snapshot: bool = False) -> Path:
    """Write a sysroot for `shape` at `out` (created; must not exist or be empty). With
    `snapshot`, the memory blocks are in the one record `khotui snapshot` writes instead of a
    directory each (the model read is the same; tests/test_snapshot.py checks both forms)."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty")
    # host state as in the capture: kexec, lockdown, sysctl, version, config.gz
    for rel in ("proc/version", "proc/config.gz", "proc/sys/kernel/kexec_load_disabled",
                "proc/sys/kernel/kexec_load_limit_panic", "proc/sys/kernel/kexec_load_limit_reboot",
                "proc/sys/kernel/osrelease", "proc/sys/kernel/ostype",
                "sys/kernel/kexec_loaded", "sys/kernel/kexec_crash_loaded",
                "sys/kernel/kexec_crash_size", "sys/kernel/kexec/loaded",
                "sys/kernel/kexec/crash_loaded", "sys/kernel/kexec/crash_size",
                "sys/kernel/kexec/crash_elfcorehdr_size", "sys/kernel/kexec/crash_cma_ranges",
                "sys/kernel/security/lockdown"):
        _write(root / rel, (CAPTURE / rel).read_bytes())
    _write(root / "proc/cmdline", CMDLINE)
    _write(root / "proc/meminfo", meminfo_text(shape))
    _write(root / "proc/iomem", iomem_text(shape))

    kho = root / "sys/kernel/debug/kho/out"
    blobs = sub_blobs(shape)
    for name, data in blobs.items():
        _write(kho / "sub_fdts" / name, data, 0o400)
    _write(kho / "fdt", kho_fdt(shape, {k: len(v) for k, v in blobs.items()}), 0o400)
    regions = scratch(shape)
    _write(kho / "scratch_phys", "".join(f"{a:#x}\n" for a, _ in regions), 0o400)
    _write(kho / "scratch_len", "".join(f"{s:#x}\n" for _, s in regions), 0o400)

    node_root = root / "sys/devices/system/node"
    memory_dir = root / "sys/devices/system/memory"
    memory_dir.mkdir(parents=True)
    _write(memory_dir / "block_size_bytes", f"{shape.block_size:x}\n")
    nodes = _klist(shape.nodes)
    for name, text in (("possible", nodes), ("online", nodes), ("has_normal_memory", nodes),
                       ("has_cpu", nodes)):
        _write(node_root / name, text)
    per_node = node_blocks(shape)
    for nid, blocks in enumerate(per_node):
        d = node_root / f"node{nid}"
        _write(d / "cpulist", _cpulist(nid))
        _write(d / "meminfo", node_meminfo(nid, len(blocks), shape.block_size))

    if snapshot:
        _write_block_record(root, per_node)
        return root
    jobs = jobs or min(4, os.cpu_count() or 1)
    block_work = [(i, nid) for nid, blocks in enumerate(per_node) for i in blocks]
    chunks = [block_work[k::jobs] for k in range(jobs)]
    link_work = [(str(node_root / f"node{nid}"), nid, blocks) for nid, blocks in enumerate(per_node)]
    if jobs > 1 and len(block_work) > 5000:
        from multiprocessing import Pool
        with Pool(jobs) as pool:
            pool.map(_write_blocks, [(str(memory_dir), c) for c in chunks])
            pool.map(_write_node_links, link_work)
    else:
        _write_blocks((str(memory_dir), block_work))
        for w in link_work:
            _write_node_links(w)
    return root


def cached(scale: float | str, *, base: Path = CACHE_BASE, log=None, snapshot: bool = False) -> Path:
    """The sysroot for `scale`, generated once under `base/<scale>` (keyed by GENERATOR_VERSION);
    with `snapshot`, under `base/<scale>-snapshot` in the form `khotui snapshot` writes."""
    name = scale_name(scale) + ("-snapshot" if snapshot else "")
    final = base / name
    stamp = final / "VERSION"
    want = f"{GENERATOR_VERSION}\n"
    if stamp.exists() and stamp.read_text() == want:
        return final / "sysroot"
    base.mkdir(parents=True, exist_ok=True)
    shape = shape_for_scale(scale)
    if log:
        log(f"generating {name} ({shape.label()}) under {final} ...")
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=base))
    try:
        generate(work / "sysroot", shape, snapshot=snapshot)
        (work / "shape.txt").write_text(f"{asdict(shape)}\n")
        (work / "VERSION").write_text(want)
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final / "sysroot"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scale", help="1x, 10x, 100x, or a percentage of the largest host")
    ap.add_argument("out", nargs="?", help="directory to create (omit with --cached)")
    ap.add_argument("--cached", action="store_true",
                    help=f"generate once under {CACHE_BASE}/<scale> and print the sysroot path")
    ap.add_argument("--force", action="store_true", help="remove OUT first if it exists")
    args = ap.parse_args(argv)
    if args.cached:
        print(cached(args.scale, log=lambda m: print(m, file=sys.stderr)))
        return 0
    if not args.out:
        ap.error("OUT is required without --cached")
    out = Path(args.out)
    if args.force and out.exists():
        shutil.rmtree(out)
    shape = shape_for_scale(args.scale)
    print(f"{scale_name(args.scale)}: {shape.label()}", file=sys.stderr)
    generate(out, shape)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
