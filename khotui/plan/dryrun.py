"""The dry run: what `kexec_file_load` would do with this kernel, initrd and command line.

`plan_load(root, request)` has three steps, and only the first two touch anything outside:

1. read: the host status (khotui.plan.status, unless the caller passes the one it has), the
   kernel and initrd (khotui.image.inspect, on the descriptors the load will use when given);
2. read: `read_plan_inputs()`, the one further read, of what only a plan needs: the running
   kernel's purgatory (x86_64, khotui.host.running_image) and flattened device tree (arm64,
   /sys/firmware/fdt), and what depends on the chosen files (the next kernel's build config,
   /boot/config-<release>; who may rewrite the files);
3. plan, pure: `dry_run()` fills the placement inputs from those values, runs the placement
   simulator (khotui.placement) and the checks, and returns a `PlanResult`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass, field
from typing import BinaryIO

from khotui.cmdline import next_cmdline
from khotui.errors import KhotuiError, Problem
from khotui.fdt.kexec_dtb import DtbError, kexec_dtb_size
from khotui.host.boot import BootInfo, parse_config, read_running_fdt
from khotui.host.ima import ImaSegment, LoadFile, file_digest, predict_segment, read_ima
from khotui.host.kernellog import learnt_purgatory, read_kernel_log
from khotui.host.kernelmem import (
    EFI_MEMDESC_NOT_READ,
    MEMBLOCK_NOT_READ,
    PAGE_SIZE_NOT_READ,
    X86_PAGE_SIZE,
    DefaultCma,
    EfiMemdescSize,
    Memblock,
    PageSize,
    default_cma_area,
    read_efi_memdesc_size,
    read_memblock,
    read_page_size,
)
from khotui.host.ownership import fs_type, writable_by_others
from khotui.host.running_image import running_purgatory
from khotui.image.arm64 import Arm64Running, check_against
from khotui.image.inspect import InitrdInfo, KernelImage, inspect_initrd, inspect_kernel
from khotui.image.kho_abi import NextAbi, read_next_abi
from khotui.placement.arm64 import (
    Arm64PlanInput,
    free_ranges_from_memblock,
    free_ranges_in_ram,
    plan_arm64,
)
from khotui.placement.core import Plan, Segment
from khotui.placement.x86_64 import (
    EFI_MEMDESC_SIZE,
    X86Kernel,
    X86PlanInput,
    X86Setup,
    plan_x86_64,
)
from khotui.plan import checks
from khotui.plan.checks import CheckContext
from khotui.plan.status import HostStatus, context_for, host_status
from khotui.types import DEFAULT_PURGATORY, FAIL, DtbSize, Finding, JsonDict, Purgatory


@dataclass
class PlanRequest:
    """What the operator asks to load. Without `cmdline`, the current one is reused."""

    kernel: str
    initrd: str | None = None
    cmdline: str | None = None
    append: str | None = None
    no_cma: bool = False


@dataclass(frozen=True)
class NextConfig:
    """The new kernel's build config and where it came from (None, None: nothing says)."""

    config: dict[str, str] | None = None
    source: str | None = None


@dataclass(frozen=True)
class PlanInputs:
    """What `read_plan_inputs()` read for one request, beyond the host status."""

    next_config: NextConfig = NextConfig()
    file_warnings: list[Problem] = field(default_factory=list)
    # x86_64: the running kernel's purgatory segment (read from its image, a snapshot record or
    # /proc/kcore; else learnt from the kernel log; else assumed: khotui.host.running_image)
    purgatory: Purgatory = DEFAULT_PURGATORY
    # arm64: /sys/firmware/fdt, the base of the DTB segment; None when absent or unreadable
    running_fdt: bytes | None = None
    running_fdt_error: Problem | None = None
    # CONFIG_IMA_KEXEC: the IMA segment (khotui.host.ima), read after the files were opened
    ima_kexec: bool = False
    ima: ImaSegment | None = None
    ima_assumptions: tuple[str, ...] = ()     # guesses about the IMA segment
    ima_notes: tuple[str, ...] = ()           # what was read and how the segment is sized
    # the KHO compatibles the new kernel's image carries (read only when KHO is on)
    next_abi: NextAbi | None = None
    # arm64: the kernel log says "random: crng init done" (None: no readable log says so)
    rng_source: str | None = None
    # the running kernel's PAGE_SIZE (khotui.host.kernelmem: source None = 4K assumed)
    page_size: PageSize = PAGE_SIZE_NOT_READ
    # x86_64 EFI boot: efi.memmap.desc_size from /sys/kernel/boot_params/data
    efi_memdesc: EfiMemdescSize = EFI_MEMDESC_NOT_READ
    # KHO off: the memblock arrays (CONFIG_ARCH_KEEP_MEMBLOCK kernels walk them) and whether
    # the default CMA area, the one kexec_alloc_contig() tries first, exists
    memblock: Memblock = MEMBLOCK_NOT_READ
    default_cma: DefaultCma | None = None


@dataclass
class PlanResult:
    """The dry run: the host, the images, the command line, the predicted placement, checks."""

    status: HostStatus
    request: PlanRequest
    cmdline: str
    kernel: KernelImage
    initrd: InitrdInfo | None
    plan: Plan | None                 # None when not planned (see notes)
    findings: list[Finding]
    assumptions: list[str]            # guessed inputs only: what, why, how to provide it
    notes: list[str] = field(default_factory=list)   # how the plan was made: not guesses

    @property
    def exact(self) -> bool:
        """Every input the kernel uses was read from this host: a plan was made (a definite
        fit or refusal) and nothing was assumed."""
        return self.plan is not None and self.plan.fits is not None and not self.assumptions

    @property
    def exactness(self) -> str:
        """'exact ...' or 'not exact: ...' saying why: one wording for the CLI and the app."""
        if self.exact:
            return "exact (every input the kernel uses was read from this host)"
        n = len(self.assumptions)
        counted = f"{n} assumption{'s' * (n != 1)}"
        if self.plan is None or self.plan.fits is None:
            return "not exact: no placement could be predicted (see notes)" + (
                f"; {counted}" if n else "")
        return f"not exact: {counted}"

    @property
    def fits(self) -> bool | None:
        return None if self.plan is None else self.plan.fits

    @property
    def errno(self) -> str | None:
        return None if self.plan is None else self.plan.errno

    @property
    def failed(self) -> bool:
        return any(f.status == FAIL for f in self.findings)

    @property
    def would_succeed(self) -> bool:
        return not self.failed and self.fits is not False

    @property
    def arch(self) -> str | None:
        return self.status.boot.arch

    def segments(self) -> list[Segment]:
        return [] if self.plan is None else list(self.plan.segments)

    def as_dict(self) -> JsonDict:
        kho = self.status.kho_dict()
        return {
            "arch": self.arch,
            "kho": {"enabled": kho["enabled"], "abi": kho["abi"], "scratch": kho["scratch"],
                    "off_reason": kho["off_reason"], "scratch_unknown": kho["scratch_unknown"]},
            "kernel": {"path": self.request.kernel, "format": self.kernel.format,
                       "version": self.kernel.version, "size": self.kernel.size},
            "initrd": None if self.initrd is None else {
                "path": self.request.initrd, "format": self.initrd.format, "size": self.initrd.size},
            "cmdline": self.cmdline,
            "segments": [{"name": s.name, "mem": s.mem, "memsz": s.memsz, "bufsz": s.bufsz,
                          "region": s.region} for s in self.segments()],
            "fits": self.fits,
            "errno": self.errno,
            # the running kernel's PAGE_SIZE every memsz was rounded to (arm64: 4K/16K/64K)
            "page_size": None if self.plan is None else self.plan.page_size,
            "message": None if self.plan is None else self.plan.message,
            "would_succeed": self.would_succeed,
            "checks": [f.as_dict() for f in self.findings],
            "exact": self.exact,
            "assumptions": self.assumptions,
            "notes": self.notes,
        }


def plan_load(root: str | os.PathLike[str], request: PlanRequest, *,
              kernel_file: BinaryIO | int | None = None,
              initrd_file: BinaryIO | int | None = None,
              status: HostStatus | None = None) -> PlanResult:
    """The dry run. `kernel_file`/`initrd_file` let the load path inspect the very descriptors
    it will pass to the syscall; otherwise the paths are opened here. Unreadable files raise
    KhotuiError (exit 2); readable files the kernel would refuse become failing findings."""
    status = status or host_status(root)
    kernel = inspect_kernel(kernel_file if kernel_file is not None else request.kernel,
                            name=request.kernel)
    initrd = None
    if request.initrd:
        initrd = inspect_initrd(initrd_file if initrd_file is not None else request.initrd,
                                name=request.initrd)
    inputs = read_plan_inputs(status, request, kernel, kernel_file=kernel_file,
                              initrd_file=initrd_file)
    return dry_run(status, request, kernel, initrd, inputs)


# --- step 2: the one read that depends on the chosen files --------------------------------


def read_plan_inputs(status: HostStatus, request: PlanRequest, kernel: KernelImage, *,
                     kernel_file: BinaryIO | int | None = None,
                     initrd_file: BinaryIO | int | None = None) -> PlanInputs:
    warnings = _writable_warnings("kernel", request.kernel, kernel_file)
    if request.initrd:
        warnings += _writable_warnings("initrd", request.initrd, initrd_file)
    purgatory, fdt, fdt_error, rng = DEFAULT_PURGATORY, None, None, None
    sysroot = status.sysroot
    log = None
    efi = EfiMemdescSize(None, why="no EFI runtime map")
    if status.boot.arch == "x86_64":
        def from_log() -> Purgatory | None:
            try:
                return learnt_purgatory(read_kernel_log(sysroot))
            except KhotuiError:
                return None      # the purgatory is then assumed, and the plan says so
        # the running image, a snapshot's record, /proc/kcore, then the log (running_image.py)
        purgatory = running_purgatory(sysroot, from_log)
        if status.boot.efi_runtime_map_entries:
            efi = read_efi_memdesc_size(sysroot)
    elif status.boot.arch == "arm64":
        try:
            fdt = read_running_fdt(sysroot)
        except KhotuiError as exc:
            fdt_error = exc.problem
        try:
            log = read_kernel_log(sysroot)
        except KhotuiError:
            log = None      # the RNG state is then assumed, and the plan says so
        # _credit_init_bits(), drivers/char/random.c: logged once the crng is ready; the DTB
        # gets kaslr-seed and rng-seed only then (of_kexec_alloc_and_setup_fdt())
        if log is not None and "random: crng init done" in log:
            rng = "the kernel log says \"random: crng init done\""
    page_size = read_page_size(sysroot, status.boot)
    memblock, cma = Memblock(None, None, why="KHO is on"), None
    if not status.kho.enabled:
        if log is None:
            with contextlib.suppress(KhotuiError):
                log = read_kernel_log(sysroot)
        memblock = read_memblock(sysroot)
        cma = default_cma_area(sysroot, status.boot, running_fdt=fdt, kernel_log=log)
    ima_kexec, ima, ima_assumptions, ima_notes = read_ima_segment(
        status, request, kernel_file, initrd_file, page_size=page_size.size)
    next_abi = None
    if status.kho.enabled and kernel.loadable is not False:
        next_abi = read_next_abi(kernel_file if kernel_file is not None else request.kernel)
    return PlanInputs(next_config=read_next_config(status, kernel), file_warnings=warnings,
                      purgatory=purgatory, running_fdt=fdt, running_fdt_error=fdt_error,
                      ima_kexec=ima_kexec, ima=ima, ima_assumptions=ima_assumptions,
                      ima_notes=ima_notes, next_abi=next_abi, rng_source=rng,
                      page_size=page_size, efi_memdesc=efi, memblock=memblock, default_cma=cma)


def read_ima_segment(status: HostStatus, request: PlanRequest,
                     kernel_file: BinaryIO | int | None,
                     initrd_file: BinaryIO | int | None, *, page_size: int,
                     ) -> tuple[bool, ImaSegment | None, tuple[str, ...], tuple[str, ...]]:
    """(whether the kernel adds an IMA segment, its prediction, assumptions, notes). Read
    here, after the kernel and initrd were opened and inspected: their own FILE_CHECK measurements (as root,
    under a tcb-like policy) are in the list already, and the load re-plans on its open
    descriptors just before the syscall (LoadSession.recheck), so the list is read again then."""
    b = status.boot
    sysroot = status.sysroot
    configured = b.config_enabled("CONFIG_IMA_KEXEC")
    try:
        state = read_ima(sysroot)
    except KhotuiError as exc:
        return bool(configured), None, (f"IMA: {exc.problem.headline}",), ()
    assumed: list[str] = []
    notes: list[str] = []
    if configured is None:
        if not state.present:
            return False, None, ("CONFIG_IMA_KEXEC unknown (no /proc/config.gz or "
                                 "/boot/config-<release>) and no IMA in securityfs: assumed "
                                 "no IMA segment; provide the config to be sure",), ()
        assumed.append("CONFIG_IMA_KEXEC unknown (no /proc/config.gz or /boot/config-<release>) "
                     "and IMA is running: assumed on, so an IMA segment is placed first; "
                     "provide the config to be sure")
    elif not configured:
        return False, None, (), ()
    cmdline = request.cmdline if request.cmdline is not None else \
        next_cmdline(b.cmdline, request.append)
    files = [_load_file("kernel", request.kernel, kernel_file)]
    if request.initrd:
        files.append(_load_file("initrd", request.initrd, initrd_file))
    page = page_size
    seg = predict_segment(state, config=b.config if b.config_source else None,
                          running_cmdline=b.cmdline or "", files=files,
                          next_cmdline=cmdline.encode(), page_size=page,
                          mem_total_kb=b.meminfo.get("MemTotal"))
    assumed.extend(seg.assumptions)
    notes.extend(seg.notes)
    if seg.list_size is not None:
        added = ", ".join(f"{what} {n} B" for what, n in seg.added) or "nothing"
        notes.append(f"IMA segment {seg.memsz:#x} bytes: measurement list {seg.list_size} B "
                     f"(read now), staged {seg.staged_size} B, two 24-byte headers, extra; "
                     f"this load adds {added}")
    return not seg.dropped, seg, tuple(assumed), tuple(notes)


def _load_file(role: str, path: str, source: BinaryIO | int | None) -> LoadFile:
    """A file of the load as IMA will name and hash it."""
    fd: int | None = None
    if isinstance(source, int):
        fd = source
    elif source is not None:
        try:
            fd = source.fileno()
        except (OSError, ValueError, AttributeError):
            fd = None
    name = os.path.realpath(path)
    if fd is not None:
        with contextlib.suppress(OSError):
            # d_path() of the open file: what IMA records as the name
            name = os.readlink(f"/proc/self/fd/{fd}")
    try:
        st = os.fstat(fd) if fd is not None else os.stat(path)
        owner: int | None = st.st_uid
    except OSError:
        owner = None
    sig_len = 0
    try:
        xattr = os.getxattr(fd if fd is not None else path, "security.ima")
        # EVM_IMA_XATTR_DIGSIG (3), IMA_VERITY_DIGSIG (6): ima_eventsig_init() records it
        sig_len = len(xattr) if xattr[:1] in (b"\x03", b"\x06") else 0
    except OSError:
        pass

    def digest(algo: str) -> bytes | None:
        if fd is not None:
            return file_digest(fd, algo)
        try:
            with open(path, "rb") as fh:
                return file_digest(fh.fileno(), algo)
        except OSError:
            return None

    return LoadFile(role=role, name=name, fowner=owner, fsmagic=fs_type(fd, path),
                    sig_len=sig_len, digest=digest)


def read_next_config(status: HostStatus, kernel: KernelImage) -> NextConfig:
    """The new kernel's build config: /boot/config-<release>, else the running kernel's when
    the release is the same; NextConfig() when neither says."""
    release = kernel.version.split()[0] if kernel.version else None
    if not release:
        return NextConfig()
    sysroot = status.sysroot
    cfg_path = f"/boot/config-{release}"
    text = sysroot.read_optional_text(cfg_path) if sysroot.exists(cfg_path) else None
    if text is not None:
        return NextConfig(parse_config(text), sysroot.display(cfg_path))
    if release == status.boot.osrelease and status.boot.config_source:
        return NextConfig(status.boot.config, status.boot.config_source)
    return NextConfig()


def _writable_warnings(role: str, path: str, source: BinaryIO | int | None) -> list[Problem]:
    """When someone other than root could rewrite the file before the load (the rule `load`
    applies to the descriptors it opened, khotui.host.ownership)."""
    try:
        if isinstance(source, int):
            st = os.fstat(source)
        elif source is not None:
            st = os.fstat(source.fileno())
        else:
            st = os.stat(path)
    except (OSError, ValueError, AttributeError):
        return []   # an in-memory file, or gone: the inspection already said what it could
    return writable_by_others(role, path, st)


def cmdline_findings(status: HostStatus, cmdline: str,
                     kernel: KernelImage | None = None) -> list[Finding]:
    """The command-line checks of plan_load() alone (`cmdline-kho`, `cmdline-length`), for a
    live preview while the operator edits: the same rule, the same words. `kernel` is the
    inspected image when one is chosen: its cmdline_size and its config."""
    ctx = context_for(status)
    ctx.cmdline = cmdline
    if kernel is not None:
        ctx.kernel_cmdline_size = None if kernel.setup is None else kernel.setup.cmdline_size
        nxt = read_next_config(status, kernel)
        ctx.next_config, ctx.next_config_source = nxt.config, nxt.source
    return checks.check_cmdline(ctx)


# --- step 3: the pure plan ----------------------------------------------------------------


def dry_run(status: HostStatus, request: PlanRequest, kernel: KernelImage,
            initrd: InitrdInfo | None, inputs: PlanInputs) -> PlanResult:
    """The placement and the checks, from values already read: no file is touched here."""
    kernel = _against_running_kernel(status, kernel, inputs)
    if request.cmdline is not None:
        cmdline = request.cmdline
    else:
        cmdline = next_cmdline(status.boot.cmdline, request.append)

    # guesses go to `assumptions`, the rest to `notes`: `exact` derives from the first
    assumptions: list[str] = []
    notes: list[str] = []
    if request.cmdline is None:
        # a choice khotui makes (the documented default), not a guess about the host
        notes.append("command line: the running one (/proc/cmdline) without BOOT_IMAGE= "
                     "and initrd=" + (f", plus {request.append!r}" if request.append else ""))
    assumptions.extend(inputs.ima_assumptions)
    notes.extend(inputs.ima_notes)
    plan = _simulate(status, kernel, initrd, cmdline, request, inputs, assumptions, notes)
    if plan is not None and inputs.ima is not None and not inputs.ima.exact:
        plan.exact = False
    if plan is not None:
        assumptions.extend(a for a in plan.assumptions if a not in assumptions)
        notes.extend(n for n in plan.notes if n not in notes)

    ctx = context_for(status)
    _fill_plan_context(ctx, status, request, kernel, initrd, cmdline, plan, inputs)
    findings = checks.run_plan_checks(ctx)
    return PlanResult(status=status, request=request, cmdline=cmdline, kernel=kernel,
                      initrd=initrd, plan=plan, findings=findings, assumptions=assumptions,
                      notes=notes)


def _simulate(status: HostStatus, kernel: KernelImage, initrd: InitrdInfo | None, cmdline: str,
              request: PlanRequest, inputs: PlanInputs, assumptions: list[str],
              notes: list[str]) -> Plan | None:
    arch = status.boot.arch
    if status.kho.enabled and not status.kho.scratch_known:
        # the kernel confines every segment to kho_scratch[] and adds the array itself: any
        # placement without the regions would be wrong (the failing kho-scratch check says why)
        notes.append("no placement preview: KHO is on but its scratch regions are unknown ("
                     f"{status.kho.scratch_message})")
        return None
    # the KHO-off walk that needs /proc/iomem: System RAM on x86_64 (kexec_walk_resources());
    # arm64 and CONFIG_ARCH_KEEP_MEMBLOCK kernels walk memblock, from iomem only as a fallback
    memblock_walk = arch == "arm64" or bool(status.boot.config_enabled("CONFIG_ARCH_KEEP_MEMBLOCK"))
    needs_iomem = not (memblock_walk and inputs.memblock.memory is not None)
    if not status.kho.enabled and needs_iomem and (status.iomem is None or status.iomem.all_zero):
        # KHO off: the kernel walks System RAM from /proc/iomem. Without real addresses (a
        # non-root reader sees zeros) a simulation would "fail" against a map of zeros.
        why = ("/proc/iomem shows every address as 0 (it hides them from non-root readers)"
               if status.iomem is not None else "/proc/iomem could not be read")
        if memblock_walk:
            why = (f"the free memblock ranges could not be read ({inputs.memblock.why}), and "
                   f"{why}")
        notes.append(f"no placement preview: with KHO off the kernel places segments in "
                     f"System RAM, and {why}; run khotui as root for the preview")
        return None
    if arch == "x86_64":
        return plan_x86_64(x86_input(status, kernel, initrd, cmdline, request, inputs))
    if arch == "arm64":
        inp = arm64_input(status, kernel, initrd, cmdline, request, inputs, notes)
        return None if inp is None else plan_arm64(inp)
    notes.append(f"no placement model for architecture {arch or 'unknown'}: "
                       "khotui simulates x86_64 and arm64")
    return None


def x86_kernel(kernel: KernelImage) -> X86Kernel:
    """The kernel file as bzImage64_probe()/bzImage64_load() see it."""
    ok, errno, why = kernel.loadable_on("x86_64")
    hdr = kernel.setup
    setup = None if hdr is None else X86Setup(
        kern16_size=hdr.kern16_size, init_size=hdr.init_size,
        kernel_alignment=hdr.kernel_alignment, pref_address=hdr.pref_address,
        cmdline_size=hdr.cmdline_size)
    return X86Kernel(name=kernel.name, size=kernel.size, format=kernel.format, setup=setup,
                     errno=None if ok else (errno or "ENOEXEC"), why_not=None if ok else why)


def x86_input(status: HostStatus, kernel: KernelImage, initrd: InitrdInfo | None,
              cmdline: str, request: PlanRequest, inputs: PlanInputs) -> X86PlanInput:
    b = status.boot
    cfg = b.config_enabled
    memblock_free = None
    if inputs.memblock.memory is not None and inputs.memblock.reserved is not None:
        memblock_free = [(r.start, r.end) for r in free_ranges_from_memblock(
            inputs.memblock.memory, inputs.memblock.reserved, movable_node=_movable_node(b))]
    cma = inputs.default_cma
    return X86PlanInput(
        kho_enabled=status.kho.enabled,
        kernel=x86_kernel(kernel),
        cmdline=cmdline.encode(),
        initrd_size=None if initrd is None else initrd.size,
        scratch=list(status.kho.scratch),
        system_ram=[(r.start, r.end) for r in (status.iomem.system_ram() if status.iomem else [])
                    if not r.driver_managed],
        cma_total_kb=b.meminfo.get("CmaTotal"),
        no_cma=request.no_cma,
        efi_runtime_map_entries=b.efi_runtime_map_entries,
        efi_memdesc_size=inputs.efi_memdesc.size or EFI_MEMDESC_SIZE,
        efi_memdesc_source=inputs.efi_memdesc.source,
        efi_memdesc_why=inputs.efi_memdesc.why,
        default_cma=None if cma is None else cma.present,
        default_cma_why=None if cma is None else cma.why,
        memblock_free=memblock_free,
        memblock_why=inputs.memblock.why,
        config_kexec_handover=cfg("CONFIG_KEXEC_HANDOVER") is not False,
        config_ima_kexec=inputs.ima_kexec,
        ima_kexec_extra_kb=int(b.config.get("CONFIG_IMA_KEXEC_EXTRA_MEMORY_KB", "0") or 0)
        if b.config else 0,
        ima_memsz=None if inputs.ima is None else inputs.ima.memsz,
        config_dma_cma=cfg("CONFIG_DMA_CMA"),
        config_arch_keep_memblock=bool(cfg("CONFIG_ARCH_KEEP_MEMBLOCK")),
        mem_total_kb=b.meminfo.get("MemTotal"),
        purgatory=inputs.purgatory,
    )


def _movable_node(boot: BootInfo) -> bool:
    """`movable_node` on the command line makes for_each_free_mem_range() skip HOTPLUG memblock
    regions (should_skip_region(), mm/memblock.c), but only on kernels with
    CONFIG_MEMORY_HOTPLUG, where cmdline_parse_movable_node() (mm/memory_hotplug.c) exists."""
    return ("movable_node" in boot.cmdline_tokens()
            and boot.config_enabled("CONFIG_MEMORY_HOTPLUG") is not False)


def arm64_input(status: HostStatus, kernel: KernelImage, initrd: InitrdInfo | None,
                cmdline: str, request: PlanRequest, inputs: PlanInputs,
                notes: list[str]) -> Arm64PlanInput | None:
    """The arm64 placement input, with the DTB segment's size computed from the running FDT;
    None (and a note saying why: no plan, so not exact) when there is no Image header or no
    FDT."""
    image = kernel.arm64
    if image is None:
        return None
    fdt = inputs.running_fdt
    if fdt is None:
        if inputs.running_fdt_error is not None:
            notes.append(f"{inputs.running_fdt_error.headline}: the DTB segment's size "
                         "cannot be computed")
        else:
            notes.append("no /sys/firmware/fdt (root only, or an ACPI host): the DTB "
                         "segment's size cannot be computed")
        return None
    b = status.boot
    kho = status.kho.enabled
    kexec_handover = b.config_enabled("CONFIG_KEXEC_HANDOVER") is not False
    ima_kexec = inputs.ima_kexec
    cmd = cmdline.encode()
    dtb, dtb_error = arm64_dtb(fdt, cmdline=cmd, initrd=initrd is not None, kho=kho,
                               kexec_handover=kexec_handover, ima_kexec=ima_kexec,
                               page_size=inputs.page_size.size)
    free = []
    memblock = inputs.memblock
    exact_free = memblock.memory is not None and memblock.reserved is not None
    if not kho and memblock.memory is not None and memblock.reserved is not None:
        # kexec_walk_memblock(), kernel/kexec_file.c: arm64 always keeps memblock
        free = free_ranges_from_memblock(memblock.memory, memblock.reserved,
                                         movable_node=_movable_node(b))
    elif not kho and status.iomem is not None:
        ram = [r for r in status.iomem.resources if r.name == "System RAM"]
        free = free_ranges_in_ram([(r.start, r.end) for r in ram],
                                  [(c.start, c.end) for r in ram for c in r.children])
    page = inputs.page_size
    cma = inputs.default_cma
    if cma is None:       # not read: the old rule, any CMA area counts
        cma = DefaultCma(bool(b.meminfo.get("CmaTotal")), "CmaTotal is not 0")
    elif cma.present is False and b.meminfo.get("CmaTotal") and not kho:
        notes.append(f"no default CMA area ({cma.why}): the CmaTotal of "
                     f"{b.meminfo['CmaTotal']} kB is other areas, which "
                     "kexec_alloc_contig() never uses")
    return Arm64PlanInput(
        # the header parser saw only the head of the file; the segment's bufsz is the whole file
        kernel_size=kernel.size,
        image_size=image.image_size or 0,
        text_offset=image.text_offset or 0,
        image_loadable=image.loadable,
        image_why_not=image.why_not,
        image_fix=image.fix,
        dtb=dtb,
        dtb_error=dtb_error,
        initrd_size=None if initrd is None else initrd.size,
        cmdline=cmd,
        kho=kho,
        scratch=list(status.kho.scratch),
        free_ranges=free,
        free_ranges_exact=exact_free,
        cma=cma.present is not False and not request.no_cma,
        cma_why=f"exists: {cma.why}" if cma.present else f"may exist: {cma.why}",
        ima_kexec=ima_kexec,
        ima_size=None if inputs.ima is None else inputs.ima.memsz,
        rng_source=inputs.rng_source,
        page_size=page.size,
        page_size_guess=page.assumption(),
    )


def arm64_dtb(fdt: bytes, *, cmdline: bytes | None, initrd: bool, kho: bool,
              kexec_handover: bool = True, ima_kexec: bool = False,
              rng_initialized: bool = True,
              page_size: int = X86_PAGE_SIZE) -> tuple[DtbSize | None, str | None]:
    """(DtbSize, None), or (None, why) when of_kexec_alloc_and_setup_fdt() would fail."""
    try:
        return kexec_dtb_size(fdt, cmdline=cmdline, initrd=initrd, kho=kho,
                              kexec_handover=kexec_handover, rng_initialized=rng_initialized,
                              ima_buffer=ima_kexec, page_size=page_size), None
    except DtbError as exc:
        return None, str(exc)


def _against_running_kernel(status: HostStatus, kernel: KernelImage,
                            inputs: PlanInputs) -> KernelImage:
    """The arm64 Image with image_load()'s checks redone against the running kernel's page
    size, once it was read (the file inspection alone assumes 4K): for the placement and for
    the kernel-image check alike."""
    if kernel.arm64 is None or status.boot.arch != "arm64" or inputs.page_size.source is None:
        return kernel
    image = check_against(kernel.arm64, Arm64Running(
        page_size=inputs.page_size.size,
        big_endian=status.boot.config_enabled("CONFIG_CPU_BIG_ENDIAN") is True))
    if image is kernel.arm64:
        return kernel
    return dataclasses.replace(kernel, arm64=image, loadable=image.loadable,
                               why_not=image.why_not)


def _fill_plan_context(ctx: CheckContext, status: HostStatus, request: PlanRequest,
                       kernel: KernelImage, initrd: InitrdInfo | None, cmdline: str,
                       plan: Plan | None, inputs: PlanInputs) -> None:
    ctx.planning = True
    ctx.kernel_path = request.kernel
    ctx.file_warnings = list(inputs.file_warnings)
    ctx.kernel_format = kernel.format
    ctx.kernel_arch = kernel.arch
    ok, _errno, why = kernel.loadable_on(status.boot.arch or kernel.arch or "")
    ctx.kernel_loadable = ok
    ctx.kernel_why_not = why
    ctx.kernel_version = kernel.version
    ctx.kernel_signed = kernel.signed
    setup = kernel.setup
    ctx.kernel_cmdline_size = None if setup is None else setup.cmdline_size
    ctx.kernel_size = kernel.size
    if setup is not None and setup.syssize:
        ctx.kernel_expected_size = setup.kern16_size + setup.syssize * 16
    ctx.initrd_path = request.initrd
    if initrd is not None:
        ctx.initrd_format = initrd.format
    ctx.cmdline = cmdline
    ctx.next_config, ctx.next_config_source = inputs.next_config.config, inputs.next_config.source
    if inputs.next_abi is not None:
        ctx.next_kho_compatibles = inputs.next_abi.compatibles
        ctx.next_abi_how, ctx.next_abi_error = inputs.next_abi.how, inputs.next_abi.error
    if plan is not None:
        ctx.plan_fits = plan.fits
        ctx.plan_errno = plan.errno
        ctx.plan_failure = plan.message
        ctx.plan_failure_fix = plan.fix
