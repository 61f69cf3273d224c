"""Generic segment placement, exactly as Linux 7.3 does it for `kexec_file_load`.

One `Placer` per simulated load: the image loader calls `add()` once per `kexec_add_buffer()`,
in the kernel's order, and each segment is placed against the segments placed before it. Two
walks exist:

* KHO on, normal image: only the scratch regions, in `kho_scratch[]` order (lowmem, global,
  nodes); the first region with a hole wins (`kho_locate_mem_hole()` → `kho_walk_scratch()`,
  kernel/liveupdate/kexec_handover.c). None: EADDRNOTAVAIL.
* KHO off: the top-level `System RAM` resources of /proc/iomem, highest first for top-down
  buffers (`walk_system_ram_res_rev()`), lowest first for bottom-up ones
  (`kexec_locate_mem_hole()`, kernel/kexec_file.c). The default CMA area, when the kernel has
  one and `KEXEC_FILE_NO_CMA` is not passed, is tried before that walk; the page allocator then
  picks the address, which no preview can know (the per-architecture planner says so).

Within a region the hole search is `locate_mem_hole_top_down()` or `_bottom_up()`.

The page size is an input of each `Placer`, not a constant: kexec_add_buffer() rounds memsz up
to the running kernel's PAGE_SIZE and raises buf_align to it, and the hole walks step by it. An
arm64 kernel built with 16K or 64K pages therefore gives the same addresses but other memsz
values than a 4K one (the KHO scratch array: 0x1000 → 0x10000).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from khotui.types import DtbSize

# x86_64's only page size, and the default of a Placer; arm64 passes the running kernel's own
# (CONFIG_ARM64_{4K,16K,64K}_PAGES, khotui.host.kernelmem.read_page_size()).
PAGE_SIZE = 4096
ULONG_MAX = (1 << 64) - 1


def align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def align_down(value: int, align: int) -> int:
    return value // align * align


@dataclass(frozen=True)
class Region:
    """A range the kernel searches for a hole: `[start, end]`, end inclusive as in `struct resource`."""

    start: int
    end: int
    name: str

    @property
    def size(self) -> int:
        return self.end - self.start + 1


@dataclass
class KexecBuf:
    """The request one `kexec_add_buffer()` call makes (the fields of `struct kexec_buf`)."""

    name: str
    bufsz: int
    memsz: int
    buf_align: int = PAGE_SIZE
    buf_min: int = 0
    buf_max: int = ULONG_MAX
    top_down: bool = True


@dataclass
class Segment:
    """A placed (or unplaceable) segment; `mem` is None when it fits nowhere or cannot be known."""

    name: str
    bufsz: int
    memsz: int
    mem: int | None
    buf_align: int
    buf_min: int
    buf_max: int
    top_down: bool
    region: str | None = None

    @property
    def end(self) -> int | None:
        """Last byte (inclusive), or None when not placed."""
        return None if self.mem is None else self.mem + self.memsz - 1

    def as_dict(self) -> dict[str, int | str | bool | None]:
        return {
            "name": self.name,
            "mem": self.mem,
            "memsz": self.memsz,
            "bufsz": self.bufsz,
            "region": self.region,
            "buf_align": self.buf_align,
            "buf_min": self.buf_min,
            "buf_max": self.buf_max,
            "top_down": self.top_down,
        }


@dataclass
class Placer:
    """Places segments one after another, like the kernel filling `image->segment[]`.

    `regions` are tried in order. `kho` selects the KHO walk (array order, for both directions);
    otherwise `regions` are the System RAM resources in ascending address order and are walked
    highest-first for top-down buffers, lowest-first for bottom-up ones.
    """

    regions: list[Region]
    kho: bool
    segments: list[Segment] = field(default_factory=list)
    failed: Segment | None = None
    page_size: int = PAGE_SIZE        # the running kernel's PAGE_SIZE

    def request(self, kbuf: KexecBuf) -> Segment:
        """The segment `kbuf` asks for, not placed yet: the first lines of kexec_add_buffer(),
        kernel/kexec_file.c: `kbuf->memsz = ALIGN(kbuf->memsz, PAGE_SIZE); kbuf->buf_align =
        max(kbuf->buf_align, PAGE_SIZE);`."""
        return Segment(name=kbuf.name, bufsz=kbuf.bufsz,
                       memsz=align_up(kbuf.memsz, self.page_size), mem=None,
                       buf_align=max(kbuf.buf_align, self.page_size), buf_min=kbuf.buf_min,
                       buf_max=kbuf.buf_max, top_down=kbuf.top_down)

    def add(self, kbuf: KexecBuf) -> Segment:
        """Mirror of `kexec_add_buffer()`, kernel/kexec_file.c: align, then find a hole."""
        segment = self.request(kbuf)
        if self.failed is None:
            for region in self._walk_order(kbuf.top_down):
                mem = self._locate_in(region, segment)
                if mem is not None:
                    segment.mem = mem
                    segment.region = region.name
                    break
            else:
                self.failed = segment
        self.segments.append(segment)
        return segment

    def fits(self, kbuf: KexecBuf) -> int | None:
        """Where `kbuf` would go now, without recording it (for arm64's retry loop)."""
        probe = self.request(kbuf)
        for region in self._walk_order(kbuf.top_down):
            mem = self._locate_in(region, probe)
            if mem is not None:
                return mem
        return None

    def _walk_order(self, top_down: bool) -> list[Region]:
        if self.kho or not top_down:
            return self.regions
        return list(reversed(self.regions))

    def _locate_in(self, res: Region, seg: Segment) -> int | None:
        """`locate_mem_hole_callback()`: skip regions that are too small or out of bounds."""
        if res.size < seg.memsz:
            return None
        if res.end < seg.buf_min or res.start > seg.buf_max:
            return None
        if seg.top_down:
            return self._top_down(res, seg)
        return self._bottom_up(res, seg)

    def _overlaps(self, start: int, end: int) -> bool:
        """`kimage_is_destination_range()`, kernel/kexec_core.c: inclusive ends."""
        for other in self.segments:
            if other.mem is None:
                continue
            if end >= other.mem and start <= other.mem + other.memsz - 1:
                return True
        return False

    def _top_down(self, res: Region, seg: Segment) -> int | None:
        # mirrors locate_mem_hole_top_down(), kernel/kexec_file.c
        t_end = min(res.end, seg.buf_max)
        t_start = t_end - seg.memsz + 1
        while True:
            t_start = align_down(t_start, seg.buf_align)
            if t_start < res.start or t_start < seg.buf_min:
                return None
            t_end = t_start + seg.memsz - 1
            if self._overlaps(t_start, t_end):
                t_start -= self.page_size
                continue
            return t_start

    def _bottom_up(self, res: Region, seg: Segment) -> int | None:
        # mirrors locate_mem_hole_bottom_up(), kernel/kexec_file.c
        t_start = max(res.start, seg.buf_min)
        while True:
            t_start = align_up(t_start, seg.buf_align)
            t_end = t_start + seg.memsz - 1
            if t_end > res.end or t_end > seg.buf_max:
                return None
            if self._overlaps(t_start, t_end):
                t_start += self.page_size
                continue
            return t_start


# --- the result: one shape for every architecture -----------------------------------------


@dataclass(frozen=True)
class RegionTried:
    """A region the failing segment was tried against: with the largest hole left in it
    (x86_64) or the reason locate_mem_hole_callback() passed it over (arm64)."""

    name: str
    start: int
    size: int
    largest_hole: int | None = None   # largest free range left after the segments placed before
    reason: str | None = None         # why the segment did not fit there

    def as_dict(self) -> dict[str, int | str | None]:
        return {"name": self.name, "start": self.start, "size": self.size,
                "largest_hole": self.largest_hole, "reason": self.reason}


@dataclass(frozen=True)
class Retry:
    """arm64: a kernel position image_load() gave up because `failed` fit nowhere above it."""

    kernel_mem: int
    failed: str

    def as_dict(self) -> dict[str, int | str]:
        return {"kernel_mem": self.kernel_mem, "failed": self.failed}


@dataclass
class Plan:
    """The predicted outcome of one `kexec_file_load`: segments in the kernel's order, or the
    segment that fits nowhere and the regions it was tried in. The same shape on every
    architecture; `retries` and `dtb` are filled only by arm64's image_load() model."""

    arch: str
    segments: list[Segment]
    fits: bool | None                 # None: cannot be known (CMA, missing host data)
    errno: str | None = None          # 'EADDRNOTAVAIL', 'EINVAL', 'ENOEXEC', ... or None
    failed_segment: str | None = None  # the segment whose kexec_add_buffer() failed (last)
    regions_tried: list[RegionTried] = field(default_factory=list)
    message: str | None = None        # what goes wrong, for the operator
    fix: str | None = None
    # guessed inputs only: each says what was assumed, why, and how to provide it; the plan is
    # exact only when this stays empty (khotui.plan.dryrun.PlanResult.exact)
    assumptions: list[str] = field(default_factory=list)
    # how the kernel's rule was applied, for the operator: facts and choices, not guesses
    notes: list[str] = field(default_factory=list)
    exact: bool = True                # False: an input was approximated (see assumptions)
    walk: str = ""                    # 'kho-scratch', 'system-ram', 'memblock', 'cma'
    cmdline_len: int | None = None    # what the syscall gets, with the NUL
    retries: list[Retry] = field(default_factory=list)
    dtb: DtbSize | None = None
    page_size: int = PAGE_SIZE        # the running kernel's PAGE_SIZE the plan was made with

    def segment(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def as_dict(self) -> dict[str, object]:
        return {
            "arch": self.arch,
            "segments": [s.as_dict() for s in self.segments],
            "fits": self.fits,
            "errno": self.errno,
            "failed_segment": self.failed_segment,
            "regions_tried": [r.as_dict() for r in self.regions_tried],
            "message": self.message,
            "fix": self.fix,
            "assumptions": list(self.assumptions),
            "notes": list(self.notes),
            "exact": self.exact and not self.assumptions,
            "walk": self.walk,
            "cmdline_len": self.cmdline_len,
            "retries": [r.as_dict() for r in self.retries],
            "dtb": None if self.dtb is None else self.dtb.as_dict(),
            "page_size": self.page_size,
        }
