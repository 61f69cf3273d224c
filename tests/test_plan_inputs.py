"""The placement inputs read from the running kernel, end to end through `plan_load()`:
the page size (arm64 16K/64K), the EFI descriptor size (x86_64 boot_params), and the KHO-off
walk (memblock, movable_node, the default CMA area alone).

Each test copies a real capture and changes only what it is about; the expectation is the
capture's own `load/kernel.log` or the kernel's rule stated beside the assertion.
"""

from __future__ import annotations

import gzip
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from khotui.host.kernellog import parse_kernel_log
from khotui.host.snapshot import write_snapshot
from khotui.host.sysroot import Sysroot
from khotui.plan.dryrun import PlanRequest, PlanResult, plan_load
from tests.conftest import CAPTURES, VM
from tests.fixtures.trees import copy_tree

BZIMAGE = VM / "bzImage-kho-7.3.4"
ARM64_IMAGE = VM / "arm64" / "Image-kho-7.3.4-arm64.gz"


def align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


def need(name: str) -> Path:
    cap = CAPTURES / name
    if not (cap / "load").is_dir():
        pytest.skip(f"capture {name} is missing")
    return cap


def logged(cap: Path):
    load = parse_kernel_log((cap / "load/kernel.log").read_text())
    assert load is not None
    return load


def copy_root(cap: Path, tmp: Path) -> Path:
    return copy_tree(cap / "sysroot", tmp / "root", writable=True)


def edit_config(root: Path, **values: str | None) -> None:
    """Set (or, with None, unset) CONFIG_<name> in proc/config.gz."""
    text = gzip.decompress((root / "proc/config.gz").read_bytes()).decode()
    for name, value in values.items():
        text = re.sub(rf"^(# )?CONFIG_{name}[= ].*$", "", text, flags=re.M)
        text += f"\nCONFIG_{name}={value}\n" if value is not None else ""
    (root / "proc/config.gz").write_bytes(gzip.compress(text.encode()))


def edit_meminfo(root: Path, key: str, kb: int | None) -> None:
    path = root / "proc/meminfo"
    text = re.sub(rf"^{key}:.*\n", "", path.read_text(), flags=re.M)
    if kb is not None:
        text += f"{key}:{kb:>16} kB\n"
    path.write_text(text)


def initrd_for(cap: Path, tmp: Path) -> Path | None:
    m = re.search(r"^initrd: (\d+) bytes", (cap / "scenario.txt").read_text(), re.M)
    if not m:
        return None
    out = tmp / "initrd"
    subprocess.run([sys.executable, str(CAPTURES / "make-initrd"), m[1], str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def arm64_image(tmp_path_factory) -> Path:
    if not ARM64_IMAGE.is_file():
        pytest.skip(f"{ARM64_IMAGE} is missing")
    out = tmp_path_factory.mktemp("arm64") / "Image"
    out.write_bytes(gzip.decompress(ARM64_IMAGE.read_bytes()))
    return out


def plan(cap: Path, root: Path, kernel: Path, tmp: Path, *, cmdline: str | None = None,
         no_cma: bool = False) -> PlanResult:
    initrd = initrd_for(cap, tmp)
    return plan_load(root, PlanRequest(
        kernel=str(kernel), initrd=None if initrd is None else str(initrd),
        cmdline=cmdline if cmdline is not None else (cap / "load/cmdline").read_text(),
        no_cma=no_cma))


def guesses(result: PlanResult, word: str) -> list[str]:
    return [a for a in result.assumptions if word in a]


def said(result: PlanResult, word: str) -> list[str]:
    """What the plan says, guesses or notes (a reason for no preview is a note: no plan, not
    exact either way)."""
    return [a for a in result.assumptions + result.notes if word in a]


# --- 4. the page size ----------------------------------------------------------------------


def set_arm64_pages(root: Path, size: str) -> None:
    pages: dict[str, str | None] = {f"ARM64_{k}_PAGES": None for k in ("4K", "16K", "64K")}
    pages[f"ARM64_{size}_PAGES"] = "y"
    edit_config(root, **pages)


def test_64k_arm64_kernel_rounds_every_memsz_to_64k(arm64_image, tmp_path):
    cap = need("two-nodes-arm64")
    root = copy_root(cap, tmp_path)
    set_arm64_pages(root, "64K")
    result = plan(cap, root, arm64_image, tmp_path)
    assert result.plan is not None and result.plan.fits is True
    assert result.plan.page_size == 64 << 10 and not guesses(result, "page size")
    log = logged(cap)
    for seg, want in zip(result.plan.segments, log.segments, strict=True):
        # kexec_add_buffer(): memsz = ALIGN(memsz, PAGE_SIZE); the kernel segment was rounded
        # with its text_offset, which image_load() takes off again (0 in this Image)
        assert seg.bufsz == want.bufsz, seg.name
        assert seg.memsz == align(want.memsz, 64 << 10), seg.name
        assert seg.mem == want.mem, seg.name       # this layout has room: same addresses
    by_name = {s.name: s for s in result.plan.segments}
    assert by_name["kho-scratch"].memsz == 0x10000      # 4 entries of 16 bytes, one 64K page
    assert by_name["dtb"].memsz == 0x10000
    assert by_name["initrd"].memsz == align(by_name["initrd"].bufsz, 64 << 10)
    assert result.as_dict()["page_size"] == 64 << 10        # `plan --json` says so


def test_16k_and_4k_from_the_config(arm64_image, tmp_path):
    cap = need("two-nodes-arm64")
    root = copy_root(cap, tmp_path)
    set_arm64_pages(root, "16K")
    result = plan(cap, root, arm64_image, tmp_path)
    assert result.plan is not None and result.plan.page_size == 16 << 10
    assert result.plan.segment("dtb").memsz == 0x4000       # 0x2033 bytes in one 16K page
    plain = plan(cap, cap / "sysroot", arm64_image, tmp_path)
    assert plain.plan is not None and plain.plan.page_size == 4096
    assert [s.memsz for s in plain.plan.segments] == [s.memsz for s in logged(cap).segments]


def test_64k_nothing_fits_still_fails_with_64k_segments(arm64_image, tmp_path):
    cap = need("nothing-fits-arm64")
    root = copy_root(cap, tmp_path)
    set_arm64_pages(root, "64K")
    result = plan(cap, root, arm64_image, tmp_path)
    assert result.plan is not None
    assert (result.plan.fits, result.plan.errno) == (False, "EADDRNOTAVAIL")
    assert (cap / "load/errno").read_text().strip() == "99"
    assert result.plan.segment("kho-scratch").memsz == 0x10000
    assert result.plan.failed_segment == "kernel"


def test_page_size_without_config_from_hugepagesize_else_assumed(arm64_image, tmp_path):
    cap = need("two-nodes-arm64")
    root = copy_root(cap, tmp_path)
    (root / "proc/config.gz").unlink()
    edit_meminfo(root, "Hugepagesize", 524288)      # the PMD size of 64K pages
    result = plan(cap, root, arm64_image, tmp_path)
    assert result.plan is not None and result.plan.page_size == 64 << 10
    assert not guesses(result, "page size")
    edit_meminfo(root, "Hugepagesize", None)
    block = root / "sys/devices/system/memory/block_size_bytes"
    block.write_text("20000000\n")                  # 512 MiB sections: 64K pages only
    result = plan(cap, root, arm64_image, tmp_path)
    assert result.plan is not None and result.plan.page_size == 64 << 10
    block.write_text("8000000\n")                   # 128 MiB: 4K or 16K, no answer
    result = plan(cap, root, arm64_image, tmp_path)
    assert result.plan is not None and result.plan.page_size == 4096
    [guess] = guesses(result, "page size")
    assert "4 KiB assumed" in guess and "config" in guess
    assert not result.plan.exact and guess in result.plan.assumptions


# --- 5. the EFI descriptor size -------------------------------------------------------------


def write_boot_params(root: Path, desc_size: int, signature: bytes = b"EL64") -> None:
    data = bytearray(4096)
    # struct boot_params.efi_info at 0x1c0 (arch/x86/include/uapi/asm/bootparam.h)
    data[0x1C0:0x1C4] = signature
    struct.pack_into("<I", data, 0x1C8, desc_size)
    where = root / "sys/kernel/boot_params"
    where.mkdir(parents=True, exist_ok=True)
    (where / "data").write_bytes(bytes(data))
    (where / "version").write_text("0x020f\n")


def boot_params_bufsz(result: PlanResult) -> int:
    assert result.plan is not None
    seg = result.plan.segment("boot-params")
    assert seg is not None
    return seg.bufsz


def test_efi_descriptor_size_from_boot_params(tmp_path):
    cap = need("efi-two-nodes")
    if not BZIMAGE.is_file():
        pytest.skip(f"{BZIMAGE} is missing")
    assert not (cap / "sysroot/sys/kernel/boot_params").exists()   # the capture lacks it
    entries = len(list((cap / "sysroot/sys/firmware/efi/runtime-map").iterdir()))
    want = logged(cap).loaded["boot-params"].bufsz
    assert (entries, want) == (5, 0x1270)

    unread = plan(cap, cap / "sysroot", BZIMAGE, tmp_path)
    assert boot_params_bufsz(unread) == want                   # 48 assumed, and said
    [guess] = guesses(unread, "EFI descriptor size")
    assert "boot_params" in guess

    root = copy_root(cap, tmp_path)
    write_boot_params(root, 48)
    exact = plan(cap, root, BZIMAGE, tmp_path)
    assert boot_params_bufsz(exact) == want and not guesses(exact, "EFI descriptor")
    assert [(s.mem, s.memsz) for s in exact.plan.segments] == \
        [(s.mem, s.memsz) for s in logged(cap).segments]

    write_boot_params(root, 56)
    wider = plan(cap, root, BZIMAGE, tmp_path)
    # bzImage64_load(): bufsz = ... + ALIGN(nr_map * desc_size, 16) + ...
    assert boot_params_bufsz(wider) == want - align(5 * 48, 16) + align(5 * 56, 16) == 0x12A0

    write_boot_params(root, 56, signature=b"\0\0\0\0")         # not an EFI boot record
    assert guesses(plan(cap, root, BZIMAGE, tmp_path), "EFI descriptor size")


def test_snapshot_keeps_boot_params_and_memblock(tmp_path):
    cap = need("efi-two-nodes")
    if not BZIMAGE.is_file():
        pytest.skip(f"{BZIMAGE} is missing")
    root = copy_root(cap, tmp_path)
    write_boot_params(root, 56)
    memblock = root / "sys/kernel/debug/memblock"
    memblock.mkdir(parents=True)
    (memblock / "memory").write_text("   0: 0x0000000000001000..0x000000000009efff    0 NONE\n")
    (memblock / "reserved").write_text("   0: 0x0000000000001000..0x0000000000001fff    0 NONE\n")
    (root / "sys/kernel/mm/cma/hugetlb0").mkdir(parents=True)
    out = tmp_path / "snap"
    write_snapshot(Sysroot(root), out)
    for rel in ("sys/kernel/boot_params/data", "sys/kernel/boot_params/version",
                "sys/kernel/debug/memblock/memory", "sys/kernel/debug/memblock/reserved"):
        assert (out / rel).read_bytes() == (root / rel).read_bytes(), rel
    assert (out / "sys/kernel/mm/cma/hugetlb0").is_dir()
    assert boot_params_bufsz(plan(cap, out, BZIMAGE, tmp_path)) == 0x12A0


# --- 6. KHO off: System RAM, memblock, the default CMA area --------------------------------


def test_kho_off_walks_system_ram_exactly(tmp_path):
    cap = need("kho-off")
    if not BZIMAGE.is_file():
        pytest.skip(f"{BZIMAGE} is missing")
    result = plan(cap, cap / "sysroot", BZIMAGE, tmp_path)
    assert result.plan is not None and result.plan.fits is True
    assert result.plan.walk == "system-ram"
    assert [(s.mem, s.memsz, s.bufsz) for s in result.plan.segments] == \
        [(s.mem, s.memsz, s.bufsz) for s in logged(cap).segments]
    assert not guesses(result, "CMA") and not guesses(result, "memblock")


def test_cma_from_other_areas_keeps_the_walk_exact(tmp_path):
    cap = need("kho-off")
    if not BZIMAGE.is_file():
        pytest.skip(f"{BZIMAGE} is missing")
    root = copy_root(cap, tmp_path)
    edit_config(root, DMA_CMA="y", CMA_SIZE_MBYTES="0", CMA_SIZE_SEL_MBYTES="y")
    edit_meminfo(root, "CmaTotal", 65536)           # say, hugetlb_cma=64M: not the default area
    result = plan(cap, root, BZIMAGE, tmp_path)
    assert result.plan is not None and result.plan.fits is True
    assert [s.mem for s in result.plan.segments] == [s.mem for s in logged(cap).segments]
    [note] = said(result, "no default CMA area")
    assert "never uses" in note
    # cma= on the command line makes a default area: the page allocator places the segments
    (root / "proc/cmdline").write_text((root / "proc/cmdline").read_text().strip() + " cma=64M\n")
    result = plan(cap, root, BZIMAGE, tmp_path)
    assert result.plan is not None and result.plan.fits is None and result.plan.walk == "cma"
    assert said(result, "cma=64M")
    # ... unless the load passes KEXEC_FILE_NO_CMA
    again = plan(cap, root, BZIMAGE, tmp_path, no_cma=True)
    assert [s.mem for s in again.plan.segments] == [s.mem for s in logged(cap).segments]


def system_ram(root: Path) -> list[tuple[int, int]]:
    out = []
    for line in (root / "proc/iomem").read_text().splitlines():
        span, _, name = line.partition(" : ")
        if not line.startswith(" ") and name.strip() == "System RAM":
            lo, hi = span.split("-")
            out.append((int(lo, 16), int(hi, 16)))
    return out


def memblock_text(ranges: list[tuple[int, int, str]]) -> str:
    # memblock_debug_show(), mm/memblock.c: "%4d: %pa..%pa %4d FLAGS"
    return "".join(f"{i:4d}: 0x{lo:016x}..0x{hi:016x} {0:4d} {flags}\n"
                   for i, (lo, hi, flags) in enumerate(ranges))


def test_x86_keep_memblock_walks_debugfs_memblock(tmp_path):
    cap = need("kho-off")
    if not BZIMAGE.is_file():
        pytest.skip(f"{BZIMAGE} is missing")
    root = copy_root(cap, tmp_path)
    edit_config(root, ARCH_KEEP_MEMBLOCK="y")
    unread = plan(cap, root, BZIMAGE, tmp_path)
    assert unread.plan is not None and unread.plan.fits is None
    assert unread.plan.walk == "memblock" and said(unread, "mount -t debugfs")
    ram = system_ram(root)
    memblock = root / "sys/kernel/debug/memblock"
    memblock.mkdir(parents=True)
    (memblock / "memory").write_text(memblock_text([(lo, hi, "NONE") for lo, hi in ram]))
    (memblock / "reserved").write_text("")
    walked = plan(cap, root, BZIMAGE, tmp_path)
    assert walked.plan is not None and walked.plan.fits is True
    assert walked.plan.walk == "memblock"
    # the same free ranges as System RAM: the same places as the kernel's own walk of it
    assert [s.mem for s in walked.plan.segments] == [s.mem for s in logged(cap).segments]
    # the top of RAM reserved in memblock pushes every segment below it
    top_hi = ram[-1][1]
    (memblock / "reserved").write_text(memblock_text([(top_hi - (64 << 20) + 1, top_hi, "NONE")]))
    lower = plan(cap, root, BZIMAGE, tmp_path)
    assert all(s.mem is not None and s.mem + s.memsz <= top_hi - (64 << 20) + 1
               for s in lower.plan.segments)


ARM64_MEMORY = [(0x40000000, 0x7FFFFFFF, "NONE"), (0x80000000, 0xBFFFFFFF, "HOTPLUG")]
ARM64_RESERVED = [(0x40200000, 0x41BAFFFF, "NONE"), (0xBF000000, 0xBFFFFFFF, "NONE")]


def arm64_kho_off(cap: Path, tmp: Path, cmdline_extra: str) -> Path:
    root = copy_root(cap, tmp)
    # KHO off: no kho/ tree, kho=off on the command line
    kho = root / "sys/kernel/debug/kho"
    for path in sorted(kho.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    kho.rmdir()
    (root / "proc/cmdline").write_text(f"console=ttyAMA0 panic=-1 kho=off {cmdline_extra}\n")
    memblock = root / "sys/kernel/debug/memblock"
    memblock.mkdir(parents=True)
    (memblock / "memory").write_text(memblock_text(ARM64_MEMORY))
    (memblock / "reserved").write_text(memblock_text(ARM64_RESERVED))
    return root


def test_arm64_kho_off_walks_memblock_exactly(arm64_image, tmp_path):
    cap = need("two-nodes-arm64")
    # this kernel has CONFIG_CMA_SIZE_MBYTES=32: a default area; cma=0 removes it
    with_cma = arm64_kho_off(cap, tmp_path / "a", "")
    result = plan(cap, with_cma, arm64_image, tmp_path, cmdline="console=ttyAMA0")
    assert result.plan is not None and result.plan.walk == "cma" and not result.plan.exact
    assert said(result, "CONFIG_CMA_SIZE_SEL_MBYTES")

    root = arm64_kho_off(cap, tmp_path / "b", "cma=0")
    result = plan(cap, root, arm64_image, tmp_path, cmdline="console=ttyAMA0")
    p = result.plan
    assert p is not None and p.fits is True and p.exact and p.walk == "memblock"
    assert not guesses(result, "approximated")
    kernel = p.segment("kernel")
    assert kernel.mem == 0x41C00000            # the lowest free 2 MiB-aligned hole, bottom-up
    assert p.segment("initrd").mem == align(kernel.mem + kernel.memsz, 4096)
    assert p.segment("dtb").mem == 0xBEE00000  # the highest free 2 MiB boundary, top-down


def test_movable_node_skips_hotplug_memory(arm64_image, tmp_path):
    cap = need("two-nodes-arm64")
    root = arm64_kho_off(cap, tmp_path, "cma=0 movable_node")
    result = plan(cap, root, arm64_image, tmp_path, cmdline="console=ttyAMA0")
    p = result.plan
    assert p is not None and p.fits is True and p.exact
    # should_skip_region(): HOTPLUG regions are left out, so the DTB goes below 0x80000000
    assert all(s.mem is not None and s.mem + s.memsz <= 0x80000000 for s in p.segments)
    assert p.segment("dtb").mem == 0x7FE00000


def test_dtb_boot_initrd_reservation_is_matched_by_the_running_page_size():
    """of_kexec_alloc_and_setup_fdt() (drivers/of/kexec.c) removes the boot initrd's
    reserve-map entry of its exact size or `round_up(size, PAGE_SIZE)`: a firmware entry
    rounded to 64K is found only by a 64K kernel."""
    from khotui.fdt.kexec_dtb import kexec_dtb_size
    from tests.test_placement_arm64 import build_fdt, cell
    chosen = {"linux,initrd-start": cell(0x48000000), "linux,initrd-end": cell(0x48001800)}
    fdt = build_fdt({"#address-cells": cell(1), "#size-cells": cell(1)}, chosen,
                    rsv=[(0x48000000, 0x10000)])
    small = kexec_dtb_size(fdt, cmdline=None, initrd=False, kho=False, page_size=4096)
    large = kexec_dtb_size(fdt, cmdline=None, initrd=False, kho=False, page_size=64 << 10)
    assert small.totalsize - large.totalsize == 16     # one struct fdt_reserve_entry


def test_memblock_walk_needs_no_iomem_addresses(arm64_image, tmp_path):
    """A non-root reader sees /proc/iomem as zeros; an arm64 KHO-off plan walks memblock and
    does not need it (the x86 System RAM walk does, and says so)."""
    cap = need("two-nodes-arm64")
    root = arm64_kho_off(cap, tmp_path, "cma=0")
    iomem = root / "proc/iomem"
    iomem.write_text(re.sub(r"[0-9a-f]{8,16}", lambda m: "0" * len(m[0]), iomem.read_text()))
    result = plan(cap, root, arm64_image, tmp_path, cmdline="console=ttyAMA0")
    assert result.plan is not None and result.plan.exact and result.plan.fits is True
    assert not said(result, "no placement preview")
    (root / "sys/kernel/debug/memblock/memory").unlink()
    result = plan(cap, root, arm64_image, tmp_path, cmdline="console=ttyAMA0")
    assert result.plan is None and said(result, "no placement preview")


def test_cma_sysfs_names_the_default_area(tmp_path):
    """/sys/kernel/mm/cma/<name> (CONFIG_CMA_SYSFS): the default area is "reserved"
    (dma_contiguous_reserve_area(), kernel/dma/contiguous.c); hugetlb's are not it."""
    cap = need("kho-off")
    if not BZIMAGE.is_file():
        pytest.skip(f"{BZIMAGE} is missing")
    root = copy_root(cap, tmp_path)
    edit_config(root, DMA_CMA="y", CMA_SIZE_MBYTES="16", CMA_SIZE_SEL_MBYTES="y")
    edit_meminfo(root, "CmaTotal", 16384)
    areas = root / "sys/kernel/mm/cma"
    (areas / "hugetlb0").mkdir(parents=True)
    # the config asks for 16 MiB, but only hugetlb0 exists: the reservation did not happen
    result = plan(cap, root, BZIMAGE, tmp_path)
    assert result.plan is not None and result.plan.fits is True
    assert [s.mem for s in result.plan.segments] == [s.mem for s in logged(cap).segments]
    (areas / "reserved").mkdir()
    result = plan(cap, root, BZIMAGE, tmp_path)
    assert result.plan is not None and result.plan.fits is None and result.plan.walk == "cma"
    assert said(result, "/sys/kernel/mm/cma/reserved")


def test_a_64k_image_on_a_64k_kernel_is_not_doubted(arm64_image, tmp_path):
    """image_load() (arch/arm64/kernel/kexec_image.c) refuses an Image whose page-size flag the
    CPUs do not implement; the running kernel's own granule always is. Found on the real 64K
    capture: the file-only inspection assumed a 4K running kernel and doubted the 64K Image."""
    cap = need("two-nodes-arm64")
    data = bytearray(arm64_image.read_bytes())
    flags = struct.unpack_from("<Q", data, 24)[0]
    struct.pack_into("<Q", data, 24, (flags & ~0b110) | (3 << 1))   # page size flag: 64K
    image64 = tmp_path / "Image-64k"
    image64.write_bytes(bytes(data))
    root = copy_root(cap, tmp_path)
    set_arm64_pages(root, "64K")
    result = plan(cap, root, image64, tmp_path)
    assert result.plan is not None and result.plan.exact and result.plan.fits is True
    assert not guesses(result, "may be refused")
    on_4k = plan(cap, cap / "sysroot", image64, tmp_path)
    assert on_4k.plan is not None and not on_4k.plan.exact
    assert guesses(on_4k, "may be refused")
