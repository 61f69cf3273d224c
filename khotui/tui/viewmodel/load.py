"""Prepare, plan, load: installed kernels, the cmdline diff, `report.plan_load()`, the load flow.

The load goes through `khotui.loadflow` with the `Syscalls` object the app was given (a fake in
tests; `kexec.real_syscalls()` only on the live host, only after the typed confirmation). On a
snapshot or the demo nothing is ever called: `load()` answers with the plan as a dry run.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from khotui.errors import KhotuiError
from khotui.tui.viewmodel import (Choices, CmdlinePreview, FindingRow, KernelChoice, LoadResult,
                                  Plan, PlanInput, Problem, _get, _guard, finding_rows,
                                  scratch_rows, segment_rows)

if TYPE_CHECKING:
    from khotui.tui.viewmodel import Source


# -- prepare -----------------------------------------------------------------------------------


def choices(src: "Source") -> Choices:
    from khotui.cmdline import next_cmdline
    from khotui.host.boot import read_boot
    boot = _guard(lambda: read_boot(src.sysroot))
    current = "" if isinstance(boot, Problem) else (boot.cmdline or "")
    kernels = _guard(lambda: _kernels(src))
    boot_dir = src.sysroot.path("/boot")
    start = str(boot_dir if boot_dir.is_dir() else src.root)
    return Choices(kernels=kernels, current_cmdline=current,
                   suggested_cmdline=next_cmdline(current), browse_root=start)


def _kernels(src: "Source") -> list[KernelChoice]:
    from khotui.host.kernels import find_kernels
    out = []
    for k in find_kernels(src.sysroot):
        out.append(KernelChoice(
            path=str(src.sysroot.path(k.kernel_path)), version=k.version, size=k.size,
            mtime=k.mtime, running=k.running,
            initrd=str(src.sysroot.path(k.initrd_path)) if k.initrd_path else None,
            source="BLS " + os.path.basename(k.entry_path) if k.source == "bls" and k.entry_path
            else "/boot", title=k.title))
    return out


_limit_cache: dict[tuple[str, float], int | None] = {}


def _cmdline_limit(kernel: str | None) -> int | None:
    """What the image accepts, NUL included: header cmdline_size minus the room bzImage64_load()
    keeps for elfcorehdr= (kexec.MAX_ELFCOREHDR_STR_LEN). None when the image does not say."""
    if not kernel:
        return None
    try:
        key = (kernel, os.stat(kernel).st_mtime)
    except OSError:
        return None
    if key not in _limit_cache:
        from khotui import kexec
        from khotui.image import inspect_kernel
        try:
            img = inspect_kernel(kernel)
        except KhotuiError:
            _limit_cache[key] = None
        else:
            size = getattr(img.setup, "cmdline_size", None) if img.setup else None
            _limit_cache[key] = size - kexec.MAX_ELFCOREHDR_STR_LEN if size else None
    return _limit_cache[key]


def cmdline_preview(src: "Source", current: str, new: str, kernel: str | None) -> CmdlinePreview:
    from khotui.cmdline import diff_cmdline
    d = diff_cmdline(current, new)
    limit = _cmdline_limit(kernel)
    warnings: list[str] = []
    kho_on = _kho_enabled(src)
    if kho_on and (d.kho is None or d.kho.lower() not in ("1", "y", "on", "yes", "true")):
        # the same rule as checks.check_cmdline(); the plan repeats it as a finding
        warnings.append(("kho=off" if d.kho is not None else "no kho=on")
                        + ": the new kernel would ignore the handed-over memory "
                        "(add kho=on unless the new kernel enables KHO by default)")
    return CmdlinePreview(removed=d.removed, boot_only_removed=d.boot_only_removed,
                          added=d.added, duplicates=d.duplicates, kho=d.kho,
                          length=len(new.encode()) + 1, limit=limit, warnings=warnings)


def _kho_enabled(src: "Source") -> bool:
    cached = getattr(src, "_kho_enabled", None)
    if cached is None:
        try:
            from khotui.host.kho import read_kho
            cached = bool(read_kho(src.sysroot).enabled)
        except (ImportError, KhotuiError):
            cached = False
        src._kho_enabled = cached  # type: ignore[attr-defined]
    return cached


# -- plan --------------------------------------------------------------------------------------


def plan(src: "Source", request: PlanInput) -> Plan:
    result = _guard(lambda: _plan_load(src, request))
    if isinstance(result, Problem):
        return Plan(request=request, would_succeed=False, verdict=result.message,
                    segments=[], regions=[], findings=[FindingRow("plan", "fail", result.message,
                                                                  result.fix)])
    ok = bool(result.would_succeed)
    findings = finding_rows(result.findings)
    segments = segment_rows(result.segments())
    regions = scratch_rows(result.status.kho.scratch)
    message = getattr(result.plan, "message", None)
    if ok:
        where = "the scratch regions" if result.status.kho.enabled else "System RAM"
        verdict = f"the load would succeed: {len(segments)} segments fit in {where}"
    else:
        verdict = _verdict(ok, findings, message)
    return Plan(request=request, would_succeed=ok, verdict=verdict, segments=segments,
                regions=regions, findings=findings, notes=list(result.assumptions),
                handle=result)


def _plan_load(src: "Source", request: PlanInput) -> Any:
    from khotui import report
    status = src._status if src._status is not None else report.host_status(src.root)
    src._status = status
    return report.plan_load(src.root, report.PlanRequest(kernel=request.kernel,
                                                         initrd=request.initrd,
                                                         cmdline=request.cmdline),
                            status=status)


def _verdict(ok: bool, findings: list[FindingRow], message: str | None = None) -> str:
    if ok:
        return "the load would succeed"
    failing = [f for f in findings if f.status == "fail"]
    n = f" ({len(failing)} failing checks)" if len(failing) > 1 else ""
    first = failing[0].message if failing else (message or "see the checks")
    return f"the load would fail{n}: {first}"


# -- load / unload -----------------------------------------------------------------------------


def open_files(src: "Source", plan: Plan) -> tuple[Any, list[tuple[str, str, int | None]]]:
    """Open and hash the files once: the confirmation shows these hashes, the load uses
    these descriptors (loadflow.open_for_load)."""
    from khotui.loadflow import open_for_load
    files = open_for_load(plan.request.kernel, plan.request.initrd)
    return files, [(f.path, f.sha256, f.size) for f in files.files]


def load(src: "Source", plan: Plan, files: Any = None) -> LoadResult:
    if src.dry_run:
        if files is not None:
            files.close()
        return LoadResult(
            ok=plan.would_succeed, dry_run=True, title="Dry run",
            message=("nothing was loaded: this is the " + src.label + ("" if src.demo else "") + ", not the live host. "
                     + ("The plan says the load would succeed." if plan.would_succeed
                        else "The plan says the load would fail: " + plan.verdict)),
            fix=None if plan.would_succeed else _first_fix(plan),
            predicted=plan.segments,
            next_steps=["on the live host, run khotui as root and load from the Plan screen"])
    return _live_load(src, plan, files)


def _first_fix(plan: Plan) -> str | None:
    return next((f.fix for f in plan.findings if f.status == "fail" and f.fix), None)


def _syscalls(src: "Source") -> Any:
    if src.syscalls is not None:
        return src.syscalls
    from khotui import kexec
    return kexec.real_syscalls()


def _log_args(src: "Source") -> dict[str, Any]:
    args: dict[str, Any] = {}
    if src.log_path is not ...:
        args["log_path"] = src.log_path
    if src.syslog is not ...:
        args["syslog"] = src.syslog
    return args


def _live_load(src: "Source", plan: Plan, files: Any) -> LoadResult:
    from khotui import kexec, loadflow
    try:
        if files is None:
            files, _ = open_files(src, plan)
        with files:
            flags = kexec.KEXEC_FILE_DEBUG
            release = getattr(getattr(src._status, "boot", None), "osrelease", None)
            if kexec.flags_unsupported_by(flags, release):
                flags = 0
            outcome = loadflow.run_load(files, plan.request.cmdline, flags=flags,
                                        syscalls=_syscalls(src), **_log_args(src))
    except KhotuiError as exc:
        return LoadResult(ok=False, dry_run=False, title="Not loaded", message=exc.message
                          if not exc.path else f"{exc.path}: {exc.message}", fix=exc.fix,
                          predicted=plan.segments)
    result = outcome.result
    if not result.ok:
        err = result.error(kexec.ExplainContext(kernel_path=plan.request.kernel,
                                                initrd_path=plan.request.initrd,
                                                flags=result.flags))
        return LoadResult(ok=False, dry_run=False, title=f"Load failed: {result.errno_name}",
                          message=err.message, fix=err.fix, predicted=plan.segments,
                          next_steps=outcome.warnings)
    actual = _actual_placement(src)
    steps = list(outcome.warnings) + [
        "the image is loaded; nothing runs until you execute it",
        "execute with `systemctl kexec` (clean shutdown, then the new kernel) "
        "or `kexec -e` (immediately, no shutdown)",
    ]
    if not actual:
        steps.insert(0, "the kernel did not log its placement (no KEXEC_FILE_DEBUG lines in the "
                     "kernel log): only the prediction is shown")
    return LoadResult(ok=True, dry_run=False, title="Loaded",
                      message="kexec_file_load succeeded: the new kernel is loaded",
                      predicted=plan.segments, actual=actual, next_steps=steps)


def _actual_placement(src: "Source"):
    try:
        from khotui.kernellog import parse_kernel_log_all, read_kernel_log
        loads = parse_kernel_log_all(read_kernel_log(src.sysroot) or "")
    except (ImportError, KhotuiError):
        return []
    if not loads:
        return []
    last = loads[-1]
    from khotui.tui.viewmodel import SegmentRow
    return [SegmentRow(name=s.name or f"segment[{s.index}]", mem=s.mem, memsz=s.memsz,
                       bufsz=s.bufsz, region=None) for s in last.segments]


def unload(src: "Source") -> LoadResult:
    if src.dry_run:
        return LoadResult(ok=True, dry_run=True, title="Dry run",
                          message=f"nothing was unloaded: this is the {src.label}, not the live host")
    from khotui import kexec, loadflow
    try:
        outcome = loadflow.run_unload(syscalls=_syscalls(src), **_log_args(src))
    except KhotuiError as exc:
        return LoadResult(ok=False, dry_run=False, title="Not unloaded", message=exc.message,
                          fix=exc.fix)
    r = outcome.result
    if not r.ok:
        err = r.error(kexec.ExplainContext(flags=r.flags))
        return LoadResult(ok=False, dry_run=False, title=f"Unload failed: {r.errno_name}",
                          message=err.message, fix=err.fix)
    return LoadResult(ok=True, dry_run=False, title="Unloaded",
                      message="the kexec image is unloaded", next_steps=outcome.warnings)
