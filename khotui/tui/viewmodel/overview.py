"""Overview: `khotui.plan.host_status()` (what `khotui status` prints) plus the system summary."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from khotui.tui.viewmodel import (
    KexecSummary,
    KhoSummary,
    LuoSummary,
    Overview,
    Problem,
    _guard,
    worst,
)

if TYPE_CHECKING:
    from khotui.host.luo import LuoState
    from khotui.host.state import KexecState
    from khotui.plan.status import HostStatus
    from khotui.tui.viewmodel import Source


def overview(src: Source) -> Overview:
    ov = Overview(source=src.label, hostname=src.hostname())
    ov.system = _guard(src._system)
    status = _guard(lambda: _status(src))
    if isinstance(status, Problem):
        ov.boot_problem = ov.kho = ov.scratch = ov.kexec = ov.findings = status
        return ov
    errors = status.errors
    b = status.boot
    if "boot" in errors:
        ov.boot_problem = errors["boot"]
    else:
        ov.release, ov.arch, ov.cmdline = b.osrelease, b.arch, b.cmdline
    if "kho" in errors:
        ov.kho = ov.scratch = errors["kho"]
    else:
        ov.kho = kho_summary(status)
        k = status.kho
        ov.scratch = (Problem(f"KHO is on, scratch regions unknown: {k.scratch_message}",
                              fix=k.scratch_fix)
                      if k.enabled and not k.scratch_known else list(k.scratch))
    ov.kexec = errors["kexec"] if "kexec" in errors else kexec_summary(status.kexec)
    ov.luo = luo_summary(status.luo)
    ov.findings = list(status.findings)
    ov.worst = worst(f.status for f in ov.findings)
    return ov


def _status(src: Source) -> HostStatus:
    # the Overview is the refresh: the other screens share what it read
    return src.status(refresh=True)


def kho_summary(status: HostStatus) -> KhoSummary:
    k = status.kho
    notes = list(k.scratch_notes)
    fdt = status.kho_out or status.kho_in
    if fdt is not None and fdt.warnings:
        # the first warning says what matters (e.g. the truncation); the explorer has the rest
        notes.append(fdt.warnings[0])
        if len(fdt.warnings) > 1:
            notes.append(f"{len(fdt.warnings) - 1} more FDT warnings on 3 Handover")
    for key in ("kho_out", "kho_in"):
        problem = status.errors.get(key)
        if problem is not None:
            notes.append(problem.headline)
    ok, failed = receipt_verdict(status)
    return KhoSummary(enabled=k.enabled, abi=status.kho_abi, layout=k.layout,
                      finalized=k.finalized, kho_booted=k.kho_booted, off_message=k.off_message,
                      fix=k.fix, notes=notes,
                      scratch_unknown=None if k.scratch_known or not k.enabled else k.scratch_message,
                      scratch_fix=None if k.scratch_known or not k.enabled else k.scratch_fix,
                      receipt_ok=ok, receipt_failed=failed)


def receipt_verdict(status: HostStatus, path: str | None = None) -> tuple[bool | None,
                                                                          tuple[str, ...]]:
    """`khotui verify`'s verdict on the live host after a KHO boot, when the load left a
    receipt (`path`, default the load's default): (None, ()) when there is nothing to say. A
    snapshot's receipt is not on this machine, so none is looked for there. An unusable
    receipt is said as the failed check "receipt" (`khotui verify` says why)."""
    if not status.live or not status.kho.kho_booted:
        return None, ()
    from khotui.errors import KhotuiError
    from khotui.load import receipt, verify
    where = path or receipt.default_path()
    if not os.path.lexists(where):
        return None, ()
    try:
        verdict = verify.verify(receipt.read(where), status)
    except KhotuiError:
        return False, ("receipt",)
    return verdict.ok, tuple(c.id for c in verdict.failed)


def luo_summary(luo: LuoState) -> LuoSummary:
    holder = luo.device_holder
    who = None
    if holder is not None:
        unit = f", {holder.unit}" if holder.unit else ""
        who = f"{holder.comm or '?'} (pid {holder.pid}{unit})"
    note = luo.problem.headline if luo.problem is not None else (
        luo.note if not luo.complete else None)
    return LuoSummary(enabled=luo.enabled, off_message=luo.off_message, holder=who,
                      sessions=[s.name for s in luo.sessions],
                      outgoing_number=None if luo.outgoing is None else luo.outgoing.ser.liveupdate_num,
                      incoming_number=None if luo.incoming is None else luo.incoming.ser.liveupdate_num,
                      note=note)


def kexec_summary(k: KexecState) -> KexecSummary:
    return KexecSummary(loaded=k.loaded, crash_loaded=k.crash_loaded, crash_size=k.crash_size,
                        load_limit_reboot=k.kexec_load_limit_reboot,
                        load_disabled=k.kexec_load_disabled,
                        lockdown=k.lockdown or k.lockdown_reason)
