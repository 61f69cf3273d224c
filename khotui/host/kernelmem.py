"""What the running kernel's placement depends on beyond iomem and KHO: its page size, the EFI
memory descriptor size it copies into boot_params, its memblock arrays and its default CMA area.

Each reader returns the value and where it came from, or None and why it could not be read, so
the plan layer can say what it assumed instead (khotui.plan.dryrun):

* `read_page_size()`: PAGE_SIZE, by which kexec_add_buffer() (kernel/kexec_file.c) rounds
  every memsz and steps through holes. x86_64 has only 4 KiB; arm64 has 4K/16K/64K
  (CONFIG_ARM64_*_PAGES).
* `read_efi_memdesc_size()`: efi.memmap.desc_size, which bzImage64_load()
  (arch/x86/kernel/kexec-bzimage64.c) multiplies by the runtime-map entries
  (efi_get_runtime_map_size(), arch/x86/platform/efi/runtime-map.c). It is the firmware's
  boot_params.efi_info.efi_memdesc_size (efi_memblock_x86_reserve_range(),
  arch/x86/platform/efi/efi.c), readable in /sys/kernel/boot_params/data (root only).
* `read_memblock()`: /sys/kernel/debug/memblock/{memory,reserved}, what kexec_walk_memblock()
  walks with KHO off on CONFIG_ARCH_KEEP_MEMBLOCK kernels (arm64 always).
* `default_cma_area()`: whether dma_contiguous_default_area exists, the only CMA area
  kexec_alloc_contig() asks (dma_alloc_from_contiguous(NULL, ...) → dev_get_cma_area(NULL),
  kernel/dma/contiguous.c); other CMA areas (hugetlb_cma=, device-tree pools, numa_cma=) count
  in CmaTotal but never take a kexec segment.
"""

from __future__ import annotations

import os
import platform
import struct
from dataclasses import dataclass

from khotui.errors import KhotuiError
from khotui.host.boot import BootInfo
from khotui.host.memory import BLOCK_SIZE, read_block_size
from khotui.host.sysroot import Sysroot

BOOT_PARAMS_DATA = "/sys/kernel/boot_params/data"
BOOT_PARAMS_VERSION = "/sys/kernel/boot_params/version"
MEMBLOCK_MEMORY = "/sys/kernel/debug/memblock/memory"
MEMBLOCK_RESERVED = "/sys/kernel/debug/memblock/reserved"
CMA_SYSFS = "/sys/kernel/mm/cma"          # CONFIG_CMA_SYSFS: one directory per CMA area
CMA_DEBUGFS = "/sys/kernel/debug/cma"     # CONFIG_CMA_DEBUGFS: likewise

X86_PAGE_SIZE = 4096
# arch/arm64/Kconfig: exactly one of these is set
ARM64_PAGE_CONFIGS = {"CONFIG_ARM64_4K_PAGES": 4 << 10, "CONFIG_ARM64_16K_PAGES": 16 << 10,
                      "CONFIG_ARM64_64K_PAGES": 64 << 10}
# The default huge page is the PMD size, HPAGE_SHIFT = PMD_SHIFT on arm64
# (arch/arm64/include/asm/pgtable-hwdef.h), unless default_hugepagesz= chose another
# (hugetlb_init(), mm/hugetlb.c): PAGE_SIZE * PAGE_SIZE / 8.
ARM64_PMD_KB_TO_PAGE = {size * size // 8 // 1024: size for size in ARM64_PAGE_CONFIGS.values()}
ARM64_64K_BLOCK = 1 << 29
_MACHINES = {"aarch64": "arm64", "arm64": "arm64", "x86_64": "x86_64", "amd64": "x86_64"}

# struct boot_params, arch/x86/include/uapi/asm/bootparam.h: efi_info at 0x1c0,
# { u32 efi_loader_signature; u32 efi_systab; u32 efi_memdesc_size; ... }
EFI_INFO_OFFSET = 0x1C0
EFI_MEMDESC_SIZE_OFFSET = EFI_INFO_OFFSET + 8
BOOT_PARAMS_SIZE = 4096
EFI_LOADER_SIGNATURES = (b"EL64", b"EL32")   # efi_loader_signature of an EFI boot
EFI_MEMDESC_MIN = 40                         # sizeof(efi_memory_desc_t)
MAX_MEMBLOCK_BYTES = 16 << 20


@dataclass(frozen=True)
class PageSize:
    """The running kernel's PAGE_SIZE; `source` says where it was read, None when assumed."""

    size: int
    source: str | None

    def assumption(self) -> str | None:
        if self.source is not None:
            return None
        return ("page size: 4 KiB assumed: the running arm64 kernel's page size is not known "
                "(no CONFIG_ARM64_{4K,16K,64K}_PAGES in /proc/config.gz or /boot/config-"
                "<release>, no Hugepagesize in /proc/meminfo); kexec_add_buffer() rounds every "
                "memsz up to it. Provide the running kernel's config (CONFIG_IKCONFIG_PROC, or "
                "/boot/config-$(uname -r) in the snapshot)")


PAGE_SIZE_NOT_READ = PageSize(X86_PAGE_SIZE, None)


def read_page_size(sysroot: Sysroot, boot: BootInfo) -> PageSize:
    """The running kernel's page size, from the most direct evidence there is."""
    if boot.arch == "x86_64":
        return PageSize(X86_PAGE_SIZE, "x86_64 (4 KiB pages only)")
    if boot.arch != "arm64":
        return PageSize(X86_PAGE_SIZE, f"{boot.arch or 'unknown'} architecture (not modelled)")
    for name, size in ARM64_PAGE_CONFIGS.items():
        if boot.config.get(name) == "y":
            return PageSize(size, f"{name} in {boot.config_source}")
    if sysroot.is_live and _MACHINES.get(platform.machine()) == boot.arch:
        # this process runs on the very kernel: its own page size is the kernel's
        return PageSize(os.sysconf("SC_PAGE_SIZE"), "sysconf(_SC_PAGE_SIZE)")
    huge = boot.meminfo.get("Hugepagesize")
    if (huge in ARM64_PMD_KB_TO_PAGE and boot.cmdline_param("default_hugepagesz") is None
            and boot.cmdline_param("hugepagesz") is None):
        return PageSize(ARM64_PMD_KB_TO_PAGE[huge],
                        f"/proc/meminfo Hugepagesize {huge} kB (the PMD size of the page size)")
    try:
        block = read_block_size(sysroot)
    except KhotuiError:
        block = None
    if block == ARM64_64K_BLOCK:
        # memory_block_size_bytes() is the __weak default on arm64 (drivers/base/memory.c):
        # 1 << SECTION_SIZE_BITS, 29 only with 64K pages (arch/arm64/include/asm/sparsemem.h);
        # 4K and 16K share 27, so a 128 MiB block tells nothing
        return PageSize(64 << 10, f"{sysroot.display(BLOCK_SIZE)} 0x{block:x} (512 MiB "
                                  "sections exist only with 64K pages)")
    return PageSize(X86_PAGE_SIZE, None)


@dataclass(frozen=True)
class EfiMemdescSize:
    """efi.memmap.desc_size of the running kernel, or None and why it is not known."""

    size: int | None
    source: str | None = None
    why: str | None = None


EFI_MEMDESC_NOT_READ = EfiMemdescSize(None, why="not read")


def read_efi_memdesc_size(sysroot: Sysroot) -> EfiMemdescSize:
    """boot_params.efi_info.efi_memdesc_size from /sys/kernel/boot_params/data (x86 only)."""
    where = sysroot.display(BOOT_PARAMS_DATA)
    try:
        if not sysroot.exists(BOOT_PARAMS_DATA):
            return EfiMemdescSize(None, why=f"{where} does not exist (not in this snapshot, or "
                                            "not an x86 kernel)")
        data = sysroot.read_bytes(BOOT_PARAMS_DATA, limit=BOOT_PARAMS_SIZE)
        version_text = sysroot.read_optional_text(BOOT_PARAMS_VERSION)
    except KhotuiError as exc:
        return EfiMemdescSize(None, why=f"{where}: {exc.message} (it is readable by root only)")
    if len(data) < EFI_MEMDESC_SIZE_OFFSET + 4:
        return EfiMemdescSize(None, why=f"{where} is {len(data)} bytes, too short for "
                                        "struct boot_params")
    version = None
    if version_text is not None:
        try:
            version = int(version_text.strip(), 16)
        except ValueError:
            return EfiMemdescSize(None, why=f"{sysroot.display(BOOT_PARAMS_VERSION)} is not a "
                                            "boot protocol version")
        # No version check: the EFI stub's own entry (efi_allocate_bootparams(),
        # drivers/firmware/efi/libstub/x86-stub.c) zeroes boot_params and never sets
        # hdr.version, so an OVMF boot reads 0x0000 here with efi_info filled in; setup_arch()
        # (arch/x86/kernel/setup.c) trusts efi_loader_signature alone, and so do we
        # (tests/fixtures/captures/efi-two-nodes-bootparams).
    signature = data[EFI_INFO_OFFSET:EFI_INFO_OFFSET + 4]
    (desc_size,) = struct.unpack_from("<I", data, EFI_MEMDESC_SIZE_OFFSET)
    if signature not in EFI_LOADER_SIGNATURES:
        return EfiMemdescSize(None, why=f"{where}: efi_info.efi_loader_signature is "
                                        f"{signature!r}, not an EFI boot")
    if desc_size < EFI_MEMDESC_MIN or desc_size % 8 or desc_size > BOOT_PARAMS_SIZE:
        return EfiMemdescSize(None, why=f"{where}: efi_info.efi_memdesc_size {desc_size} is not "
                                        "a descriptor size")
    proto = "" if not version else f", boot protocol {version >> 8}.{version & 0xFF:02d}"
    return EfiMemdescSize(desc_size, source=f"{where} (efi_info.efi_memdesc_size{proto})")


@dataclass(frozen=True)
class Memblock:
    """The two memblock debugfs files, or None and why they could not be read."""

    memory: str | None
    reserved: str | None
    why: str | None = None


MEMBLOCK_NOT_READ = Memblock(None, None, why="not read")


def read_memblock(sysroot: Sysroot) -> Memblock:
    """/sys/kernel/debug/memblock/{memory,reserved} (memblock_debug_show(), mm/memblock.c;
    debugfs, root only; present only on CONFIG_ARCH_KEEP_MEMBLOCK kernels)."""
    texts: list[str] = []
    for path in (MEMBLOCK_MEMORY, MEMBLOCK_RESERVED):
        try:
            if not sysroot.exists(path):
                return Memblock(None, None, why=f"{sysroot.display(path)} does not exist "
                                                "(debugfs not mounted or not in this snapshot)")
            texts.append(sysroot.read_text(path, limit=MAX_MEMBLOCK_BYTES))
        except KhotuiError as exc:
            return Memblock(None, None, why=f"{sysroot.display(path)}: {exc.message}")
    return Memblock(texts[0], texts[1])


@dataclass(frozen=True)
class DefaultCma:
    """Whether the default CMA area exists (None: cannot tell) and what says so."""

    present: bool | None
    why: str


def _memparse(text: str) -> int | None:
    # memparse(), lib/cmdline.c: a number with an optional K/M/G/T/P/E suffix
    digits = text.rstrip("kKmMgGtTpPeE")
    suffix = text[len(digits):]
    try:
        value = int(digits, 0)
    except ValueError:
        return None
    if len(suffix) > 1:
        return None
    return value << (10 * ("KMGTPE".index(suffix.upper()) + 1) if suffix else 0)


def default_cma_area(sysroot: Sysroot, boot: BootInfo, *, running_fdt: bytes | None = None,
                     kernel_log: str | None = None) -> DefaultCma:
    """Decide from the default area alone (dma_contiguous_reserve(), rmem_cma_setup(),
    kernel/dma/contiguous.c): `cma=` wins over the config sizes and over a device-tree
    `linux,cma-default` pool; the area is named "reserved" (dma_contiguous_reserve_area())."""
    total = boot.meminfo.get("CmaTotal")
    if total == 0:
        return DefaultCma(False, "CmaTotal is 0 kB: there is no CMA area at all")
    if boot.config_enabled("CONFIG_DMA_CMA") is False:
        return DefaultCma(False, "CONFIG_DMA_CMA is off: there is no default CMA area, whatever "
                                 "CmaTotal counts")
    for base in (CMA_SYSFS, CMA_DEBUGFS):
        try:
            names = sysroot.listdir(base) if sysroot.is_dir(base) else None
        except KhotuiError:
            names = None
        if names:
            if "reserved" in names:
                return DefaultCma(True, f"{sysroot.display(base)}/reserved: the default CMA "
                                        "area exists")
            if boot.arch != "arm64" or all(n.startswith("hugetlb") for n in names):
                return DefaultCma(False, f"{sysroot.display(base)} lists only "
                                         f"{', '.join(sorted(names))}: none is the default area")
    cma = boot.cmdline_param("cma")
    log = kernel_log or ""
    if cma is not None:
        size = _memparse(cma.split("@", 1)[0])
        if size == 0:
            return DefaultCma(False, "cma=0 on the command line: no default CMA area (and a "
                                     "device-tree linux,cma-default pool is skipped for it)")
        if size is not None:
            if "cma: Failed to reserve" in log:
                return DefaultCma(None, f"cma={cma} on the command line, but the kernel log "
                                        "says a CMA reservation failed")
            return DefaultCma(True, f"cma={cma} on the command line")
    if running_fdt is not None and b"linux,cma-default" in running_fdt:
        return DefaultCma(True, "the device tree has a linux,cma-default pool")
    cfg = boot.config
    if boot.config_source is None:
        return DefaultCma(None, "the running kernel's config is not readable, so the size of "
                                "its default CMA area (CONFIG_CMA_SIZE_*) is unknown")
    mbytes = cfg.get("CONFIG_CMA_SIZE_MBYTES", "0")
    percent = cfg.get("CONFIG_CMA_SIZE_PERCENTAGE", "0")
    sel = next((k for k in ("MBYTES", "PERCENTAGE", "MIN", "MAX")
                if cfg.get(f"CONFIG_CMA_SIZE_SEL_{k}") == "y"), None)
    sizes = {"MBYTES": mbytes != "0", "PERCENTAGE": percent != "0",
             "MIN": mbytes != "0" and percent != "0", "MAX": mbytes != "0" or percent != "0"}
    if sel is None:
        return DefaultCma(None, "no CONFIG_CMA_SIZE_SEL_* in the running kernel's config")
    if not sizes[sel]:
        if boot.arch == "arm64" and running_fdt is None:
            return DefaultCma(None, f"CONFIG_CMA_SIZE_SEL_{sel} gives no default area, but a "
                                    "device-tree linux,cma-default pool cannot be ruled out "
                                    "(/sys/firmware/fdt not read)")
        return DefaultCma(False, f"CONFIG_CMA_SIZE_SEL_{sel} with CONFIG_CMA_SIZE_MBYTES="
                                 f"{mbytes}, CONFIG_CMA_SIZE_PERCENTAGE={percent}: no default "
                                 "CMA area; CmaTotal counts other areas only")
    return DefaultCma(True, f"CONFIG_CMA_SIZE_SEL_{sel} (CONFIG_CMA_SIZE_MBYTES={mbytes}, "
                            f"CONFIG_CMA_SIZE_PERCENTAGE={percent})")
