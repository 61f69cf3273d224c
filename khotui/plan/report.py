"""The facade the CLI and the TUI share: read a host, decode it, check it, plan a load.

`host_status(root)` reads everything `khotui status` shows; `plan_load(root, request)` adds the
kernel, initrd and command line, the placement simulation and the checks that need them. Both
return plain results with `as_dict()` for JSON. Each source is read independently: one that is
missing or unreadable becomes an error on that part (and a finding), not a failure of the whole,
so an operator without root still gets a partial view that says what needs root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from khotui.plan import checks
from khotui.plan.checks import CheckContext, Finding
from khotui.cmdline import next_cmdline
from khotui.errors import KhotuiError, Problem
from khotui.host.ownership import writable_by_others
from khotui.host.boot import BootInfo, read_boot
from khotui.host.iomem import Iomem, read_iomem
from khotui.host.kho import KhoState, read_kho
from khotui.host.state import KexecState, read_kexec_state
from khotui.host.sysroot import Sysroot


@dataclass
class HostStatus:
    """What `khotui status` reports about one host (live, snapshot or demo)."""

    root: str
    live: bool
    boot: BootInfo
    kho: KhoState
    kexec: KexecState
    iomem: Iomem | None
    kho_out: Any = None               # khotui.fdt.KhoFdt of kho/out/fdt, when readable
    kho_in: Any = None                # khotui.fdt.KhoFdt of kho/in/fdt, after a KHO boot
    errors: dict[str, str] = field(default_factory=dict)   # source -> message
    findings: list[Finding] = field(default_factory=list)

    @property
    def sysroot(self) -> Sysroot:
        return Sysroot(self.root)

    @property
    def kho_abi(self) -> str | None:
        fdt = self.kho_out or self.kho_in
        return getattr(fdt, "compatible", None)

    @property
    def failed(self) -> bool:
        return any(f.status == checks.FAIL for f in self.findings)

    def kho_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "enabled": self.kho.enabled,
            "abi": self.kho_abi,
            "layout": self.kho.layout,
            "finalized": self.kho.finalized,
            "off_reason": None if self.kho.enabled else self.kho.off_message,
            "fix": None if self.kho.enabled else self.kho.fix,
            "scratch": [{"index": r.index, "kind": r.kind, "node": r.node, "addr": r.addr,
                         "size": r.size} for r in self.kho.scratch],
            "incoming": self.kho.in_fdt is not None,
        }
        if self.kho_out is not None:
            out["out_fdt"] = _fdt_summary(self.kho_out, self.kho.out_fdt)
        if self.kho_in is not None:
            out["in_fdt"] = _fdt_summary(self.kho_in, self.kho.in_fdt)
        out["sub_fdts"] = sorted(self.kho.out_sub_fdts)
        out["in_sub_fdts"] = sorted(self.kho.in_sub_fdts)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "live": self.live,
            "arch": self.boot.arch,
            "kernel": {"release": self.boot.osrelease, "cmdline": self.boot.cmdline,
                       "config_source": self.boot.config_source},
            "kho": self.kho_dict(),
            "kexec": _kexec_dict(self.kexec),
            "iomem_readable": self.iomem is not None and not self.iomem.all_zero,
            "errors": self.errors,
            "checks": [f.as_dict() for f in self.findings],
        }


def _fdt_summary(kho_fdt: Any, raw: bytes | None) -> dict[str, Any]:
    tree = kho_fdt.tree
    truncated = getattr(tree, "truncated", None)
    return {
        "compatible": kho_fdt.compatible,
        "size": len(raw) if raw is not None else None,
        "totalsize": getattr(getattr(tree, "header", None), "totalsize", None),
        "truncated": bool(truncated),
        "preserved_memory_map": kho_fdt.preserved_memory_map,
        "subtrees": [{"name": s.name, "preserved_data": s.preserved_data,
                      "blob_size": s.blob_size, "fdt": s.legacy_fdt} for s in kho_fdt.subtrees],
        "warnings": list(kho_fdt.warnings),
    }


def _kexec_dict(k: KexecState) -> dict[str, Any]:
    return {
        "loaded": k.loaded,
        "crash_loaded": k.crash_loaded,
        "crash_size": k.crash_size,
        "kexec_load_disabled": k.kexec_load_disabled,
        "kexec_load_limit_reboot": k.kexec_load_limit_reboot,
        "kexec_load_limit_panic": k.kexec_load_limit_panic,
        "lockdown": k.lockdown,
    }


def _looks_like_sysroot(sysroot: Sysroot) -> bool:
    return sysroot.exists("/proc") or sysroot.exists("/sys")


def host_status(root: str | os.PathLike[str] = "/") -> HostStatus:
    """Read and check one host. Raises KhotuiError only when `root` is not a host at all."""
    sysroot = Sysroot(root)
    if not sysroot.is_live and not _looks_like_sysroot(sysroot):
        raise KhotuiError("not a host snapshot: it has neither proc/ nor sys/", path=str(root),
                          fix="give a directory made by `khotui snapshot` (or a capture's sysroot)")
    errors: dict[str, str] = {}

    try:
        boot = read_boot(sysroot)
    except KhotuiError as exc:
        errors["boot"] = str(exc)
        boot = BootInfo(cmdline="", osrelease=None, version=None, arch=None, arch_source=None)
    try:
        kho = read_kho(sysroot)
    except KhotuiError as exc:
        errors["kho"] = str(exc)
        kho = KhoState(enabled=False, off_reason="error", off_message=exc.message, fix=exc.fix)
    try:
        kexec = read_kexec_state(sysroot)
    except KhotuiError as exc:
        errors["kexec"] = str(exc)
        kexec = KexecState(None, None, None, None, None, None, None, [], None, None, None, None)
    iomem: Iomem | None
    try:
        iomem = read_iomem(sysroot)
    except KhotuiError as exc:
        errors["iomem"] = str(exc)
        iomem = None

    status = HostStatus(root=str(root), live=sysroot.is_live, boot=boot, kho=kho, kexec=kexec,
                        iomem=iomem, errors=errors)
    _decode_kho(status)
    status.findings = checks.run_status_checks(context_for(status))
    for key in ("kho_out", "kho_in"):
        if key in status.errors:
            # the handover FDT is for the operator's eyes; a bad one does not stop a load
            status.findings.insert(1, Finding(f"{key.replace('_', '-')}-fdt", checks.WARN,
                                              status.errors[key].split("\n")[0],
                                              "compare with a fresh read; report it if it persists"))
    return status


def _decode_kho(status: HostStatus) -> None:
    from khotui.fdt import decode_kho_fdt

    kho = status.kho
    for attr, raw, path in (("kho_out", kho.out_fdt, kho.out_fdt_path),
                            ("kho_in", kho.in_fdt, kho.in_fdt_path)):
        if raw is None:
            continue
        try:
            setattr(status, attr, decode_kho_fdt(raw, path or attr))
        except KhotuiError as exc:
            status.errors[attr] = str(exc)


def context_for(status: HostStatus) -> CheckContext:
    """The checks' view of a host: plain values only."""
    k, b = status.kexec, status.boot
    kho_error = status.errors.get("kho")
    return CheckContext(
        live=status.live,
        arch=b.arch,
        osrelease=b.osrelease,
        config=b.config,
        config_source=b.config_source,
        kho_enabled=status.kho.enabled,
        kho_off_reason=status.kho.off_message,
        kho_off_fix=status.kho.fix,
        kho_abi=status.kho_abi,
        kho_layout=status.kho.layout,
        kho_finalized=status.kho.finalized,
        kho_scratch_count=len(status.kho.scratch),
        kho_error=kho_error,
        kho_scratch=[(r.index, r.kind, r.addr, r.size) for r in status.kho.scratch],
        kho_scratch_source=status.sysroot.display("/sys/kernel/debug/kho/out/scratch_phys"),
        system_ram=([(r.start, r.end) for r in status.iomem.system_ram() if not r.driver_managed]
                    or None) if status.iomem is not None and not status.iomem.all_zero else None,
        iomem_error=status.errors.get("iomem"),
        is_root=None if k.euid is None else k.euid == 0,
        has_cap_sys_boot=k.cap_sys_boot,
        kexec_load_disabled=None if k.kexec_load_disabled is None else int(k.kexec_load_disabled),
        load_limit_reboot=k.kexec_load_limit_reboot,
        lockdown=k.lockdown,
        kexec_loaded=k.loaded,
        iomem_all_zero=bool(status.iomem and status.iomem.all_zero),
    )


# --- planning a load ----------------------------------------------------------------------


@dataclass
class PlanRequest:
    """What the operator asks to load. Without `cmdline`, the current one is reused."""

    kernel: str
    initrd: str | None = None
    cmdline: str | None = None
    append: str | None = None
    no_cma: bool = False


@dataclass
class PlanResult:
    """The dry run: the host, the images, the command line, the predicted placement, checks."""

    status: HostStatus
    request: PlanRequest
    cmdline: str
    kernel: Any                       # khotui.image.inspect.KernelImage
    initrd: Any                       # khotui.image.inspect.InitrdInfo | None
    plan: Any                         # x86_64 Plan or Arm64Plan; None when not planned
    findings: list[Finding]
    assumptions: list[str]

    @property
    def fits(self) -> bool | None:
        return None if self.plan is None else self.plan.fits

    @property
    def errno(self) -> str | None:
        return None if self.plan is None else self.plan.errno

    @property
    def failed(self) -> bool:
        return any(f.status == checks.FAIL for f in self.findings)

    @property
    def would_succeed(self) -> bool:
        return not self.failed and self.fits is not False

    @property
    def arch(self) -> str | None:
        return self.status.boot.arch

    def segments(self) -> list[Any]:
        return [] if self.plan is None else list(self.plan.segments)

    def as_dict(self) -> dict[str, Any]:
        kho = self.status.kho_dict()
        return {
            "arch": self.arch,
            "kho": {"enabled": kho["enabled"], "abi": kho["abi"], "scratch": kho["scratch"]},
            "kernel": {"path": self.request.kernel, "format": getattr(self.kernel, "format", None),
                       "version": getattr(self.kernel, "version", None),
                       "size": getattr(self.kernel, "size", None)},
            "initrd": None if self.initrd is None else {
                "path": self.request.initrd, "format": self.initrd.format, "size": self.initrd.size},
            "cmdline": self.cmdline,
            "segments": [{"name": s.name, "mem": s.mem, "memsz": s.memsz, "bufsz": s.bufsz,
                          "region": s.region} for s in self.segments()],
            "fits": self.fits,
            "errno": self.errno,
            "message": getattr(self.plan, "message", None),
            "would_succeed": self.would_succeed,
            "checks": [f.as_dict() for f in self.findings],
            "assumptions": self.assumptions,
        }


def plan_load(root: str | os.PathLike[str], request: PlanRequest, *,
              kernel_file: BinaryIO | int | None = None,
              initrd_file: BinaryIO | int | None = None,
              status: HostStatus | None = None) -> PlanResult:
    """The dry run. `kernel_file`/`initrd_file` let the load path inspect the very descriptors
    it will pass to the syscall; otherwise the paths are opened here. Unreadable files raise
    KhotuiError (exit 2); readable files the kernel would refuse become failing findings."""
    from khotui.image.inspect import inspect_initrd, inspect_kernel

    status = status or host_status(root)
    kernel = inspect_kernel(kernel_file if kernel_file is not None else request.kernel,
                            name=request.kernel)
    initrd = None
    if request.initrd:
        initrd = inspect_initrd(initrd_file if initrd_file is not None else request.initrd,
                                name=request.initrd)
    if request.cmdline is not None:
        cmdline = request.cmdline
    else:
        cmdline = next_cmdline(status.boot.cmdline, request.append)

    assumptions: list[str] = []
    if request.cmdline is None:
        assumptions.append("command line: the running one (/proc/cmdline) without BOOT_IMAGE= "
                           "and initrd=" + (f", plus {request.append!r}" if request.append else ""))
    plan = _simulate(status, kernel, initrd, cmdline, request, assumptions)
    if plan is not None:
        assumptions.extend(a for a in plan.assumptions if a not in assumptions)

    ctx = context_for(status)
    _fill_plan_context(ctx, status, request, kernel, initrd, cmdline, plan,
                       kernel_file=kernel_file, initrd_file=initrd_file)
    findings = checks.run_plan_checks(ctx)
    return PlanResult(status=status, request=request, cmdline=cmdline, kernel=kernel,
                      initrd=initrd, plan=plan, findings=findings, assumptions=assumptions)


def _simulate(status: HostStatus, kernel: Any, initrd: Any, cmdline: str,
              request: PlanRequest, assumptions: list[str]) -> Any:
    arch = status.boot.arch
    if not status.kho.enabled and (status.iomem is None or status.iomem.all_zero):
        # KHO off: the kernel walks System RAM from /proc/iomem. Without real addresses (a
        # non-root reader sees zeros) a simulation would "fail" against a map of zeros.
        why = ("/proc/iomem shows every address as 0 (it hides them from non-root readers)"
               if status.iomem is not None else "/proc/iomem could not be read")
        assumptions.append(f"no placement preview: with KHO off the kernel places segments in "
                           f"System RAM, and {why}; run khotui as root for the preview")
        return None
    if arch == "x86_64":
        return _simulate_x86(status, kernel, initrd, cmdline, request)
    if arch == "arm64":
        return _simulate_arm64(status, kernel, initrd, cmdline, request, assumptions)
    assumptions.append(f"no placement model for architecture {arch or 'unknown'}: "
                       "khotui simulates x86_64 and arm64")
    return None


def _purgatory(status: HostStatus):
    from khotui.host.kernellog import purgatory_from_log, read_kernel_log
    try:
        log = read_kernel_log(status.sysroot)
    except KhotuiError:
        log = None
    return purgatory_from_log(log)


def _simulate_x86(status: HostStatus, kernel: Any, initrd: Any, cmdline: str,
                  request: PlanRequest) -> Any:
    from khotui.placement.x86_64 import X86PlanInput, plan_x86_64

    b = status.boot
    cfg = b.config_enabled
    inp = X86PlanInput(
        kho_enabled=status.kho.enabled,
        kernel=kernel,
        cmdline=cmdline.encode(),
        initrd_size=None if initrd is None else initrd.size,
        scratch=[(r.index, r.kind, r.node, r.addr, r.size) for r in status.kho.scratch],
        system_ram=[(r.start, r.end) for r in (status.iomem.system_ram() if status.iomem else [])
                    if not r.driver_managed],
        cma_total_kb=b.meminfo.get("CmaTotal"),
        no_cma=request.no_cma,
        efi_runtime_map_entries=b.efi_runtime_map_entries,
        config_kexec_handover=cfg("CONFIG_KEXEC_HANDOVER") is not False,
        config_ima_kexec=bool(cfg("CONFIG_IMA_KEXEC")),
        config_dma_cma=cfg("CONFIG_DMA_CMA"),
        config_arch_keep_memblock=bool(cfg("CONFIG_ARCH_KEEP_MEMBLOCK")),
        mem_total_kb=b.meminfo.get("MemTotal"),
        purgatory=_purgatory(status),
    )
    return plan_x86_64(inp)


def _simulate_arm64(status: HostStatus, kernel: Any, initrd: Any, cmdline: str,
                    request: PlanRequest, assumptions: list[str]) -> Any:
    from khotui.host.boot import read_running_fdt
    from khotui.placement.arm64 import Arm64PlanInput, free_ranges_from_iomem, plan_arm64

    image = getattr(kernel, "arm64", None)
    if image is None:
        return None
    fdt = read_running_fdt(status.sysroot)
    if fdt is None:
        assumptions.append("no /sys/firmware/fdt (root only, or an ACPI host): the DTB segment's "
                           "size cannot be computed")
        return None
    b = status.boot
    free = []
    if not status.kho.enabled and status.iomem is not None:
        free = free_ranges_from_iomem(status.sysroot.read_text("/proc/iomem"))
    inp = Arm64PlanInput.for_image(
        image,
        fdt=fdt,
        initrd_size=None if initrd is None else initrd.size,
        cmdline=cmdline.encode(),
        kho=status.kho.enabled,
        scratch=[(r.addr, r.size, _scratch_name(r)) for r in status.kho.scratch],
        free_ranges=free,
        free_ranges_exact=False,
        cma=bool(b.meminfo.get("CmaTotal")) and not request.no_cma,
        kexec_handover=b.config_enabled("CONFIG_KEXEC_HANDOVER") is not False,
        ima_kexec=bool(b.config_enabled("CONFIG_IMA_KEXEC")),
    )
    # the header parser saw only the head of the file; the segment's bufsz is the whole file
    inp.kernel_size = kernel.size
    return plan_arm64(inp)


def _scratch_name(region: Any) -> str:
    if region.kind == "node":
        return f"node{region.node}" if region.node is not None else f"node?{region.index - 2}"
    return region.kind


def _writable_warnings(role: str, path: str, source: Any) -> list[Problem]:
    """When someone other than root could rewrite the file before the load (the rule `load`
    applies to the descriptors it opened, khotui.host.ownership)."""
    try:
        if isinstance(source, int):
            st = os.fstat(source)
        elif source is not None and hasattr(source, "fileno"):
            st = os.fstat(source.fileno())
        else:
            st = os.stat(path)
    except (OSError, ValueError, AttributeError):
        return []   # an in-memory file, or gone: the inspection already said what it could
    return writable_by_others(role, path, st)


def next_kernel_config(status: HostStatus, kernel: Any) -> tuple[dict[str, str] | None, str | None]:
    """The new kernel's build config and where it came from: /boot/config-<release>, else the
    running kernel's when the release is the same; (None, None) when neither says."""
    version = getattr(kernel, "version", None)
    release = version.split()[0] if version else None
    if not release:
        return None, None
    cfg_path = f"/boot/config-{release}"
    text = status.sysroot.read_optional_text(cfg_path) if status.sysroot.exists(cfg_path) else None
    if text is not None:
        from khotui.host.boot import parse_config
        return parse_config(text), status.sysroot.display(cfg_path)
    if release == status.boot.osrelease and status.boot.config_source:
        return status.boot.config, status.boot.config_source
    return None, None


def cmdline_findings(status: HostStatus, cmdline: str, kernel: Any = None) -> list[Finding]:
    """The command-line checks of plan_load() alone (`cmdline-kho`, `cmdline-length`), for a
    live preview while the operator edits: the same rule, the same words. `kernel` is the
    inspected image (khotui.image.inspect) when one is chosen: its cmdline_size and its config."""
    ctx = context_for(status)
    ctx.cmdline = cmdline
    if kernel is not None:
        ctx.kernel_cmdline_size = getattr(getattr(kernel, "setup", None), "cmdline_size", None)
        ctx.next_config, ctx.next_config_source = next_kernel_config(status, kernel)
    return checks.check_cmdline(ctx)


def _fill_plan_context(ctx: CheckContext, status: HostStatus, request: PlanRequest, kernel: Any,
                       initrd: Any, cmdline: str, plan: Any, *, kernel_file: Any = None,
                       initrd_file: Any = None) -> None:
    ctx.planning = True
    ctx.kernel_path = request.kernel
    ctx.file_warnings = (_writable_warnings("kernel", request.kernel, kernel_file)
                         + (_writable_warnings("initrd", request.initrd, initrd_file)
                            if request.initrd else []))
    ctx.kernel_format = kernel.format
    ctx.kernel_arch = kernel.arch
    ok, _errno, why = kernel.loadable_on(status.boot.arch or kernel.arch or "")
    ctx.kernel_loadable = ok
    ctx.kernel_why_not = why
    ctx.kernel_version = kernel.version
    ctx.kernel_signed = getattr(kernel, "signed", None)
    setup = getattr(kernel, "setup", None)
    ctx.kernel_cmdline_size = getattr(setup, "cmdline_size", None)
    ctx.kernel_size = kernel.size
    if setup is not None and getattr(setup, "syssize", 0):
        ctx.kernel_expected_size = setup.kern16_size + setup.syssize * 16
    ctx.initrd_path = request.initrd
    if initrd is not None:
        ctx.initrd_format = initrd.format
    ctx.cmdline = cmdline
    ctx.next_config, ctx.next_config_source = next_kernel_config(status, kernel)
    if plan is not None:
        ctx.plan_fits = plan.fits
        ctx.plan_errno = plan.errno
        ctx.plan_failure = getattr(plan, "message", None)
        ctx.plan_failure_fix = getattr(plan, "fix", None)

