"""Where Linux 7.3 puts each segment of an x86_64 bzImage `kexec_file_load`, before the call.

The `kexec_add_buffer()` calls, in the kernel's order (kimage_file_prepare_segments(),
kernel/kexec_file.c, then bzImage64_load(), arch/x86/kernel/kexec-bzimage64.c):

    ima          CONFIG_IMA_KEXEC only          ima_add_kexec_buffer(), security/integrity/ima/ima_kexec.c
    kho-scratch  KHO on only                    kho_fill_kimage(), kernel/liveupdate/kexec_handover.c
    purgatory    the running kernel's           kexec_load_purgatory() → kexec_purgatory_setup_kbuf()
    boot-params  boot_params+cmdline+setup_data bzImage64_load()
    kernel       protected-mode part            bzImage64_load()
    initrd       unless KEXEC_FILE_NO_INITRAMFS bzImage64_load()

`core.Placer` places them: scratch regions in `kho_scratch[]` order with KHO on; otherwise the
default CMA area first (unknowable), then System RAM highest first (or the memblock free ranges
on kernels built with CONFIG_ARCH_KEEP_MEMBLOCK, e.g. CONFIG_INTEL_TDX_HOST=y).
Plain data in (`X86PlanInput`, its kernel an `X86Kernel` the plan layer fills from
khotui.image.inspect), a `Plan` out; nothing here reads the host or the image file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from khotui.cmdline import MAX_ELFCOREHDR_STR_LEN, accepted_length, length_text
from khotui.placement.core import (
    PAGE_SIZE,
    ULONG_MAX,
    KexecBuf,
    Placer,
    Plan,
    Region,
    RegionTried,
    Segment,
    align_up,
)
from khotui.types import DEFAULT_PURGATORY, Purgatory, ScratchRegion
from khotui.units import size as human

ARCH = "x86_64"

# arch/x86/kernel/kexec-bzimage64.c
MIN_PURGATORY_ADDR = 0x3000
MIN_BOOTPARAM_ADDR = 0x3000
MIN_KERNEL_LOAD_ADDR = 0x100000
MIN_INITRD_LOAD_ADDR = 0x1000000
SIZEOF_BOOT_PARAMS = 4096
SIZEOF_SETUP_DATA = 16
SIZEOF_EFI_SETUP_DATA = 96       # arch/x86/include/asm/setup_data.h: 4 u64 + reserved[8]
RNG_SEED_LENGTH = 32
SIZEOF_IMA_SETUP_DATA = 16       # addr, size
SIZEOF_KHO_DATA = 32             # fdt_addr, fdt_size, scratch_addr, scratch_size
EFI_MEMDESC_SIZE = 48            # what OVMF and most x86_64 firmware report; assumed when unread
IMA_KEXEC_HDR = 24               # struct ima_kexec_hdr, counted once per list (ima_queue.c)
KHO_SCRATCH_ENTRY = 16           # struct kho_scratch { phys_addr_t addr, size; }
KHO_SCRATCH_ALIGN = 64 << 10     # SZ_64K in kho_fill_kimage()


@dataclass(frozen=True)
class X86Setup:
    """The setup-header fields bzImage64_load() uses (arch/x86/include/uapi/asm/bootparam.h)."""

    kern16_size: int          # (setup_sects + 1) * 512: the real-mode part, not loaded
    init_size: int
    kernel_alignment: int
    pref_address: int
    cmdline_size: int


@dataclass(frozen=True)
class X86Kernel:
    """The kernel file as the x86_64 loader sees it: its size, whether bzImage64_probe() takes
    it (`errno`/`why_not` set when the running x86_64 kernel refuses it) and its setup header
    (None when it is not a bzImage)."""

    name: str
    size: int
    format: str
    setup: X86Setup | None
    errno: str | None = None
    why_not: str | None = None


@dataclass
class X86PlanInput:
    """Everything the x86_64 placement depends on, as plain data (the plan layer fills it)."""

    kho_enabled: bool
    kernel: X86Kernel
    cmdline: bytes                          # without the trailing NUL
    initrd_size: int | None                 # None: KEXEC_FILE_NO_INITRAMFS
    scratch: list[ScratchRegion] = field(default_factory=list)
    system_ram: list[tuple[int, int]] = field(default_factory=list)  # top-level System RAM, [start, end]
    cma_total_kb: int | None = 0            # /proc/meminfo CmaTotal; None: unknown
    no_cma: bool = False                    # KEXEC_FILE_NO_CMA will be passed
    efi_runtime_map_entries: int = 0        # entries under /sys/firmware/efi/runtime-map/
    efi_memdesc_size: int = EFI_MEMDESC_SIZE  # efi.memmap.desc_size
    efi_memdesc_source: str | None = None   # where efi_memdesc_size was read; None: assumed
    efi_memdesc_why: str | None = None      # why it could not be read
    config_kexec_handover: bool = True      # CONFIG_KEXEC_HANDOVER of the running kernel
    config_ima_kexec: bool = False          # CONFIG_IMA_KEXEC
    ima_kexec_extra_kb: int = 0             # CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB
    ima_memsz: int | None = None            # the IMA segment's memsz (khotui.host.ima); None: unknown
    ima_segment: bool = True                # False: the list is over half of RAM, no segment
    config_dma_cma: bool | None = None      # CONFIG_DMA_CMA (the default CMA area kexec uses)
    # whether dma_contiguous_default_area exists (khotui.host.kernelmem.default_cma_area()) and
    # why; None: decided from cma_total_kb and config_dma_cma alone
    default_cma: bool | None = None
    default_cma_why: str | None = None
    config_arch_keep_memblock: bool = False  # CONFIG_ARCH_KEEP_MEMBLOCK: memblock walk, not iomem
    memblock_free: list[tuple[int, int]] | None = None  # free memblock ranges, [start, end]
    memblock_why: str | None = None         # why memblock_free could not be read
    force_dtb: bool = False                 # KEXEC_FILE_FORCE_DTB
    boot_dtb_size: int | None = None        # fdt_totalsize(initial_boot_params), if any
    mem_total_kb: int | None = None         # /proc/meminfo MemTotal, for the half-of-RAM check
    purgatory: Purgatory = DEFAULT_PURGATORY

    @property
    def cmdline_len(self) -> int:
        """What the syscall gets as `cmdline_len`: the bytes plus the trailing NUL."""
        return len(self.cmdline) + 1


def boot_params_bufsz(inp: X86PlanInput) -> int:
    """Size of the boot_params + cmdline + EFI map + setup_data segment."""
    # mirrors the kbuf.bufsz computation of bzImage64_load(), arch/x86/kernel/kexec-bzimage64.c
    params_cmdline_sz = align_up(SIZEOF_BOOT_PARAMS + inp.cmdline_len + MAX_ELFCOREHDR_STR_LEN, 16)
    efi_map_sz = inp.efi_runtime_map_entries * inp.efi_memdesc_size
    bufsz = (params_cmdline_sz + align_up(efi_map_sz, 16) + SIZEOF_SETUP_DATA
             + SIZEOF_EFI_SETUP_DATA + SIZEOF_SETUP_DATA + RNG_SEED_LENGTH)
    if inp.force_dtb and inp.boot_dtb_size:
        bufsz += SIZEOF_SETUP_DATA + inp.boot_dtb_size
    if inp.config_ima_kexec:
        bufsz += SIZEOF_SETUP_DATA + SIZEOF_IMA_SETUP_DATA
    if inp.config_kexec_handover:
        bufsz += SIZEOF_SETUP_DATA + SIZEOF_KHO_DATA
    return bufsz


def _ima_kbuf(inp: X86PlanInput, assumptions: list[str]) -> KexecBuf:
    # mirrors ima_add_kexec_buffer(), security/integrity/ima/ima_kexec.c: top-down, page
    # aligned, memsz ALIGN(list + 24 + staged list + 24 + extra, PAGE_SIZE), bufsz 0
    memsz = inp.ima_memsz
    if memsz is None:
        extra = inp.ima_kexec_extra_kb * 1024 if inp.ima_kexec_extra_kb > 0 else PAGE_SIZE // 2
        memsz = align_up(2 * IMA_KEXEC_HDR + extra, PAGE_SIZE)
        assumptions.append(
            "CONFIG_IMA_KEXEC: the IMA measurement list size is unknown; the IMA segment is "
            f"sized for an empty list ({human(memsz)}) — a long list makes it larger and "
            "moves the segments after it")
    return KexecBuf(name="ima", bufsz=0, memsz=memsz,
                    buf_align=PAGE_SIZE, buf_min=0, buf_max=ULONG_MAX, top_down=True)


def _segment_requests(inp: X86PlanInput, assumptions: list[str]) -> list[KexecBuf]:
    """The kexec_add_buffer() calls of a normal (not crash) bzImage load, in order."""
    hdr = inp.kernel.setup
    assert hdr is not None
    bufs: list[KexecBuf] = []
    if inp.config_ima_kexec and inp.ima_segment:
        bufs.append(_ima_kbuf(inp, assumptions))
    if inp.kho_enabled:
        # mirrors kho_fill_kimage(), kernel/liveupdate/kexec_handover.c
        size = KHO_SCRATCH_ENTRY * len(inp.scratch)
        bufs.append(KexecBuf(name="kho-scratch", bufsz=size, memsz=size,
                             buf_align=KHO_SCRATCH_ALIGN, buf_min=0, top_down=True))
    pg = inp.purgatory
    # mirrors kexec_purgatory_setup_kbuf(), kernel/kexec_file.c, with pbuf of bzImage64_load()
    bufs.append(KexecBuf(name="purgatory", bufsz=pg.bufsz, memsz=pg.memsz, buf_align=pg.align,
                         buf_min=MIN_PURGATORY_ADDR, top_down=True))
    params = boot_params_bufsz(inp)
    bufs.append(KexecBuf(name="boot-params", bufsz=params, memsz=params, buf_align=16,
                         buf_min=MIN_BOOTPARAM_ADDR, top_down=True))
    # mirrors the "Load kernel" step of bzImage64_load()
    bufs.append(KexecBuf(name="kernel", bufsz=inp.kernel.size - hdr.kern16_size,
                         memsz=align_up(hdr.init_size, PAGE_SIZE),
                         buf_align=hdr.kernel_alignment,
                         buf_min=max(hdr.pref_address, MIN_KERNEL_LOAD_ADDR), top_down=True))
    if inp.initrd_size is not None:
        bufs.append(KexecBuf(name="initrd", bufsz=inp.initrd_size, memsz=inp.initrd_size,
                             buf_align=PAGE_SIZE, buf_min=MIN_INITRD_LOAD_ADDR, top_down=True))
    return bufs


def _unplaced(kbuf: KexecBuf) -> Segment:
    return Segment(name=kbuf.name, bufsz=kbuf.bufsz, memsz=align_up(kbuf.memsz, PAGE_SIZE),
                   mem=None, buf_align=max(kbuf.buf_align, PAGE_SIZE), buf_min=kbuf.buf_min,
                   buf_max=kbuf.buf_max, top_down=kbuf.top_down)


def _largest_hole(region: Region, placed: Iterable[Segment], buf_min: int) -> int:
    start = max(region.start, buf_min)
    if region.size <= 0 or start > region.end:
        return 0
    taken = sorted((s.mem, s.mem + s.memsz - 1) for s in placed
                   if s.mem is not None and s.mem + s.memsz - 1 >= start and s.mem <= region.end)
    best, cursor = 0, start
    for lo, hi in taken:
        if lo > cursor:
            best = max(best, lo - cursor)
        cursor = max(cursor, hi + 1)
    return max(best, region.end + 1 - cursor)


def _check_image(inp: X86PlanInput) -> tuple[str, str] | None:
    """(errno, message) when the load fails before any placement that matters."""
    if inp.kernel.errno is not None:
        return inp.kernel.errno, f"{inp.kernel.name}: {inp.kernel.why_not}"
    if inp.kernel.format != "bzImage" or inp.kernel.setup is None:
        return "ENOEXEC", f"{inp.kernel.name}: not a bzImage ({inp.kernel.format})"
    hdr = inp.kernel.setup
    # the cmdline checks at the top of bzImage64_load(): khotui.cmdline.accepted_length()
    room = accepted_length(hdr.cmdline_size) or 0
    if inp.cmdline_len > room:
        # the same numbers and words as the cmdline-length check (khotui.cmdline.length_text)
        return "EINVAL", (
            f"the command line is {length_text(inp.cmdline_len, room)}: too long "
            f"(cmdline_size {hdr.cmdline_size} minus the {MAX_ELFCOREHDR_STR_LEN} bytes "
            "bzImage64_load() keeps for elfcorehdr= even on a normal load): shorten it by "
            f"{inp.cmdline_len - room} bytes")
    return None


def plan_x86_64(inp: X86PlanInput) -> Plan:
    """Predict the segments of a normal x86_64 bzImage `kexec_file_load`."""
    assumptions: list[str] = []
    plan = Plan(arch=ARCH, segments=[], fits=None, assumptions=assumptions,
                cmdline_len=inp.cmdline_len)
    if b"\0" in inp.cmdline:
        plan.notes.append("the command line contains a NUL byte: the new kernel sees only the "
                           "part before it")
    failure = _check_image(inp)
    if failure is not None:
        plan.fits, (plan.errno, plan.message) = False, failure
        return plan
    if not inp.purgatory.exact:
        assumptions.append(f"purgatory: {inp.purgatory.source}")
    if inp.efi_runtime_map_entries and inp.efi_memdesc_source is None:
        # bzImage64_load() copies nr_map * efi.memmap.desc_size bytes (efi_get_runtime_map_size(),
        # arch/x86/platform/efi/runtime-map.c): the descriptor size is the firmware's
        assumptions.append(
            f"EFI descriptor size: {inp.efi_memdesc_size} bytes assumed for the "
            f"{inp.efi_runtime_map_entries} runtime-map entries copied into the boot-params "
            f"segment (48 on OVMF and most x86_64 firmware): "
            f"{inp.efi_memdesc_why or 'efi.memmap.desc_size was not read'}. Run as root, or "
            f"snapshot /sys/kernel/boot_params/data, for the firmware's own size")
    if inp.force_dtb:
        assumptions.append(
            "KEXEC_FILE_FORCE_DTB: the boot DTB is appended to boot-params "
            + (f"({inp.boot_dtb_size} bytes)" if inp.boot_dtb_size else
               "only if the host booted with one (x86 hosts seldom do; assumed none)"))
    requests = _segment_requests(inp, assumptions)

    if inp.kho_enabled:
        regions = [Region(start=r.addr, end=r.addr + r.size - 1, name=r.name)
                   for r in inp.scratch]
        plan.walk = "kho-scratch"
        if not regions:
            plan.segments = [_unplaced(k) for k in requests]
            plan.message = ("KHO is on but the scratch regions are unknown: read "
                            "/sys/kernel/debug/kho/out/scratch_phys and scratch_len as root")
            return plan
        placer = Placer(regions=regions, kho=True)
        plan.notes.append("KHO on: every segment goes only into the scratch regions, tried in "
                           "kho_scratch[] order (lowmem, global, nodes), top-down inside each")
    else:
        walk = _non_kho_placer(inp, plan, requests)
        if walk is None:
            return plan
        placer = walk

    for kbuf in requests:
        placer.add(kbuf)
        if placer.failed is not None:
            break
    plan.segments = list(placer.segments)
    if placer.failed is None:
        plan.fits = True
        _check_sanity(inp, plan)
        return plan
    # the kernel stops at the first segment that fits nowhere; show the rest unplaced
    plan.segments += [_unplaced(k) for k in requests[len(placer.segments):]]
    failed = placer.failed
    plan.fits, plan.errno, plan.failed_segment = False, "EADDRNOTAVAIL", failed.name
    placed = [s for s in placer.segments if s.mem is not None]
    plan.regions_tried = [RegionTried(name=r.name, start=r.start, size=max(r.size, 0),
                                      largest_hole=_largest_hole(r, placed, failed.buf_min))
                          for r in placer.regions]
    where = "scratch region" if inp.kho_enabled else "System RAM range"
    tried = ", ".join(f"{r.name} {human(r.size)}"
                      + (f" ({human(r.largest_hole)} free)" if r.largest_hole != r.size else "")
                      for r in plan.regions_tried)
    plan.message = (f"{failed.name} ({human(failed.memsz)}) fits in no {where}: {tried}")
    if failed.buf_min > 0:
        plan.message += f"; it must lie at or above 0x{failed.buf_min:x}"
    if inp.kho_enabled:
        plan.message += (". Boot the running kernel with larger scratch regions (kho_scratch=, "
                         "e.g. a larger lowmem size) or load a smaller "
                         f"{'initrd' if failed.name == 'initrd' else failed.name}")
    return plan


def _non_kho_placer(inp: X86PlanInput, plan: Plan, requests: list[KexecBuf]) -> Placer | None:
    """The KHO-off walk, or None (with plan filled in) when the addresses cannot be known."""
    # mirrors kexec_locate_mem_hole(), kernel/kexec_file.c: CMA first, then the RAM walk.
    # kexec_alloc_contig() asks only the default area (dma_alloc_from_contiguous(NULL, ...)):
    # other CMA areas in CmaTotal never take a segment
    if inp.default_cma is not None:
        cma_possible = not inp.no_cma and inp.default_cma
    else:
        cma_possible = (not inp.no_cma and inp.config_dma_cma is not False
                        and (inp.cma_total_kb is None or inp.cma_total_kb > 0))
    if cma_possible:
        plan.walk = "cma"
        plan.segments = [_unplaced(k) for k in requests]
        size = "an unknown size" if inp.cma_total_kb is None else f"{inp.cma_total_kb} kB"
        plan.message = ("addresses unknown: with KHO off the kernel first asks the default CMA "
                        "area for each segment")
        why = f" ({inp.default_cma_why})" if inp.default_cma_why else ""
        exists = "exists" if inp.default_cma else "may exist"
        plan.notes.append(
            f"KHO off and a default CMA area {exists}{why} (CmaTotal {size}): "
            f"kexec_alloc_contig() takes every "
            f"segment (IMA, purgatory, boot-params, kernel, initrd alike) from the default CMA "
            f"area when it can, and the page allocator picks the address, so no preview can be "
            f"exact; a segment CMA cannot hold falls back to the top-down RAM walk. Passing "
            f"KEXEC_FILE_NO_CMA makes the placement predictable")
        return None
    if inp.no_cma:
        plan.notes.append("KEXEC_FILE_NO_CMA: the CMA area is skipped")
    elif inp.default_cma is False and inp.cma_total_kb:
        plan.notes.append(f"no default CMA area ({inp.default_cma_why}): the CmaTotal of "
                          f"{inp.cma_total_kb} kB is other areas, which kexec_alloc_contig() "
                          "never uses")
    elif inp.default_cma is None and inp.config_dma_cma is False and inp.cma_total_kb:
        plan.notes.append("CONFIG_DMA_CMA is off: kexec_alloc_contig() finds no default CMA area "
                           "whatever CmaTotal says")
    if inp.config_arch_keep_memblock:
        plan.walk = "memblock"
        if inp.memblock_free is None:
            plan.segments = [_unplaced(k) for k in requests]
            plan.message = ("addresses unknown: this kernel (CONFIG_ARCH_KEEP_MEMBLOCK) walks "
                            "the free memblock ranges, not /proc/iomem")
            why = f" ({inp.memblock_why})" if inp.memblock_why else ""
            plan.notes.append(
                "CONFIG_ARCH_KEEP_MEMBLOCK (selected by CONFIG_INTEL_TDX_HOST on x86): "
                "kexec_walk_memblock() searches memblock.memory minus memblock.reserved, which "
                f"could not be read{why}: mount debugfs (mount -t debugfs none "
                "/sys/kernel/debug) and read /sys/kernel/debug/memblock/{memory,reserved} "
                "as root")
            return None
        ranges = sorted(inp.memblock_free)
        plan.notes.append("KHO off: free memblock ranges walked from the highest down "
                           "(for_each_free_mem_range_reverse)")
        regions = [Region(start=s, end=e, name=f"memblock 0x{s:x}-0x{e:x}") for s, e in ranges]
        return Placer(regions=regions, kho=False)
    plan.walk = "system-ram"
    if not inp.system_ram:
        plan.segments = [_unplaced(k) for k in requests]
        plan.message = ("addresses unknown: no System RAM ranges (read /proc/iomem as root; "
                        "non-root readers see zeros)")
        return None
    ranges = sorted(inp.system_ram)
    plan.notes.append("KHO off: top-level System RAM ranges of /proc/iomem walked from the "
                       "highest down (walk_system_ram_res_rev)")
    regions = [Region(start=s, end=e, name=f"System RAM 0x{s:x}-0x{e:x}") for s, e in ranges]
    return Placer(regions=regions, kho=False)


def _check_sanity(inp: X86PlanInput, plan: Plan) -> None:
    """The half-of-RAM rule of sanity_check_segment_list(), kernel/kexec_core.c."""
    if not inp.mem_total_kb:
        return
    nr_pages = inp.mem_total_kb * 1024 // PAGE_SIZE
    total = 0
    for seg in plan.segments:
        pages = seg.memsz // PAGE_SIZE
        total += pages
        if pages > nr_pages // 2:
            plan.fits, plan.errno, plan.failed_segment = False, "EINVAL", seg.name
            plan.message = (f"{seg.name} ({human(seg.memsz)}) is more than half of RAM "
                            f"({human(inp.mem_total_kb * 1024)}): the kernel refuses it")
            return
    if total > nr_pages // 2:
        plan.fits, plan.errno = False, "EINVAL"
        plan.message = (f"the segments together ({human(total * PAGE_SIZE)}) are more than "
                        f"half of RAM ({human(inp.mem_total_kb * 1024)}): the kernel "
                        f"refuses the load")
