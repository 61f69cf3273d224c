"""arm64 segment placement for `kexec_file_load` of an `Image`, as Linux 7.3 does it.

Order of `kexec_add_buffer()` calls (kimage_file_prepare_segments(), kernel/kexec_file.c):

1. IMA measurement list, only with CONFIG_IMA_KEXEC (top-down, page aligned);
2. KHO scratch array, when KHO is on (kho_fill_kimage(), kernel/liveupdate/kexec_handover.c):
   16 bytes per `kho_scratch[]` entry, top-down, 64 KiB aligned;
3. image_load() (arch/arm64/kernel/kexec_image.c): the kernel bottom-up, 2 MiB aligned,
   memsz image_size + text_offset; then load_other_segments()
   (arch/arm64/kernel/machine_kexec_file.c): the initrd bottom-up in
   [kernel end, round_down(kernel, 1G) + 32G], the DTB top-down, 2 MiB aligned, above the
   kernel. When the initrd or the DTB fits nowhere, the kernel segment is dropped and placed
   again above its previous position; when the kernel itself fits nowhere, the load fails.
   Finally the kernel segment's mem += text_offset, memsz -= text_offset.

There is no purgatory on arm64. The DTB is the running kernel's flattened device tree
(`/sys/firmware/fdt`) with `/chosen` rewritten by of_kexec_alloc_and_setup_fdt()
(drivers/of/kexec.c) and packed by fdt_pack(): its size is computed by
`khotui.fdt.kexec_dtb.kexec_dtb_size()` exactly as libfdt changes `totalsize`, and comes in as
`Arm64PlanInput.dtb` (or `dtb_error`, when the kernel could not build it).

Where the walk goes: KHO on → only the scratch regions, in array order (kho_locate_mem_hole()).
KHO off → arm64 keeps memblock (ARCH_KEEP_MEMBLOCK), so the kernel first tries the default CMA
area (page allocator: not predictable), then walks the *free memblock ranges*
(kexec_walk_memblock(), kernel/kexec_file.c), not /proc/iomem. Those are exact from
/sys/kernel/debug/memblock/{memory,reserved}; /proc/iomem's `reserved` children are only a
boot-time snapshot of memblock.reserved (the freed initrd stays listed, for one), so a plan
from iomem is an approximation and says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from khotui.placement.core import (
    PAGE_SIZE,
    ULONG_MAX,
    KexecBuf,
    Placer,
    Plan,
    Region,
    RegionTried,
    Retry,
    Segment,
    align_up,
)
from khotui.types import DtbSize, ScratchRegion

SZ_64K = 64 << 10
SZ_2M = 2 << 20                      # MIN_KIMG_ALIGN, arch/arm64/include/asm/boot.h
SZ_1G = 1 << 30
KHO_SCRATCH_ENTRY = 16               # sizeof(struct kho_scratch): u64 addr, u64 size

# --------------------------------------------------------------------------------------------
# Memory the kernel walks when KHO is off


_MEMBLOCK_LINE = re.compile(
    r"^\s*\d+:\s+0x([0-9a-fA-F]+)\.\.0x([0-9a-fA-F]+)\s+(\S+)\s+(\S+)\s*$")


def _memblock_regions(text: str) -> list[tuple[int, int, str]]:
    regions = []
    for line in text.splitlines():
        match = _MEMBLOCK_LINE.match(line)
        if match:
            regions.append((int(match[1], 16), int(match[2], 16), match[4]))
    return regions


def free_ranges_from_memblock(memory: str, reserved: str, *,
                              movable_node: bool = False) -> list[Region]:
    """Free memblock ranges, ascending: what kexec_walk_memblock() walks with KHO off.

    From /sys/kernel/debug/memblock/memory and .../reserved (memblock_debug_show(),
    mm/memblock.c: `   N: 0xSTART..0xEND NID FLAGS`, END inclusive, NID `x` when none, FLAGS
    `NONE` or flagname[] joined by `|`). Mirrors for_each_free_mem_range(NUMA_NO_NODE,
    MEMBLOCK_NONE) and should_skip_region(): NOMAP and DRV_MNG memory is skipped, and HOTPLUG
    memory too when `movable_node` is on the command line (movable_node_is_enabled(), only with
    CONFIG_MEMORY_HOTPLUG: the caller decides); reserved ranges are cut out. Used by x86_64
    kernels built with CONFIG_ARCH_KEEP_MEMBLOCK as well.
    """
    taken = sorted((start, end) for start, end, _ in _memblock_regions(reserved))
    skip = {"NOMAP", "DRV_MNG"} | ({"HOTPLUG"} if movable_node else set())
    free: list[Region] = []
    for start, end, flags in _memblock_regions(memory):
        if skip & set(flags.split("|")):
            continue
        cursor = start
        for r_start, r_end in taken:
            if r_end < cursor or r_start > end:
                continue
            if r_start > cursor:
                free.append(Region(cursor, r_start - 1, "memblock free"))
            cursor = max(cursor, r_end + 1)
        if cursor <= end:
            free.append(Region(cursor, end, "memblock free"))
    return free


def free_ranges_in_ram(ram: list[tuple[int, int]],
                       reserved: list[tuple[int, int]]) -> list[Region]:
    """An approximation of the free memblock ranges: the top-level `System RAM` ranges of
    /proc/iomem minus their children, all `[start, end]`, ascending.

    On arm64 the children (`Kernel code`, `Kernel data`, `reserved`) are memblock.reserved as
    reserve_memblock_reserved_regions() saw it at boot (arch/arm64/kernel/setup.c); memory
    freed since (the boot initrd) still shows as reserved. The plan layer passes them from the
    parsed khotui.host.iomem.Iomem.
    """
    children = sorted(reserved)
    free: list[Region] = []
    for start, end in sorted(ram):
        cursor = start
        for c_start, c_end in children:
            if c_end < cursor or c_start > end:
                continue
            if c_start > cursor:
                free.append(Region(cursor, c_start - 1, "System RAM (iomem)"))
            cursor = max(cursor, c_end + 1)
        if cursor <= end:
            free.append(Region(cursor, end, "System RAM (iomem)"))
    return free


# --------------------------------------------------------------------------------------------
# The plan


@dataclass
class Arm64PlanInput:
    """Everything plan_arm64() needs, as plain data (the plan layer fills it).

    kernel_size: the Image file's size (the kernel segment's bufsz);
    image_size, text_offset: from the Image header (khotui.image.arm64);
    image_loadable, image_why_not, image_fix: whether image_probe()/image_load() take the file
    (False: the plan fails with EINVAL; None: it may be refused, the plan is not exact);
    initrd_size: None without an initrd (or with KEXEC_FILE_NO_INITRAMFS);
    cmdline: the command line without its trailing NUL; None when none is passed;
    dtb: the DTB segment's size (khotui.fdt.kexec_dtb.kexec_dtb_size() of /sys/firmware/fdt),
    or dtb_error: why of_kexec_alloc_and_setup_fdt() would fail;
    kho: KHO is on (`kho/` in debugfs); scratch: the `kho_scratch[]` entries, in
    scratch_phys/scratch_len order;
    free_ranges: with KHO off, the free memblock ranges ascending (free_ranges_from_memblock(),
    or free_ranges_in_ram() as an approximation, then set free_ranges_exact False);
    cma: with KHO off, a default CMA area exists (CmaTotal > 0) and KEXEC_FILE_NO_CMA is not
    passed: the kernel tries it first and the page allocator picks the address;
    ima_kexec: CONFIG_IMA_KEXEC, with ima_size the measurement list segment's memsz when known;
    rng_initialized: the kernel's RNG is ready ("random: crng init done"), so /chosen gets
    kaslr-seed and rng-seed;
    page_size: the running kernel's PAGE_SIZE, by which kexec_add_buffer() rounds every memsz
    (the plan layer says where it came from, or assumes 4K and says so).
    """

    kernel_size: int
    image_size: int
    text_offset: int
    dtb: DtbSize | None = None
    dtb_error: str | None = None
    initrd_size: int | None = None
    cmdline: bytes | None = None
    kho: bool = True
    scratch: list[ScratchRegion] = field(default_factory=list)
    free_ranges: list[Region] = field(default_factory=list)
    free_ranges_exact: bool = True
    cma: bool = False
    cma_why: str | None = None        # "exists: <evidence>" or "may exist: <why unknown>"
    ima_kexec: bool = False
    ima_size: int | None = None
    rng_initialized: bool = True
    rng_source: str | None = None     # where rng_initialized was read; None: assumed
    image_loadable: bool | None = True
    image_why_not: str | None = None
    image_fix: str | None = None
    page_size: int = PAGE_SIZE        # the running kernel's (CONFIG_ARM64_{4K,16K,64K}_PAGES)
    page_size_guess: str | None = None  # set when page_size was assumed: what and why


def scratch_regions(scratch: list[ScratchRegion]) -> list[Region]:
    """`kho_scratch[]` as the regions kho_walk_scratch() offers: [addr, addr + size - 1],
    named as on x86_64 (ScratchRegion.name)."""
    return [Region(r.addr, r.addr + r.size - 1, r.name) for r in scratch]


def _why_not(placer: Placer, region: Region, kbuf: KexecBuf) -> str:
    # the reasons locate_mem_hole_callback(), kernel/kexec_file.c, returns 0 for a region
    memsz = align_up(kbuf.memsz, placer.page_size)
    if region.size < memsz:
        return f"too small: {region.size:#x} bytes < memsz {memsz:#x}"
    if region.end < kbuf.buf_min:
        return f"below buf_min {kbuf.buf_min:#x}"
    if region.start > kbuf.buf_max:
        return f"above buf_max {kbuf.buf_max:#x}"
    placed = ", ".join(s.name for s in placer.segments if s.mem is not None
                       and s.mem <= region.end and s.mem + s.memsz - 1 >= region.start)
    where = f" ({placed} already there)" if placed else ""
    align = max(kbuf.buf_align, placer.page_size)
    return (f"no free {align:#x}-aligned hole of {memsz:#x} bytes within "
            f"[{max(region.start, kbuf.buf_min):#x}, {min(region.end, kbuf.buf_max):#x}]{where}")


def _tried(placer: Placer, kbuf: KexecBuf) -> list[RegionTried]:
    return [RegionTried(region.name, region.start, region.size,
                        reason=_why_not(placer, region, kbuf))
            for region in placer._walk_order(kbuf.top_down)]


def plan_arm64(inp: Arm64PlanInput) -> Plan:
    """Mirror kimage_file_prepare_segments() + image_load() for an arm64 Image (normal load)."""
    assumptions: list[str] = []
    exact = True
    if inp.page_size_guess is not None:
        exact = False
        assumptions.append(inp.page_size_guess)
    if inp.kho:
        regions = scratch_regions(inp.scratch)
    else:
        regions = list(inp.free_ranges)
        if not inp.free_ranges_exact:
            exact = False
            assumptions.append("KHO off: arm64 walks the free memblock ranges "
                               "(kexec_walk_memblock()); they were approximated from "
                               "/proc/iomem, whose reserved ranges are a boot-time snapshot. "
                               "Read /sys/kernel/debug/memblock/{memory,reserved} for an exact "
                               "plan")
        if inp.cma:
            exact = False
            assumptions.append(f"KHO off and the default CMA area {inp.cma_why or 'exists'}: "
                               "every segment is first allocated from CMA by the page allocator "
                               "(kexec_alloc_contig()), which no preview can know; pass "
                               "KEXEC_FILE_NO_CMA for the walk shown here")
    placer = Placer(regions=regions, kho=inp.kho, page_size=inp.page_size)
    plan = Plan(arch="arm64", segments=placer.segments, fits=False, exact=exact,
                page_size=inp.page_size,
                assumptions=assumptions, dtb=inp.dtb,
                cmdline_len=0 if inp.cmdline is None else len(inp.cmdline) + 1,
                walk="kho-scratch" if inp.kho else ("cma" if inp.cma else "memblock"))
    dtb_error = inp.dtb_error
    if inp.dtb is not None:
        assumptions.extend(inp.dtb.assumptions)
        plan.notes.extend(inp.dtb.notes)
    elif dtb_error is None:
        dtb_error = "the DTB segment's size was not computed"
    if inp.rng_initialized and inp.rng_source:
        plan.notes.append(f"the RNG is initialised ({inp.rng_source}): /chosen gets kaslr-seed "
                          "and rng-seed")
    elif inp.rng_initialized:
        assumptions.append("the RNG is initialised, so /chosen gets kaslr-seed and rng-seed "
                           "(assumed: no kernel log with \"random: crng init done\" was readable; "
                           "run as root on the host, or give a snapshot with its dmesg)")

    def fail(kbuf: KexecBuf, errno: str, message: str) -> Plan:
        plan.regions_tried = _tried(placer, kbuf)
        if placer.failed is None:
            placer.add(kbuf)
        plan.failed_segment = None if placer.failed is None else placer.failed.name
        plan.errno = errno
        plan.message = message
        if inp.kho:
            plan.fix = ("make the scratch regions larger with kho_scratch= (or kho_scratch=N%) "
                        "on the running kernel's command line and reboot, or load a smaller "
                        "kernel/initrd")
        else:
            plan.fix = "free memory, or load a smaller kernel/initrd"
        return plan

    # [IMA] then [KHO scratch array]: kimage_file_prepare_segments(), kernel/kexec_file.c
    if inp.ima_kexec:
        # mirrors ima_add_kexec_buffer(), security/integrity/ima/ima_kexec.c: top-down, page
        # aligned, memsz ALIGN(list + 24 + staged list + 24 + extra, PAGE_SIZE)
        if inp.ima_size is None:
            exact = plan.exact = False
            assumptions.append("CONFIG_IMA_KEXEC: the IMA measurement list size is not known; "
                               "the segment is sized for an empty list (one page) — a long "
                               "list makes it larger and moves the segments after it")
        ima = KexecBuf("ima", bufsz=0, memsz=inp.ima_size or align_up(48 + inp.page_size // 2,
                                                                      inp.page_size))
        if placer.fits(ima) is None:
            return fail(ima, "EADDRNOTAVAIL", "the IMA measurement list fits in no region")
        placer.add(ima)
    if inp.kho:
        # mirrors kho_fill_kimage(), kernel/liveupdate/kexec_handover.c
        size = KHO_SCRATCH_ENTRY * len(inp.scratch)
        array = KexecBuf("kho-scratch", bufsz=size, memsz=size, buf_align=SZ_64K)
        if placer.fits(array) is None:
            return fail(array, "EADDRNOTAVAIL", "the KHO scratch array fits in no scratch region")
        placer.add(array)

    if inp.image_loadable is not True:
        # image_probe() / image_load() refuse the file after IMA and KHO were placed
        if inp.image_loadable is False:
            plan.errno = "EINVAL"
            plan.message = inp.image_why_not
            plan.fix = inp.image_fix
            return plan
        plan.exact = False
        assumptions.append(f"the Image may be refused (EINVAL): {inp.image_why_not}")

    if dtb_error is not None:
        # load_other_segments() fails at every kernel position, so image_load() walks the
        # kernel through every hole and ends with EADDRNOTAVAIL
        plan.failed_segment = "dtb"
        plan.errno = "EADDRNOTAVAIL"
        plan.message = (f"Preparing for new dtb failed: {dtb_error}; image_load() then tries "
                        "every kernel position and fails with \"Could not find any suitable "
                        "kernel location!\"")
        return plan

    # mirrors image_load(), arch/arm64/kernel/kexec_image.c (kexec_add_buffer() rounds memsz
    # up to the running kernel's PAGE_SIZE)
    kernel = KexecBuf("kernel", bufsz=inp.kernel_size,
                      memsz=align_up(inp.image_size + inp.text_offset, inp.page_size),
                      buf_align=SZ_2M, buf_min=0, buf_max=ULONG_MAX, top_down=False)
    while True:
        if placer.fits(kernel) is None:
            if plan.retries:
                last = plan.retries[-1].failed
                why = (f"image_load(): \"Could not find any suitable kernel location!\": the "
                       f"kernel fit at {len(plan.retries)} place(s), but each time the {last} "
                       "fit nowhere above it, and no higher place is left for the kernel")
            else:
                kind = "scratch region" if inp.kho else "free memory range"
                why = (f"the kernel (memsz {align_up(kernel.memsz, inp.page_size):#x}, "
                       f"2 MiB aligned) fits in no {kind}")
            return fail(kernel, "EADDRNOTAVAIL", why)
        kernel_segment = placer.add(kernel)
        assert kernel_segment.mem is not None     # placer.fits() found it a hole
        failed = _load_other_segments(placer, kernel_segment, inp, plan)
        if failed is None:
            break
        # erase the kernel segment and try the next available hole
        del placer.segments[len(placer.segments) - 1:]
        plan.retries.append(Retry(kernel_segment.mem, failed))
        kernel.buf_min = kernel_segment.mem + kernel_segment.memsz

    kernel_segment.mem += inp.text_offset
    kernel_segment.memsz -= inp.text_offset
    plan.fits = True
    plan.regions_tried = []
    return plan


def _load_other_segments(placer: Placer, kernel: Segment, inp: Arm64PlanInput,
                         plan: Plan) -> str | None:
    """Mirror load_other_segments(), arch/arm64/kernel/machine_kexec_file.c.

    Returns None when the initrd and the DTB are placed, else the name of the segment that fit
    nowhere (after undoing this call's segments, as the kernel resets nr_segments).
    """
    orig_segments = len(placer.segments)
    assert kernel.mem is not None
    buf_min = kernel.mem + kernel.memsz                     # not below the kernel

    def undo(name: str, kbuf: KexecBuf) -> str:
        plan.regions_tried = _tried(placer, kbuf)
        del placer.segments[orig_segments:]
        return name

    if inp.initrd_size is not None:
        # within a 1 GiB-aligned window of up to 32 GiB
        initrd = KexecBuf("initrd", bufsz=inp.initrd_size, memsz=inp.initrd_size,
                          buf_align=0, buf_min=buf_min,
                          buf_max=(kernel.mem // SZ_1G) * SZ_1G + 32 * SZ_1G, top_down=False)
        if placer.fits(initrd) is None:
            return undo("initrd", initrd)
        placer.add(initrd)

    assert plan.dtb is not None               # plan_arm64() stops earlier without one
    dtb_len = plan.dtb.totalsize
    # "not across 2MB boundary"
    dtb = KexecBuf("dtb", bufsz=dtb_len, memsz=dtb_len, buf_align=SZ_2M, buf_min=buf_min,
                   buf_max=ULONG_MAX, top_down=True)
    if placer.fits(dtb) is None:
        return undo("dtb", dtb)
    placer.add(dtb)
    return None
