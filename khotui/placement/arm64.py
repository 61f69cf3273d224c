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
(drivers/of/kexec.c) and packed by fdt_pack(): its size is computed here exactly as libfdt
changes `totalsize` (see `kexec_dtb_size()`).

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
import struct
from dataclasses import dataclass, field

from khotui.image.arm64 import Arm64Image
from khotui.placement.core import (PAGE_SIZE, ULONG_MAX, KexecBuf, Placer, Region, Segment,
                                   align_up)

SZ_64K = 64 << 10
SZ_2M = 2 << 20                      # MIN_KIMG_ALIGN, arch/arm64/include/asm/boot.h
SZ_1G = 1 << 30
KHO_SCRATCH_ENTRY = 16               # sizeof(struct kho_scratch): u64 addr, u64 size

# drivers/of/kexec.c
FDT_EXTRA_SPACE = 0x1000
RNG_SEED_SIZE = 128

# libfdt: fdt.h / libfdt_internal.h
FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 1, 2, 3, 4, 9
FDT_HEADER_SIZE = 40                 # FDT_ALIGN(sizeof(struct fdt_header), 8)
FDT_RSV_ENTRY = 16
FDT_PROP_HEADER = 12                 # struct fdt_property: tag, len, nameoff
FDT_MAX_NCELLS = 4


def _tagalign(n: int) -> int:
    return (n + 3) & ~3


class DtbError(Exception):
    """The device tree cannot be rewritten as of_kexec_alloc_and_setup_fdt() would."""


# --------------------------------------------------------------------------------------------
# The DTB segment: of_kexec_alloc_and_setup_fdt() + fdt_pack(), as sizes only


@dataclass
class DtbSize:
    """The DTB segment's size and how each step of the /chosen rewrite changed it."""

    totalsize: int                   # fdt_totalsize() after fdt_pack(): the segment's bufsz
    boot_totalsize: int              # the running kernel's FDT header totalsize
    steps: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"totalsize": self.totalsize, "boot_totalsize": self.boot_totalsize,
                "steps": list(self.steps), "assumptions": list(self.assumptions)}


class _FdtModel:
    """Just enough of a flattened device tree to follow libfdt's size arithmetic."""

    def __init__(self, blob: bytes, bufsize: int) -> None:
        if len(blob) < FDT_HEADER_SIZE:
            raise DtbError(f"{len(blob)} bytes: shorter than an FDT header")
        (magic, totalsize, off_struct, off_strings, off_rsv, version, _last_comp, _cpu,
         size_strings, size_struct) = struct.unpack_from(">10I", blob, 0)
        if magic != FDT_MAGIC:
            raise DtbError(f"bad FDT magic 0x{magic:08x}")
        if version < 17:
            raise DtbError(f"FDT version {version}: the kernel's libfdt wants 17")
        if totalsize > len(blob) or off_strings + size_strings > totalsize \
                or off_struct + size_struct > totalsize:
            raise DtbError(f"truncated: header says {totalsize} bytes, file has {len(blob)}")
        self.boot_totalsize = totalsize
        self.rsv: list[tuple[int, int]] = []
        offset = off_rsv
        while True:
            if offset + FDT_RSV_ENTRY > totalsize:
                raise DtbError("memory reservation block runs past the end")
            address, size = struct.unpack_from(">QQ", blob, offset)
            offset += FDT_RSV_ENTRY
            if address == 0 and size == 0:
                break
            self.rsv.append((address, size))
        self.struct_size = size_struct
        self.strings = bytes(blob[off_strings:off_strings + size_strings])
        self.bufsize = bufsize
        rsv_size = (len(self.rsv) + 1) * FDT_RSV_ENTRY
        misordered = (off_rsv < FDT_HEADER_SIZE or off_struct < off_rsv + rsv_size
                      or off_strings < off_struct + size_struct)
        # mirrors fdt_open_into(), scripts/dtc/libfdt/fdt_rw.c: moved as is when the blocks are
        # in order (gaps kept until fdt_pack), else repacked in order
        if misordered:
            self.gaps = 0
        else:
            self.gaps = off_strings - (FDT_HEADER_SIZE + rsv_size + size_struct)
        if self.data_size > bufsize:
            raise DtbError("FDT_ERR_NOSPACE in fdt_open_into()")
        self.root_props, self.chosen_props = self._scan(blob, off_struct, size_struct,
                                                        off_strings, size_strings)

    @property
    def data_size(self) -> int:
        """fdt_data_size_(): off_dt_strings + size_dt_strings."""
        return (FDT_HEADER_SIZE + self.gaps + (len(self.rsv) + 1) * FDT_RSV_ENTRY
                + self.struct_size + len(self.strings))

    @property
    def packed_size(self) -> int:
        """fdt_pack(): header, reserve map, struct and strings blocks, no gaps."""
        return (FDT_HEADER_SIZE + (len(self.rsv) + 1) * FDT_RSV_ENTRY + self.struct_size
                + len(self.strings))

    def _scan(self, blob: bytes, off: int, size: int, off_strings: int, size_strings: int):
        root: dict[str, bytes] = {}
        chosen: dict[str, bytes] | None = None
        depth = 0
        in_chosen = False
        pos, end = off, off + size
        while pos + 4 <= end:
            (tag,) = struct.unpack_from(">I", blob, pos)
            pos += 4
            if tag == FDT_BEGIN_NODE:
                name_end = blob.index(b"\0", pos)
                name = blob[pos:name_end].decode("ascii", "replace")
                pos = off + _tagalign(name_end + 1 - off)
                depth += 1
                # fdt_path_offset("/chosen"): the first root sub-node "chosen" or "chosen@..."
                if depth == 2 and chosen is None and (name == "chosen"
                                                      or name.startswith("chosen@")):
                    chosen, in_chosen = {}, True
            elif tag == FDT_END_NODE:
                if in_chosen and depth == 2:
                    in_chosen = False
                depth -= 1
            elif tag == FDT_PROP:
                length, nameoff = struct.unpack_from(">II", blob, pos)
                pos += 8
                name_end = blob.index(b"\0", off_strings + nameoff)
                name = blob[off_strings + nameoff:name_end].decode("ascii", "replace")
                value = bytes(blob[pos:pos + length])
                pos = off + _tagalign(pos + length - off)
                if depth == 1:
                    root.setdefault(name, value)
                elif in_chosen and depth == 2:
                    chosen.setdefault(name, value)   # type: ignore[union-attr]
            elif tag == FDT_NOP:
                continue
            elif tag == FDT_END:
                break
            else:
                raise DtbError(f"bad FDT tag 0x{tag:x} in the structure block")
        return root, chosen

    def _check(self, what: str) -> None:
        # fdt_splice_(): -FDT_ERR_NOSPACE when the data outgrows the buffer
        if self.data_size > self.bufsize:
            raise DtbError(f"FDT_ERR_NOSPACE while {what}: the buffer of_kexec_alloc_and_setup_fdt()"
                           f" allocates ({self.bufsize} bytes) is too small")

    def cells(self, name: str, default: int) -> int:
        """fdt_address_cells() / fdt_size_cells() of the root node."""
        value = self.root_props.get(name)
        if value is None:
            return default
        if len(value) != 4:
            raise DtbError(f"root {name} is {len(value)} bytes, not one cell")
        (cells,) = struct.unpack(">I", value)
        if cells > FDT_MAX_NCELLS or (name == "#address-cells" and cells == 0):
            raise DtbError(f"root {name} = {cells}")
        return cells

    def _add_string(self, name: str) -> int:
        # mirrors fdt_find_add_string_(): any "name\0" in the table will do, even a suffix
        key = name.encode() + b"\0"
        if self.strings.find(key) >= 0:
            return 0
        self.strings += key
        self._check(f"adding the string {name!r}")
        return len(key)

    def delprop(self, name: str) -> int:
        # mirrors fdt_delprop(): the property goes, its name stays in the strings block
        value = self.chosen_props.pop(name, None)
        if value is None:
            return 0
        delta = FDT_PROP_HEADER + _tagalign(len(value))
        self.struct_size -= delta
        return -delta

    def setprop(self, name: str, length: int) -> int:
        # mirrors fdt_setprop_placeholder(): resize in place, else add
        old = self.chosen_props.get(name)
        added = 0
        if old is not None:
            delta = _tagalign(length) - _tagalign(len(old))
        else:
            added = self._add_string(name)
            delta = FDT_PROP_HEADER + _tagalign(length)
        self.chosen_props[name] = bytes(length)
        self.struct_size += delta
        self._check(f"setting {name}")
        return delta + added

    def appendprop(self, name: str, length: int) -> int:
        # mirrors fdt_appendprop(): grow an existing property, else add it
        old = self.chosen_props.get(name)
        if old is None:
            return self.setprop(name, length)
        delta = _tagalign(len(old) + length) - _tagalign(len(old))
        self.chosen_props[name] = bytes(len(old) + length)
        self.struct_size += delta
        self._check(f"appending to {name}")
        return delta

    def addrrange_len(self) -> int:
        # fdt_appendprop_addrrange(fdt, 0, ...): root cells, only 1 or 2 are accepted
        addr_cells = self.cells("#address-cells", 2)
        size_cells = self.cells("#size-cells", 1)
        if addr_cells not in (1, 2) or size_cells not in (1, 2):
            raise DtbError(f"root #address-cells {addr_cells} / #size-cells {size_cells}: "
                           "fdt_appendprop_addrrange() handles only 1 or 2")
        return 4 * (addr_cells + size_cells)

    def del_mem_rsv(self, address: int, size: int) -> bool:
        # mirrors fdt_find_and_del_mem_rsv(), drivers/of/kexec.c
        try:
            self.rsv.remove((address, size))
        except ValueError:
            return False
        return True

    def add_mem_rsv(self, address: int, size: int) -> None:
        self.rsv.append((address, size))
        self._check("adding a memory reservation")


def _read_number(value: bytes) -> int:
    """of_read_number(prop, len / 4): big-endian cells, the low two kept."""
    cells = struct.unpack(f">{len(value) // 4}I", value[:len(value) // 4 * 4])
    number = 0
    for cell in cells:
        number = ((number << 32) | cell) & ULONG_MAX
    return number


def kexec_dtb_size(fdt: bytes, *, cmdline: bytes | None, initrd: bool, kho: bool,
                   kexec_handover: bool = True, rng_initialized: bool = True,
                   ima_buffer: bool = False) -> DtbSize:
    """Size of the DTB segment built from the running kernel's FDT, step by step.

    Mirrors of_kexec_alloc_and_setup_fdt() (drivers/of/kexec.c) then fdt_pack()
    (scripts/dtc/libfdt/fdt_rw.c), for a normal (not crash) image. `cmdline` is the command
    line without its NUL, None when none is passed (cmdline_len 0). `kho`: the image carries
    KHO data (KHO on); `kexec_handover`: CONFIG_KEXEC_HANDOVER (kho_add_chosen() compiled in).
    Raises DtbError when the kernel would fail ("Preparing for new dtb failed").
    """
    boot_totalsize = struct.unpack_from(">I", fdt, 4)[0] if len(fdt) >= 8 else 0
    cmdline_len = 0 if cmdline is None else len(cmdline.split(b"\0", 1)[0])
    model = _FdtModel(fdt, boot_totalsize + cmdline_len + FDT_EXTRA_SPACE)
    out = DtbSize(totalsize=0, boot_totalsize=model.boot_totalsize)
    steps, assumptions = out.steps, out.assumptions

    def step(text: str, delta: int) -> None:
        if delta:
            steps.append(f"{text}: {delta:+d} bytes")

    # Remove memory reservation for the current device tree (its address is not visible to
    # user space: take an entry of exactly its size to be it)
    own = [r for r in model.rsv if r[1] == model.boot_totalsize]
    if own:
        model.del_mem_rsv(*own[0])
        step("reserve map: the boot FDT's own entry removed", -FDT_RSV_ENTRY)
        assumptions.append("the reserve-map entry of the FDT's own size "
                           f"(0x{own[0][0]:x}+0x{own[0][1]:x}) is taken to be the FDT itself")

    if model.chosen_props is None:
        model.chosen_props = {}
        # fdt_add_subnode(): FDT_BEGIN_NODE, "chosen\0" padded to 8, FDT_END_NODE
        model.struct_size += 4 + _tagalign(len("chosen") + 1) + 4
        model._check("adding /chosen")
        step("/chosen added", 4 + _tagalign(len("chosen") + 1) + 4)

    step("linux,elfcorehdr removed", model.delprop("linux,elfcorehdr"))
    step("linux,usable-memory-range removed", model.delprop("linux,usable-memory-range"))

    start = model.chosen_props.get("linux,initrd-start")
    if start is not None:
        end = model.chosen_props.get("linux,initrd-end")
        if end is None:
            raise DtbError("/chosen has linux,initrd-start but no linux,initrd-end")
        tmp_start, tmp_end = _read_number(start), _read_number(end)
        tmp_size = tmp_end - tmp_start
        if (model.del_mem_rsv(tmp_start, tmp_size)
                or model.del_mem_rsv(tmp_start, align_up(tmp_size, PAGE_SIZE))):
            step("reserve map: the boot initrd's entry removed", -FDT_RSV_ENTRY)

    if initrd:
        step("linux,initrd-start set (u64)", model.setprop("linux,initrd-start", 8))
        step("linux,initrd-end set (u64)", model.setprop("linux,initrd-end", 8))
        model.add_mem_rsv(0, 0)
        step("reserve map: the new initrd added", FDT_RSV_ENTRY)
    else:
        step("linux,initrd-start removed", model.delprop("linux,initrd-start"))
        step("linux,initrd-end removed", model.delprop("linux,initrd-end"))

    if kexec_handover:
        # mirrors kho_add_chosen(), drivers/of/kexec.c
        step("linux,kho-fdt removed", model.delprop("linux,kho-fdt"))
        step("linux,kho-scratch removed", model.delprop("linux,kho-scratch"))
        if kho:
            cells = model.addrrange_len()
            if cells == 8:
                assumptions.append("root #address-cells = 1: the KHO FDT page and the scratch "
                                   "array must lie below 4 GiB or the DTB cannot be built")
            step("linux,kho-fdt added", model.appendprop("linux,kho-fdt", cells))
            step("linux,kho-scratch added", model.appendprop("linux,kho-scratch", cells))

    if cmdline is not None:
        step("bootargs set", model.setprop("bootargs", cmdline_len + 1))
    else:
        step("bootargs removed", model.delprop("bootargs"))

    step("kaslr-seed removed", model.delprop("kaslr-seed"))
    if rng_initialized:
        step("kaslr-seed set (u64)", model.setprop("kaslr-seed", 8))
        step("rng-seed set (128 bytes)", model.setprop("rng-seed", RNG_SEED_SIZE))
    else:
        assumptions.append("the RNG is not initialised: no kaslr-seed or rng-seed")
    step("linux,booted-from-kexec set", model.setprop("linux,booted-from-kexec", 0))

    # mirrors remove_ima_buffer(): the old IMA buffer property and its reservation go
    ima = model.chosen_props.get("linux,ima-kexec-buffer")
    if ima is not None:
        step("linux,ima-kexec-buffer removed", model.delprop("linux,ima-kexec-buffer"))
        try:
            addr_cells = model.cells("#address-cells", 2)
            size_cells = model.cells("#size-cells", 1)
            if len(ima) == 4 * (addr_cells + size_cells):
                address = _read_number(ima[:4 * addr_cells])
                size = _read_number(ima[4 * addr_cells:])
                if model.del_mem_rsv(address, size):
                    step("reserve map: the old IMA buffer removed", -FDT_RSV_ENTRY)
        except DtbError:
            pass
    if ima_buffer:
        # mirrors setup_ima_buffer() (CONFIG_IMA_KEXEC)
        step("linux,ima-kexec-buffer added",
             model.appendprop("linux,ima-kexec-buffer", model.addrrange_len()))
        model.add_mem_rsv(0, 0)
        step("reserve map: the IMA buffer added", FDT_RSV_ENTRY)

    out.totalsize = model.packed_size
    gaps = model.gaps
    if gaps:
        steps.append(f"fdt_pack(): {gaps} bytes of free space between blocks dropped")
    return out


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


def free_ranges_from_memblock(memory: str, reserved: str) -> list[Region]:
    """Free memblock ranges, ascending: what kexec_walk_memblock() walks with KHO off.

    From /sys/kernel/debug/memblock/memory and .../reserved (memblock_debug_show(),
    mm/memblock.c: `   N: 0xSTART..0xEND NID FLAGS`, END inclusive). Mirrors
    for_each_free_mem_range(NUMA_NO_NODE, MEMBLOCK_NONE): NOMAP and DRIVER_MANAGED memory is
    skipped (should_skip_region()), reserved ranges are cut out.
    """
    taken = sorted((start, end) for start, end, _ in _memblock_regions(reserved))
    free: list[Region] = []
    for start, end, flags in _memblock_regions(memory):
        if "NOMAP" in flags or "DRV_MNG" in flags or "DRIVER_MANAGED" in flags:
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


_IOMEM_LINE = re.compile(r"^( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)$")


def free_ranges_from_iomem(iomem: str) -> list[Region]:
    """An approximation of the free memblock ranges: top-level `System RAM` minus its children.

    On arm64 the children (`Kernel code`, `Kernel data`, `reserved`) are memblock.reserved as
    reserve_memblock_reserved_regions() saw it at boot (arch/arm64/kernel/setup.c); memory
    freed since (the boot initrd) still shows as reserved.
    """
    ram: list[tuple[int, int]] = []
    children: list[tuple[int, int]] = []
    for line in iomem.splitlines():
        match = _IOMEM_LINE.match(line)
        if not match:
            continue
        start, end = int(match[2], 16), int(match[3], 16)
        if not match[1] and match[4] == "System RAM":
            ram.append((start, end))
        elif match[1] and ram and ram[-1][0] <= start <= ram[-1][1] and len(match[1]) == 2:
            children.append((start, end))
    children.sort()
    free: list[Region] = []
    for start, end in ram:
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
    """Everything plan_arm64() needs, read from the host or a snapshot.

    kernel_size: the Image file's size (the kernel segment's bufsz);
    image_size, text_offset: from the Image header (khotui.image.arm64; `for_image()` fills
    them and keeps `image`, whose refusal then makes the plan fail with EINVAL);
    initrd_size: None without an initrd (or with KEXEC_FILE_NO_INITRAMFS);
    cmdline: the command line without its trailing NUL; None when none is passed;
    fdt: /sys/firmware/fdt, the running kernel's flattened device tree;
    kho: KHO is on (`kho/` in debugfs); scratch: (phys, len) per `kho_scratch[]` entry, in
    scratch_phys/scratch_len order;
    free_ranges: with KHO off, the free memblock ranges ascending (free_ranges_from_memblock(),
    or free_ranges_from_iomem() as an approximation, then set free_ranges_exact False);
    cma: with KHO off, a default CMA area exists (CmaTotal > 0) and KEXEC_FILE_NO_CMA is not
    passed: the kernel tries it first and the page allocator picks the address;
    kexec_handover: CONFIG_KEXEC_HANDOVER; ima_kexec: CONFIG_IMA_KEXEC, with ima_size the
    measurement list segment's memsz when known; rng_initialized: the kernel's RNG is ready
    ("random: crng init done"), so /chosen gets kaslr-seed and rng-seed.
    """

    kernel_size: int
    image_size: int
    text_offset: int
    fdt: bytes
    initrd_size: int | None = None
    cmdline: bytes | None = None
    kho: bool = True
    scratch: list[tuple[int, int]] = field(default_factory=list)
    free_ranges: list[Region] = field(default_factory=list)
    free_ranges_exact: bool = True
    cma: bool = False
    kexec_handover: bool = True
    ima_kexec: bool = False
    ima_size: int | None = None
    rng_initialized: bool = True
    image: Arm64Image | None = None

    @classmethod
    def for_image(cls, image: Arm64Image, **kwargs) -> "Arm64PlanInput":
        """The input for a parsed Image: kernel_size, image_size, text_offset from it."""
        return cls(kernel_size=image.file_size or 0, image_size=image.image_size or 0,
                   text_offset=image.text_offset or 0, image=image, **kwargs)


@dataclass
class Tried:
    """One region a segment was tried in, and why it did not fit there."""

    region: Region
    reason: str

    def as_dict(self) -> dict:
        return {"region": self.region.name, "start": self.region.start,
                "size": self.region.size, "reason": self.reason}


@dataclass
class Retry:
    """A kernel position image_load() gave up because `failed` fit nowhere above it."""

    kernel_mem: int
    failed: str

    def as_dict(self) -> dict:
        return {"kernel_mem": self.kernel_mem, "failed": self.failed}


@dataclass
class Arm64Plan:
    """Where Linux 7.3 puts each segment of an arm64 Image load, or why it fails."""

    segments: list[Segment]
    fits: bool
    errno: str | None = None            # None, 'EADDRNOTAVAIL' or 'EINVAL'
    failed: Segment | None = None       # the segment whose kexec_add_buffer() failed last
    tried: list[Tried] = field(default_factory=list)
    retries: list[Retry] = field(default_factory=list)
    dtb: DtbSize | None = None
    exact: bool = True
    assumptions: list[str] = field(default_factory=list)
    message: str | None = None
    fix: str | None = None
    arch: str = "arm64"

    @property
    def regions_tried(self) -> list[Region]:
        return [t.region for t in self.tried]

    def segment(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def as_dict(self) -> dict:
        return {
            "arch": self.arch,
            "fits": self.fits,
            "errno": self.errno,
            "exact": self.exact,
            "message": self.message,
            "fix": self.fix,
            "segments": [s.as_dict() for s in self.segments],
            "failed": None if self.failed is None else self.failed.name,
            "tried": [t.as_dict() for t in self.tried],
            "retries": [r.as_dict() for r in self.retries],
            "dtb": None if self.dtb is None else self.dtb.as_dict(),
            "assumptions": list(self.assumptions),
        }


def scratch_regions(scratch: list[tuple]) -> list[Region]:
    """`kho_scratch[]` as the regions kho_walk_scratch() offers: [addr, addr + size - 1].

    Entries are (phys, size) or (phys, size, name); names default to lowmem, global, node<i-2>
    (the names x86_64 uses too, so plans read the same on both architectures)."""
    names = ["lowmem", "global"]
    regions = []
    for i, entry in enumerate(scratch):
        phys, size = entry[0], entry[1]
        name = entry[2] if len(entry) > 2 else (names[i] if i < 2 else f"node{i - 2}")
        regions.append(Region(phys, phys + size - 1, name))
    return regions


def _why_not(placer: Placer, region: Region, kbuf: KexecBuf) -> str:
    # the reasons locate_mem_hole_callback(), kernel/kexec_file.c, returns 0 for a region
    memsz = align_up(kbuf.memsz, PAGE_SIZE)
    if region.size < memsz:
        return f"too small: {region.size:#x} bytes < memsz {memsz:#x}"
    if region.end < kbuf.buf_min:
        return f"below buf_min {kbuf.buf_min:#x}"
    if region.start > kbuf.buf_max:
        return f"above buf_max {kbuf.buf_max:#x}"
    placed = ", ".join(s.name for s in placer.segments if s.mem is not None
                       and s.mem <= region.end and s.mem + s.memsz - 1 >= region.start)
    where = f" ({placed} already there)" if placed else ""
    align = max(kbuf.buf_align, PAGE_SIZE)
    return (f"no free {align:#x}-aligned hole of {memsz:#x} bytes within "
            f"[{max(region.start, kbuf.buf_min):#x}, {min(region.end, kbuf.buf_max):#x}]{where}")


def _tried(placer: Placer, kbuf: KexecBuf) -> list[Tried]:
    return [Tried(region, _why_not(placer, region, kbuf))
            for region in placer._walk_order(kbuf.top_down)]


def plan_arm64(inp: Arm64PlanInput) -> Arm64Plan:
    """Mirror kimage_file_prepare_segments() + image_load() for an arm64 Image (normal load)."""
    assumptions: list[str] = []
    exact = True
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
            assumptions.append("KHO off and a default CMA area exists: every segment is first "
                               "allocated from CMA by the page allocator (kexec_alloc_contig()),"
                               " which no preview can know; pass KEXEC_FILE_NO_CMA for the "
                               "walk shown here")
    placer = Placer(regions=regions, kho=inp.kho)
    plan = Arm64Plan(segments=placer.segments, fits=False, exact=exact, assumptions=assumptions)

    try:
        plan.dtb = kexec_dtb_size(
            inp.fdt, cmdline=inp.cmdline, initrd=inp.initrd_size is not None, kho=inp.kho,
            kexec_handover=inp.kexec_handover, rng_initialized=inp.rng_initialized,
            ima_buffer=inp.ima_kexec)
        assumptions.extend(plan.dtb.assumptions)
    except DtbError as exc:
        dtb_error = str(exc)
    else:
        dtb_error = None
    if inp.rng_initialized:
        assumptions.append("the RNG is initialised (\"random: crng init done\"): /chosen gets "
                           "kaslr-seed and rng-seed")

    def fail(kbuf: KexecBuf, errno: str, message: str) -> Arm64Plan:
        plan.tried = _tried(placer, kbuf)
        if placer.failed is None:
            placer.add(kbuf)
        plan.failed = placer.failed
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
        if inp.ima_size is None:
            exact = plan.exact = False
            assumptions.append("CONFIG_IMA_KEXEC: the IMA measurement list segment's size is "
                               "not known; one page assumed")
        ima = KexecBuf("ima", bufsz=0, memsz=inp.ima_size or PAGE_SIZE)
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

    if inp.image is not None and inp.image.loadable is not True:
        # image_probe() / image_load() refuse the file after IMA and KHO were placed
        if inp.image.loadable is False:
            plan.errno = "EINVAL"
            plan.message = inp.image.why_not
            plan.fix = inp.image.fix
            return plan
        plan.exact = False
        assumptions.append(f"the Image may be refused (EINVAL): {inp.image.why_not}")

    if dtb_error is not None:
        # load_other_segments() fails at every kernel position, so image_load() walks the
        # kernel through every hole and ends with EADDRNOTAVAIL
        plan.failed = Segment(name="dtb", bufsz=0, memsz=0, mem=None, buf_align=SZ_2M,
                              buf_min=0, buf_max=ULONG_MAX, top_down=True)
        plan.errno = "EADDRNOTAVAIL"
        plan.message = (f"Preparing for new dtb failed: {dtb_error}; image_load() then tries "
                        "every kernel position and fails with \"Could not find any suitable "
                        "kernel location!\"")
        return plan

    # mirrors image_load(), arch/arm64/kernel/kexec_image.c
    kernel = KexecBuf("kernel", bufsz=inp.kernel_size,
                      memsz=align_up(inp.image_size + inp.text_offset, PAGE_SIZE),
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
                why = (f"the kernel (memsz {align_up(kernel.memsz, PAGE_SIZE):#x}, "
                       f"2 MiB aligned) fits in no {kind}")
            return fail(kernel, "EADDRNOTAVAIL", why)
        kernel_segment = placer.add(kernel)
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
    plan.tried = []
    return plan


def _load_other_segments(placer: Placer, kernel: Segment, inp: Arm64PlanInput,
                         plan: Arm64Plan) -> str | None:
    """Mirror load_other_segments(), arch/arm64/kernel/machine_kexec_file.c.

    Returns None when the initrd and the DTB are placed, else the name of the segment that fit
    nowhere (after undoing this call's segments, as the kernel resets nr_segments).
    """
    orig_segments = len(placer.segments)
    buf_min = kernel.mem + kernel.memsz                     # not below the kernel

    def undo(name: str, kbuf: KexecBuf) -> str:
        plan.tried = _tried(placer, kbuf)
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

    dtb_len = plan.dtb.totalsize                               # type: ignore[union-attr]
    # "not across 2MB boundary"
    dtb = KexecBuf("dtb", bufsz=dtb_len, memsz=dtb_len, buf_align=SZ_2M, buf_min=buf_min,
                   buf_max=ULONG_MAX, top_down=True)
    if placer.fits(dtb) is None:
        return undo("dtb", dtb)
    placer.add(dtb)
    return None
