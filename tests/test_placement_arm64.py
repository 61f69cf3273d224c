"""arm64 placement against the kernel's own log, then the cases the captures do not cover.

The plan input is built from the capture's sysroot the way khotui will read a host: the KHO
scratch regions from debugfs, the running FDT from /sys/firmware/fdt, the command line that
was passed, the kernel config. The expected placement is parsed from `load/kernel.log`
(KEXEC_FILE_DEBUG `segment[N]` lines), never copied into the test.
"""

from __future__ import annotations

import gzip
import re
import struct
from pathlib import Path

import pytest

from khotui.fdt.kexec_dtb import DtbError, kexec_dtb_size
from khotui.host.iomem import parse_iomem
from khotui.image.arm64 import parse_arm64_image
from khotui.placement.arm64 import (
    Arm64PlanInput,
    free_ranges_from_memblock,
    free_ranges_in_ram,
    plan_arm64,
)
from khotui.placement.core import Region
from khotui.plan.dryrun import arm64_dtb
from khotui.types import ScratchRegion

INITRD_SIZE = 2557440                 # scenario.txt of both arm64 captures
ERRNO = {0: None, 22: "EINVAL", 99: "EADDRNOTAVAIL"}

SEGMENT_LINE = re.compile(r"kexec_file: segment\[(\d+)\]: buf=0x\S+ bufsz=0x([0-9a-f]+) "
                          r"mem=0x([0-9a-f]+) memsz=0x([0-9a-f]+)")
LOADED_LINE = re.compile(r"(kexec_file(?:\(Image\))?): Loaded (kernel|initrd|dtb) at "
                         r"0x([0-9a-f]+) bufsz=0x([0-9a-f]+) memsz=0x([0-9a-f]+)")


def log_segments(log: str) -> list[dict]:
    """The kernel's `segment[N]` lines, in segment order."""
    out = []
    for match in SEGMENT_LINE.finditer(log):
        assert int(match[1]) == len(out)
        out.append({"bufsz": int(match[2], 16), "mem": int(match[3], 16),
                    "memsz": int(match[4], 16)})
    return out


def log_loaded(log: str) -> dict[str, dict]:
    """`Loaded kernel/initrd/dtb at ...` (printed in load order: initrd, dtb, then kernel)."""
    return {m[2]: {"mem": int(m[3], 16), "bufsz": int(m[4], 16), "memsz": int(m[5], 16)}
            for m in LOADED_LINE.finditer(log)}


def hex_lines(path: Path) -> list[int]:
    return [int(word, 16) for word in path.read_text().split()]


def scratch(pairs: list[tuple[int, int]]) -> list[ScratchRegion]:
    """kho_scratch[] entries (phys, size) in array order: lowmem, global, node0, node1..."""
    kinds = ("lowmem", "global")
    return [ScratchRegion(i, kinds[i] if i < 2 else "node", None if i < 2 else i - 2, a, n)
            for i, (a, n) in enumerate(pairs)]


def make_input(fdt: bytes, *, kernel_size: int, image_size: int, text_offset: int,
               initrd_size: int | None = None, cmdline: bytes | None = None, kho: bool = True,
               kexec_handover: bool = True, ima_kexec: bool = False,
               rng_initialized: bool = True, **kwargs) -> Arm64PlanInput:
    """The input the plan layer builds: the DTB size computed from `fdt` first."""
    dtb, dtb_error = arm64_dtb(fdt, cmdline=cmdline, initrd=initrd_size is not None, kho=kho,
                               kexec_handover=kexec_handover, ima_kexec=ima_kexec,
                               rng_initialized=rng_initialized)
    return Arm64PlanInput(kernel_size=kernel_size, image_size=image_size,
                          text_offset=text_offset, dtb=dtb, dtb_error=dtb_error,
                          initrd_size=initrd_size, cmdline=cmdline, kho=kho,
                          ima_kexec=ima_kexec, rng_initialized=rng_initialized, **kwargs)


def config(sysroot: Path) -> set[str]:
    text = gzip.decompress((sysroot / "proc/config.gz").read_bytes()).decode()
    return {line.split("=", 1)[0] for line in text.splitlines() if line.endswith("=y")}


@pytest.fixture(scope="module")
def image():
    from tests.conftest import VM
    packed = VM / "arm64" / "Image-kho-7.3.4-arm64.gz"
    if not packed.is_file():
        pytest.skip(f"{packed} is missing")
    return parse_arm64_image(gzip.decompress(packed.read_bytes()))


def plan_input(capture: Path, image) -> Arm64PlanInput:
    sysroot = capture / "sysroot"
    kho_out = sysroot / "sys/kernel/debug/kho/out"
    options = config(sysroot)
    log = (capture / "load/kernel.log").read_text()
    return make_input(
        (sysroot / "sys/firmware/fdt").read_bytes(),
        kernel_size=image.file_size, image_size=image.image_size,
        text_offset=image.text_offset,
        initrd_size=INITRD_SIZE,
        cmdline=(capture / "load/cmdline").read_bytes(),
        kho=kho_out.is_dir(),
        scratch=scratch(list(zip(hex_lines(kho_out / "scratch_phys"),
                                 hex_lines(kho_out / "scratch_len"), strict=True))),
        kexec_handover="CONFIG_KEXEC_HANDOVER" in options,
        ima_kexec="CONFIG_IMA_KEXEC" in options,
        rng_initialized="random: crng init done" in log,
    )


def capture(shared: Path, name: str) -> Path:
    path = shared / "kho" / name
    if not (path / "sysroot").is_dir():
        pytest.skip(f"capture {name} is missing")
    return path


def test_two_nodes_reproduces_every_segment(shared, image):
    cap = capture(shared, "two-nodes-arm64")
    log = (cap / "load/kernel.log").read_text()
    expected = log_segments(log)
    assert len(expected) == 4
    plan = plan_arm64(plan_input(cap, image))
    assert plan.fits and plan.errno is None and plan.exact
    assert ERRNO[int((cap / "load/errno").read_text())] is None
    assert [s.name for s in plan.segments] == ["kho-scratch", "kernel", "initrd", "dtb"]
    for seg, want in zip(plan.segments, expected, strict=True):
        assert (seg.name, seg.mem, seg.memsz, seg.bufsz) == \
            (seg.name, want["mem"], want["memsz"], want["bufsz"])
    assert all(s.region == "lowmem" for s in plan.segments)
    assert not plan.retries


def test_two_nodes_loaded_lines(shared, image):
    cap = capture(shared, "two-nodes-arm64")
    loaded = log_loaded((cap / "load/kernel.log").read_text())
    plan = plan_arm64(plan_input(cap, image))
    for name in ("kernel", "initrd", "dtb"):
        seg = plan.segment(name)
        assert (seg.mem, seg.bufsz, seg.memsz) == \
            (loaded[name]["mem"], loaded[name]["bufsz"], loaded[name]["memsz"])


def test_dtb_is_what_the_next_kernel_booted_with(shared, image):
    """The next kernel's /sys/firmware/fdt is the DTB segment: same size, same blocks."""
    cap = capture(shared, "two-nodes-arm64")
    booted = (cap / "next-kernel/sysroot/sys/firmware/fdt").read_bytes()
    total, off_struct, _off_strings, off_rsv, _v, _l, _c, size_strings, _size_struct = \
        struct.unpack_from(">9I", booted, 4)
    plan = plan_arm64(plan_input(cap, image))
    assert plan.dtb.totalsize == total == len(booted)
    assert plan.segment("dtb").bufsz == total
    # the new /chosen names were appended to the strings block, never the old ones removed
    boot = (cap / "sysroot/sys/firmware/fdt").read_bytes()
    boot_strings = struct.unpack_from(">I", boot, 32)[0]
    added = [b"linux,kho-fdt", b"linux,kho-scratch", b"linux,booted-from-kexec"]
    assert size_strings == boot_strings + sum(len(name) + 1 for name in added)
    # one reserve-map entry (the new initrd) and the terminator
    assert off_struct - off_rsv == 2 * 16
    assert any("linux,kho-scratch added" in step for step in plan.dtb.steps)


def test_nothing_fits(shared, image):
    cap = capture(shared, "nothing-fits-arm64")
    plan = plan_arm64(plan_input(cap, image))
    assert not plan.fits
    assert plan.errno == ERRNO[int((cap / "load/errno").read_text())] == "EADDRNOTAVAIL"
    assert plan.failed_segment == "kernel"
    assert plan.segment("kernel").mem is None
    # no segment[N] lines: the load failed before the segment dump
    assert log_segments((cap / "load/kernel.log").read_text()) == []
    phys = hex_lines(cap / "sysroot/sys/kernel/debug/kho/out/scratch_phys")
    assert [t.start for t in plan.regions_tried] == phys          # array order
    assert [t.name for t in plan.regions_tried] == ["lowmem", "global", "node0", "node1"]
    assert all("too small" in t.reason for t in plan.regions_tried)
    assert "kernel" in plan.message and "kho_scratch=" in plan.fix
    # the scratch array itself was placed before the kernel failed
    assert plan.segment("kho-scratch").mem is not None
    assert plan.as_dict()["failed_segment"] == "kernel"


def two_nodes_fdt(shared) -> bytes:
    return (capture(shared, "two-nodes-arm64") / "sysroot/sys/firmware/fdt").read_bytes()


def test_kernel_retried_above_until_the_initrd_fits(shared, image):
    """image_load()'s retry loop: the initrd must lie in [kernel end, round_down(kernel, 1G) + 32G].

    scratch[0] at 1 GiB has room for the kernel but not the 60 MiB initrd; scratch[1] at
    34 GiB is beyond the initrd's buf_max for a kernel at 1 GiB. The kernel is dropped and
    placed higher twice, then lands in scratch[1] with the initrd and the DTB above it.
    """
    inp = make_input(two_nodes_fdt(shared), kernel_size=image.file_size, image_size=image.image_size,
                         text_offset=0, initrd_size=60 << 20,
                         cmdline=b"console=ttyAMA0", kho=True,
                         scratch=scratch([(1 << 30, 64 << 20), (34 << 30, 128 << 20)]))
    plan = plan_arm64(inp)
    assert plan.fits
    assert [r.kernel_mem for r in plan.retries] == [0x40000000, 0x41A00000]
    assert {r.failed for r in plan.retries} == {"initrd"}
    kernel, initrd, dtb = (plan.segment(n) for n in ("kernel", "initrd", "dtb"))
    assert kernel.mem == 34 << 30 and kernel.region == "global"
    assert initrd.mem == kernel.mem + kernel.memsz
    assert dtb.mem == ((34 << 30) + (128 << 20) - (2 << 20))  # top-down, 2 MiB aligned
    assert [s.name for s in plan.segments] == ["kho-scratch", "kernel", "initrd", "dtb"]


def test_kernel_retried_until_nothing_is_left(shared, image):
    inp = make_input(two_nodes_fdt(shared), kernel_size=image.file_size, image_size=image.image_size,
                         text_offset=0, initrd_size=60 << 20,
                         cmdline=b"x", kho=True, scratch=scratch([(1 << 30, 64 << 20)]))
    plan = plan_arm64(inp)
    assert not plan.fits and plan.errno == "EADDRNOTAVAIL"
    assert plan.failed_segment == "kernel" and len(plan.retries) == 2
    assert "Could not find any suitable kernel location" in plan.message
    assert [s.name for s in plan.segments] == ["kho-scratch", "kernel"]


def test_text_offset_moves_the_recorded_kernel(shared, image):
    inp = make_input(two_nodes_fdt(shared), kernel_size=image.file_size, image_size=image.image_size,
                         text_offset=0x80000, initrd_size=None,
                         cmdline=None, kho=True, scratch=scratch([(0x80000000, 256 << 20)]))
    plan = plan_arm64(inp)
    kernel = plan.segment("kernel")
    # placed as image_size + text_offset at a 2 MiB boundary, then recorded past text_offset
    assert kernel.mem == 0x80000000 + 0x80000
    assert kernel.memsz == image.image_size + 0x80000 - 0x80000
    assert plan.segment("initrd") is None


def test_unloadable_image_fails_with_einval(shared):
    # a 64-byte Image header with image_size 0: image_load() refuses it after KHO placed its array
    data = struct.pack("<IIQQQQQQ4sI", 0, 0, 0, 0, 0xA, 0, 0, 0, b"ARM\x64", 0)
    refused = parse_arm64_image(data)
    inp = make_input(two_nodes_fdt(shared), kernel_size=refused.file_size or 0,
                     image_size=refused.image_size or 0, text_offset=refused.text_offset or 0,
                     image_loadable=refused.loadable, image_why_not=refused.why_not,
                     image_fix=refused.fix, kho=True,
                     scratch=scratch([(0x80000000, 64 << 20)]))
    plan = plan_arm64(inp)
    assert not plan.fits and plan.errno == "EINVAL"
    assert "image_size is 0" in plan.message and plan.fix
    assert [s.name for s in plan.segments] == ["kho-scratch"]


# ---------------------------------------------------------------------------------------------
# The DTB: of_kexec_alloc_and_setup_fdt() + fdt_pack() size arithmetic


def test_dtb_without_initrd_or_kho(shared):
    fdt = two_nodes_fdt(shared)
    cmdline = b"console=ttyAMA0 panic=-1 kho=on khostage=2"
    with_all = kexec_dtb_size(fdt, cmdline=cmdline, initrd=True, kho=True).totalsize
    assert with_all == 0x2033
    # the boot FDT's 4-byte initrd-start/end are deleted (-16 each) instead of grown to u64
    # (+4 each), and no reserve-map entry is added (-16)
    no_initrd = kexec_dtb_size(fdt, cmdline=cmdline, initrd=False, kho=True).totalsize
    assert no_initrd == with_all - 8 - 16 - 32
    # KHO off: no linux,kho-fdt / linux,kho-scratch: 2 x (12 + 16) bytes, 14 + 18 of strings
    no_kho = kexec_dtb_size(fdt, cmdline=cmdline, initrd=True, kho=False).totalsize
    assert no_kho == with_all - 56 - 32
    # no RNG yet: kaslr-seed only removed (-20) and no rng-seed (-140)
    no_rng = kexec_dtb_size(fdt, cmdline=cmdline, initrd=True, kho=True,
                            rng_initialized=False).totalsize
    assert no_rng == with_all - 20 - 140


def build_fdt(root: dict[str, bytes], chosen: dict[str, bytes] | None,
              rsv: list[tuple[int, int]] = (), extra_strings: bytes = b"") -> bytes:
    """A minimal FDT v17 (header, reserve map, struct, strings), as dtc lays it out."""
    strings = bytearray(extra_strings)

    def nameoff(name: str) -> int:
        key = name.encode() + b"\0"
        at = strings.find(key)
        if at < 0:
            at = len(strings)
            strings.extend(key)
        return at

    def node(name: str, props: dict[str, bytes]) -> bytes:
        out = struct.pack(">I", 1) + name.encode() + b"\0"
        out += bytes(-len(out) % 4)
        for key, value in props.items():
            out += struct.pack(">III", 3, len(value), nameoff(key)) + value
            out += bytes(-len(out) % 4)
        return out

    body = node("", root)
    if chosen is not None:
        body += node("chosen", chosen) + struct.pack(">I", 2)
    body += struct.pack(">II", 2, 9)
    rsv_block = b"".join(struct.pack(">QQ", a, s) for a, s in rsv) + bytes(16)
    off_rsv = 40
    off_struct = off_rsv + len(rsv_block)
    off_strings = off_struct + len(body)
    total = off_strings + len(strings)
    head = struct.pack(">10I", 0xD00DFEED, total, off_struct, off_strings, off_rsv, 17, 16, 0,
                       len(strings), len(body))
    return head + rsv_block + body + bytes(strings)


def cell(value: int) -> bytes:
    return struct.pack(">I", value)


def test_dtb_arithmetic_on_a_small_tree():
    # 1-cell addresses and sizes, a boot initrd with its reserve-map entry, an old IMA buffer
    root = {"#address-cells": cell(1), "#size-cells": cell(1)}
    chosen = {"bootargs": b"old\0", "linux,initrd-start": cell(0x48000000),
              "linux,initrd-end": cell(0x48001800),
              "linux,ima-kexec-buffer": cell(0x50000000) + cell(0x1000)}
    fdt = build_fdt(root, chosen, rsv=[(0x48000000, 0x2000), (0x50000000, 0x1000)],
                    extra_strings=b"foo,rng-seed\0")
    before = len(fdt)
    result = kexec_dtb_size(fdt, cmdline=b"console=ttyAMA0", initrd=True, kho=True)
    expected = before
    expected -= 16                 # boot initrd's entry (rounded up to a page) removed
    expected += 16                 # the new initrd's entry
    expected += 4 + 4              # initrd-start/end grow from one cell to u64
    expected += 2 * (12 + 8)       # linux,kho-fdt / linux,kho-scratch: 1 + 1 cells each
    expected += len("linux,kho-fdt\0") + len("linux,kho-scratch\0")
    expected += 16 - 4             # bootargs "console=ttyAMA0\0" replaces "old\0"
    expected += 12 + 8 + len("kaslr-seed\0")
    expected += 12 + 128           # rng-seed: the name is found as a suffix of foo,rng-seed
    expected += 12 + len("linux,booted-from-kexec\0")
    expected -= 12 + 8 + 16        # the old IMA buffer property and its reservation
    assert result.totalsize == expected
    assert any("#address-cells = 1" in n for n in result.notes)


def test_dtb_without_chosen():
    fdt = build_fdt({"#address-cells": cell(2), "#size-cells": cell(2)}, None)
    result = kexec_dtb_size(fdt, cmdline=None, initrd=False, kho=False)
    # /chosen (16) + kaslr-seed (20 + 11) + rng-seed (140 + 9) + booted-from-kexec (12 + 24)
    assert result.totalsize == len(fdt) + 16 + 31 + 149 + 36


def test_dtb_that_is_not_an_fdt():
    with pytest.raises(DtbError):
        kexec_dtb_size(b"\0" * 64, cmdline=None, initrd=False, kho=False)


# ---------------------------------------------------------------------------------------------
# KHO off: arm64 walks free memblock ranges, not /proc/iomem


MEMORY = """\
   0: 0x0000000040000000..0x000000007fffffff    0 NONE
   1: 0x0000000080000000..0x00000000bfffffff    1 NONE
"""
RESERVED = """\
   0: 0x0000000040200000..0x0000000041baffff    0 NONE
   1: 0x00000000bf000000..0x00000000bfffffff    1 NONE
"""


def test_free_ranges_from_memblock():
    assert free_ranges_from_memblock(MEMORY, RESERVED) == [
        Region(0x40000000, 0x401FFFFF, "memblock free"),
        Region(0x41BB0000, 0x7FFFFFFF, "memblock free"),
        Region(0x80000000, 0xBEFFFFFF, "memblock free"),
    ]


def test_kho_off_bottom_up_kernel_top_down_dtb(shared, image):
    inp = make_input(two_nodes_fdt(shared), kernel_size=image.file_size, image_size=image.image_size,
                         text_offset=0, initrd_size=INITRD_SIZE,
                         cmdline=b"console=ttyAMA0", kho=False,
                         free_ranges=free_ranges_from_memblock(MEMORY, RESERVED))
    plan = plan_arm64(inp)
    assert plan.fits and plan.exact
    assert plan.segment("kho-scratch") is None
    assert plan.segment("kernel").mem == 0x41C00000          # lowest 2 MiB hole that fits
    assert plan.segment("initrd").mem == 0x41C00000 + image.image_size
    assert plan.segment("dtb").mem == 0xBEE00000             # highest free 2 MiB boundary


def test_kho_off_from_iomem_with_cma_is_not_exact(shared, image):
    sysroot = capture(shared, "two-nodes-arm64") / "sysroot"
    iomem = parse_iomem((sysroot / "proc/iomem").read_text())
    ram = [r for r in iomem.resources if r.name == "System RAM"]
    ranges = free_ranges_in_ram([(r.start, r.end) for r in ram],
                                [(c.start, c.end) for r in ram for c in r.children])
    assert ranges[0] == Region(0x40000000, 0x401FFFFF, "System RAM (iomem)")
    cma = "CmaTotal:          32768 kB" in (sysroot / "proc/meminfo").read_text()
    inp = make_input(two_nodes_fdt(shared), kernel_size=image.file_size, image_size=image.image_size,
                         text_offset=0, initrd_size=None,
                         cmdline=None, kho=False, free_ranges=ranges,
                         free_ranges_exact=False, cma=cma)
    plan = plan_arm64(inp)
    assert plan.fits and not plan.exact
    text = " ".join(plan.assumptions)
    assert "memblock" in text and "CMA" in text
