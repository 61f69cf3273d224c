"""Overview: the host readers for the panels, `report.host_status()` for the findings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from khotui.tui.viewmodel import (KexecSummary, KhoSummary, Overview, Problem, _guard,
                                  finding_rows, scratch_rows, worst)

if TYPE_CHECKING:
    from khotui.tui.viewmodel import Source


def overview(src: "Source") -> Overview:
    ov = Overview(source=src.label, hostname=src.hostname())
    boot = _guard(lambda: _boot(src))
    if isinstance(boot, Problem):
        ov.boot_problem = boot
    else:
        ov.release, ov.arch, ov.cmdline = boot.osrelease, boot.arch, boot.cmdline
    kho = _guard(lambda: _kho(src))
    if isinstance(kho, Problem):
        ov.kho = ov.scratch = kho
    else:
        state, ov.kho = kho
        ov.scratch = scratch_rows(state.scratch)
    ov.kexec = _guard(lambda: _kexec(src))
    ov.system = _guard(src._system)
    ov.findings = _guard(lambda: finding_rows(_findings(src)))
    if isinstance(ov.findings, list):
        ov.worst = worst(ov.findings)
    return ov


def _boot(src: "Source"):
    from khotui.host.boot import read_boot
    return read_boot(src.sysroot)


def _kho(src: "Source"):
    from khotui.host.kho import read_kho
    state = read_kho(src.sysroot)
    abi = None
    if state.out_fdt or state.in_fdt:
        abi = _guard(lambda: _abi(state))
        if isinstance(abi, Problem):
            abi = None
    summary = KhoSummary(enabled=state.enabled, abi=abi, layout=state.layout,
                         finalized=state.finalized, kho_booted=bool(state.kho_booted() if callable(state.kho_booted) else state.kho_booted),
                         off_message=state.off_message, fix=state.fix,
                         notes=list(state.scratch_notes))
    return state, summary


def _abi(state) -> str | None:  # noqa: ANN001
    from khotui.fdt import decode_kho_fdt
    data = state.out_fdt or state.in_fdt
    return decode_kho_fdt(data, state.out_fdt_path or state.in_fdt_path or "fdt").compatible


def _kexec(src: "Source") -> KexecSummary:
    from khotui.host.state import read_kexec_state
    k = read_kexec_state(src.sysroot)
    return KexecSummary(loaded=k.loaded, crash_loaded=k.crash_loaded, crash_size=k.crash_size,
                        load_limit_reboot=k.kexec_load_limit_reboot,
                        load_disabled=k.kexec_load_disabled,
                        lockdown=k.lockdown or k.lockdown_reason)


def _findings(src: "Source"):
    from khotui import report
    status = report.host_status(src.root)
    src._status = status
    findings = getattr(status, "findings", None)
    if findings is None and hasattr(status, "as_dict"):
        findings = status.as_dict().get("findings", [])
    return findings or []
