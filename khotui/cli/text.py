"""Plain-text output of `khotui status` and `khotui plan` for a terminal or a log.

Addresses in hex, sizes in binary units, one finding per line with its fix underneath.
"""

from __future__ import annotations

import sys
from typing import TextIO

from khotui.plan import HostStatus, PlanResult
from khotui.types import Finding
from khotui.units import size

MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def _findings(findings: list[Finding], out: TextIO) -> None:
    for f in findings:
        out.write(f"  [{MARK.get(f.status, f.status)}] {f.message}\n")
        if f.fix and f.status in ("warn", "fail"):
            out.write(f"         fix: {f.fix_for('cli')}\n")


def _scratch(status: HostStatus, out: TextIO) -> None:
    for r in status.kho.scratch:
        end = f"0x{r.end:x}" if r.size else "-"
        out.write(f"  [{r.index}] {r.name:8} 0x{r.addr:<12x} .. {end:<14} {size(r.size):>9}\n")


def _kho_line(status: HostStatus, out: TextIO, *, plan: bool) -> None:
    """The KHO line: on with its regions, on with the regions unknown (why, the fix), or off."""
    kho = status.kho
    if kho.enabled and not kho.scratch_known:
        out.write(f"KHO      on, scratch regions UNKNOWN: {kho.scratch_message}\n")
        if kho.scratch_fix:
            out.write(f"         fix: {kho.scratch_fix}\n")
    elif kho.enabled:
        fin = ""
        if kho.layout == "6.16-7.0" and not plan:
            fin = ", finalized" if kho.finalized else ", NOT finalized"
        out.write(f"KHO      on, {status.kho_abi or 'ABI unknown'}{fin}; "
                  f"{len(kho.scratch)} scratch regions:\n")
        _scratch(status, out)
        if kho.in_fdt is not None and not plan:
            out.write("         incoming handover present (kho/in): this kernel was booted through KHO\n")
    elif plan:
        out.write(f"KHO      off ({kho.off_message or 'no kho/ in debugfs'}): segments go to System RAM\n")
    else:
        out.write(f"KHO      off: {kho.off_message or 'no kho/ in debugfs'}\n")


def print_status(status: HostStatus, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    b, k = status.boot, status.kexec
    where = "live host" if status.live else f"snapshot {status.root}"
    out.write(f"khotui status: {where}\n")
    out.write(f"kernel   {b.osrelease or '?'} ({b.arch or 'unknown arch'})\n")
    out.write(f"cmdline  {b.cmdline}\n")
    _kho_line(status, out, plan=False)
    out.write(f"kexec    loaded={_yn(k.loaded)} crash_loaded={_yn(k.crash_loaded)} "
              f"load_disabled={_yn(k.kexec_load_disabled)} "
              f"limit={load_limit(k.kexec_load_limit_reboot)} lockdown={k.lockdown or '?'}\n")
    _luo_lines(status, out)
    for source, problem in status.errors.items():
        out.write(f"error    {source}: {problem}\n")
    out.write("checks\n")
    _findings(status.findings, out)


def _luo_lines(status: HostStatus, out: TextIO) -> None:
    """The Live Update Orchestrator: on/off and why, then each session with its holder."""
    luo = status.luo
    if luo.enabled is False:
        out.write(f"luo      off: {luo.off_message}\n")
    else:
        h = luo.device_holder
        holder = "nothing" if h is None else f"{h.comm or '?'} (pid {h.pid}, {h.unit or 'no unit'})"
        state = "on" if luo.enabled else f"unknown: {luo.off_message}"
        out.write(f"luo      {state}; /dev/liveupdate held by {holder}; "
                  f"{len(luo.sessions)} session{'' if len(luo.sessions) == 1 else 's'}\n")
        for s in luo.sessions:
            who = s.holder
            out.write(f"  session {s.name!r} pid {who.pid} {who.comm or '?'} {who.unit or 'no unit'}\n")
        if luo.note and not luo.complete:
            out.write(f"  ! {luo.note}\n")
    for label, blob in (("outgoing", luo.outgoing), ("incoming", luo.incoming)):
        if blob is None:
            continue
        if blob.source == "blob":
            out.write(f"  {label} LUO blob: {blob.ser.compatible}, live update "
                      f"#{blob.ser.liveupdate_num}\n")
        elif blob.source == "outgoing":
            out.write(f"  {label} LUO blob: {blob.ser.compatible}, live update "
                      f"#{blob.ser.liveupdate_num} (the outgoing number minus one: the kernel "
                      "freed kho/in's copy at boot)\n")
        else:
            out.write(f"  {label} LUO blob: arrived, live update number unknown (the kernel "
                      "freed kho/in's copy at boot; its log line \"luo: Retrieved live update "
                      "data\" has it)\n")


def load_limit(limit: int | None) -> str:
    """`kernel.kexec_load_limit_reboot` as the kernel means it (kernel/kexec_core.c,
    kexec_load_permitted(), Linux 6.6+): -1 unlimited, N loads left (0: none, EPERM); None when
    the file was not read (a kernel before 6.6 has no limit, or the snapshot lacks the file)."""
    if limit is None:
        return "unknown"
    if limit < 0:
        return "unlimited"
    return str(limit)


def _yn(value: object) -> str:
    return "?" if value is None else ("yes" if value else "no")


def print_plan(result: PlanResult, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    st = result.status
    where = "live host" if st.live else f"snapshot {st.root}"
    out.write(f"khotui plan (dry run, nothing is loaded): {where}, {result.arch}\n")
    out.write(f"kernel   {result.request.kernel}: {result.kernel.format}"
              f"{', ' + result.kernel.version if result.kernel.version else ''}\n")
    if result.initrd is not None:
        out.write(f"initrd   {result.request.initrd}: {result.initrd.format}, "
                  f"{size(result.initrd.size)}\n")
    out.write(f"cmdline  {result.cmdline}\n")
    _kho_line(st, out, plan=True)
    segs = result.segments()
    if segs:
        out.write(f"\n  {'segment':12} {'mem':>14} {'memsz':>10} {'bufsz':>10}  region\n")
        for s in segs:
            mem = f"0x{s.mem:x}" if s.mem is not None else "-"
            out.write(f"  {s.name:12} {mem:>14} {f'0x{s.memsz:x}':>10} {f'0x{s.bufsz:x}':>10}"
                      f"  {s.region or ('fits nowhere' if result.fits is False else 'unknown')}\n")
    out.write("\nchecks\n")
    _findings(result.findings, out)
    if result.notes:
        out.write("notes\n")
        for n in result.notes:
            out.write(f"  - {n}\n")
    if result.assumptions:
        out.write("assumptions (guessed inputs: what, why, how to provide it)\n")
        for a in result.assumptions:
            out.write(f"  - {a}\n")
    out.write(f"\nprediction: {result.exactness}\n")
    if result.would_succeed:
        inexact = " (placement not known: see notes)" if result.fits is None else ""
        out.write(f"verdict: the load would succeed{inexact}\n")
    else:
        why = f" ({result.errno})" if result.errno else ""
        out.write(f"verdict: the load would FAIL{why}\n")

