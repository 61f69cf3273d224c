"""The host status: everything `khotui status` shows of a host.

`host_status(root)` reads a live host or a snapshot once: the boot (cmdline, release, config,
meminfo), KHO (debugfs, decoded FDTs), the kexec state and /proc/iomem. Each source is read
independently: one that is missing or unreadable becomes a `Problem` on that part (and a
finding), not a failure of the whole, so an operator without root still gets a partial view
that says what needs root. What only a plan
needs (the kernel log, the running FDT, the next kernel's config) is read by
khotui.plan.dryrun.read_plan_inputs(), so the Overview's refresh stays cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from khotui.errors import KhotuiError, Problem
from khotui.fdt import KhoFdt, decode_kho_fdt
from khotui.host.boot import BootInfo, read_boot
from khotui.host.ima import read_secure_boot, secure_boot_from_log
from khotui.host.iomem import Iomem, read_iomem
from khotui.host.kernellog import read_kernel_log
from khotui.host.kho import KhoState, read_kho
from khotui.host.luo import LuoState, read_luo
from khotui.host.state import KexecState, read_kexec_state
from khotui.host.sysroot import Sysroot
from khotui.plan import checks
from khotui.plan.checks import CheckContext
from khotui.types import FAIL, WARN, Finding, JsonDict


@dataclass
class HostStatus:
    """What `khotui status` reports about one host (live, snapshot or demo)."""

    root: str
    live: bool
    boot: BootInfo
    kho: KhoState
    kexec: KexecState
    iomem: Iomem | None
    kho_out: KhoFdt | None = None     # kho/out/fdt decoded, when readable
    kho_in: KhoFdt | None = None      # kho/in/fdt decoded, after a KHO boot
    errors: dict[str, Problem] = field(default_factory=dict)   # source -> what went wrong
    findings: list[Finding] = field(default_factory=list)
    # read once here, so that context_for() (used by the pure dry_run) reads nothing
    secure_boot: bool | None = None   # the SecureBoot EFI variable, else the kernel log
    kho_booted: bool = False          # this kernel booted through KHO
    luo: LuoState = field(default_factory=LuoState)   # the Live Update Orchestrator

    @property
    def sysroot(self) -> Sysroot:
        return Sysroot(self.root)

    @property
    def kho_abi(self) -> str | None:
        fdt = self.kho_out or self.kho_in
        return None if fdt is None else fdt.compatible

    @property
    def failed(self) -> bool:
        return any(f.status == FAIL for f in self.findings)

    def kho_dict(self) -> JsonDict:
        out: JsonDict = {
            "enabled": self.kho.enabled,
            "abi": self.kho_abi,
            "layout": self.kho.layout,
            "finalized": self.kho.finalized,
            "off_reason": None if self.kho.enabled else self.kho.off_message,
            "fix": None if self.kho.enabled else self.kho.fix,
            # null, never [], when KHO is on and kho_scratch[] could not be read
            "scratch": ([r.as_dict() for r in self.kho.scratch]
                        if self.kho.scratch_known or not self.kho.enabled else None),
            "scratch_unknown": None if self.kho.scratch_known or not self.kho.enabled else {
                "reason": self.kho.scratch_reason, "message": self.kho.scratch_message,
                "fix": self.kho.scratch_fix},
            "evidence": list(self.kho.evidence),
            "incoming": self.kho.in_fdt is not None,
        }
        if self.kho_out is not None:
            out["out_fdt"] = _fdt_summary(self.kho_out, self.kho.out_fdt)
        if self.kho_in is not None:
            out["in_fdt"] = _fdt_summary(self.kho_in, self.kho.in_fdt)
        out["sub_fdts"] = sorted(self.kho.out_sub_fdts)
        out["in_sub_fdts"] = sorted(self.kho.in_sub_fdts)
        return out

    def as_dict(self) -> JsonDict:
        return {
            "root": self.root,
            "live": self.live,
            "arch": self.boot.arch,
            "kernel": {"release": self.boot.osrelease, "cmdline": self.boot.cmdline,
                       "config_source": self.boot.config_source},
            "kho": self.kho_dict(),
            "kexec": _kexec_dict(self.kexec),
            "luo": self.luo.as_dict(),
            "iomem_readable": self.iomem is not None and not self.iomem.all_zero,
            # the text an operator reads (path, message, fix), as `status` has always given it
            "errors": {source: str(problem) for source, problem in self.errors.items()},
            "checks": [f.as_dict() for f in self.findings],
        }


def _fdt_summary(kho_fdt: KhoFdt, raw: bytes | None) -> JsonDict:
    tree = kho_fdt.tree
    return {
        "compatible": kho_fdt.compatible,
        "size": len(raw) if raw is not None else None,
        "totalsize": tree.header.totalsize,
        "truncated": bool(tree.truncated),
        "preserved_memory_map": kho_fdt.preserved_memory_map,
        "subtrees": [{"name": s.name, "preserved_data": s.preserved_data,
                      "blob_size": s.blob_size, "fdt": s.legacy_fdt} for s in kho_fdt.subtrees],
        "warnings": list(kho_fdt.warnings),
    }


def _kexec_dict(k: KexecState) -> JsonDict:
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
    errors: dict[str, Problem] = {}

    try:
        boot = read_boot(sysroot)
    except KhotuiError as exc:
        errors["boot"] = exc.problem
        boot = BootInfo(cmdline="", osrelease=None, version=None, arch=None, arch_source=None)
    try:
        kho = read_kho(sysroot)
    except KhotuiError as exc:
        errors["kho"] = exc.problem
        kho = KhoState(enabled=False, off_reason="error", off_message=exc.message, fix=exc.fix)
    try:
        kexec = read_kexec_state(sysroot)
    except KhotuiError as exc:
        errors["kexec"] = exc.problem
        kexec = KexecState(None, None, None, None, None, None, None, [], None, None, None, None)
    iomem: Iomem | None
    try:
        iomem = read_iomem(sysroot)
    except KhotuiError as exc:
        errors["iomem"] = exc.problem
        iomem = None

    status = HostStatus(root=str(root), live=sysroot.is_live, boot=boot, kho=kho, kexec=kexec,
                        iomem=iomem, errors=errors)
    _decode_kho(status)
    status.luo = read_luo(sysroot, kho_enabled=kho.enabled, out_blobs=kho.out_sub_fdts,
                          in_blobs=kho.in_sub_fdts, cmdline=boot.cmdline, config=boot.config,
                          config_source=boot.config_source)
    if status.luo.problem is not None:
        errors["luo"] = status.luo.problem
    status.secure_boot = _secure_boot(status)
    status.kho_booted = kho_booted(status)
    status.findings = checks.run_status_checks(context_for(status))
    for key in ("kho_out", "kho_in"):
        problem = status.errors.get(key)
        if problem is not None:
            # the handover FDT is for the operator's eyes; a bad one does not stop a load
            status.findings.insert(1, Finding(f"{key.replace('_', '-')}-fdt", WARN,
                                              problem.headline,
                                              "compare with a fresh read; report it if it persists"))
    return status


def _decode_kho(status: HostStatus) -> None:
    kho = status.kho
    if kho.out_fdt is not None:
        try:
            status.kho_out = decode_kho_fdt(kho.out_fdt, kho.out_fdt_path or "kho_out")
        except KhotuiError as exc:
            status.errors["kho_out"] = exc.problem
    if kho.in_fdt is not None:
        try:
            status.kho_in = decode_kho_fdt(kho.in_fdt, kho.in_fdt_path or "kho_in")
        except KhotuiError as exc:
            status.errors["kho_in"] = exc.problem


KHO_DIR = "/sys/kernel/debug/kho"
KHO_IN_DIR = f"{KHO_DIR}/in"


def _secure_boot(status: HostStatus) -> bool | None:
    """The SecureBoot EFI variable, else what the kernel logged at boot."""
    sysroot = status.sysroot
    found = read_secure_boot(sysroot)
    if found is None and status.boot.config_enabled("CONFIG_IMA_ARCH_POLICY"):
        try:
            found = secure_boot_from_log(read_kernel_log(sysroot))
        except KhotuiError:
            found = None
    return found


def kho_booted(status: HostStatus) -> bool:
    """This kernel booted through KHO (kho/in, or kho_populate()'s "KHO: exec from" line)."""
    if status.kho_in is not None or status.sysroot.exists(KHO_IN_DIR):
        return True
    if not status.kho.enabled or status.sysroot.exists(KHO_DIR):
        # a visible kho/ without in/ answers it: the log (all of /dev/kmsg on a live host) is
        # read only when debugfs cannot say, not on every status and Overview refresh
        return False
    try:
        return "KHO: exec from" in (read_kernel_log(status.sysroot) or "")
    except KhotuiError:
        return False


def context_for(status: HostStatus) -> CheckContext:
    """The checks' view of a host: plain values only."""
    k, b = status.kexec, status.boot
    kho_error = status.errors.get("kho")
    iomem_error = status.errors.get("iomem")
    return CheckContext(
        live=status.live,
        arch=b.arch,
        osrelease=b.osrelease,
        config=b.config,
        config_source=b.config_source,
        kho_enabled=status.kho.enabled,
        kho_off_reason=status.kho.off_message,
        kho_off_fix=status.kho.fix,
        kho_scratch_unknown=status.kho.scratch_message,
        kho_scratch_unknown_fix=status.kho.scratch_fix,
        kho_abi=status.kho_abi,
        kho_layout=status.kho.layout,
        kho_finalized=status.kho.finalized,
        kho_scratch_count=len(status.kho.scratch),
        kho_error=None if kho_error is None else kho_error.headline,
        kho_scratch=list(status.kho.scratch),
        kho_scratch_source=status.sysroot.display("/sys/kernel/debug/kho/out/scratch_phys"),
        system_ram=([(r.start, r.end) for r in status.iomem.system_ram() if not r.driver_managed]
                    or None) if status.iomem is not None and not status.iomem.all_zero else None,
        iomem_error=None if iomem_error is None else iomem_error.headline,
        is_root=None if k.euid is None else k.euid == 0,
        has_cap_sys_boot=k.cap_sys_boot,
        kexec_load_disabled=None if k.kexec_load_disabled is None else int(k.kexec_load_disabled),
        load_limit_reboot=k.kexec_load_limit_reboot,
        lockdown=k.lockdown,
        secure_boot=status.secure_boot,
        kho_booted=status.kho_booted,
        kexec_loaded=k.loaded,
        iomem_all_zero=bool(status.iomem and status.iomem.all_zero),
        luo_enabled=status.luo.enabled,
        luo_requested=status.luo.requested,
        luo_device_holder=status.luo.device_holder,
        luo_sessions=list(status.luo.sessions),
        luo_scan_complete=status.luo.complete and not status.luo.unreadable,
    )
