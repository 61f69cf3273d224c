"""Prepare, plan, load: installed kernels, the cmdline diff, `report.plan_load()`, the load flow.

The load goes through `khotui.load.opened` with the `Syscalls` object the app was given (a fake in
tests; `kexec.real_syscalls()` only on the live host, only after the typed confirmation). On a
snapshot or the demo nothing is ever called: `load()` answers with the plan as a dry run.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from khotui.errors import KhotuiError
from khotui.tui.viewmodel import (Choices, CmdlinePreview, Finding, KernelChoice, LoadResult,
                                  Plan, PlanInput, Problem, SegmentDiffRow, _guard, segment_rows)

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


_image_cache: dict[tuple[str, int, int], Any] = {}


def _image(kernel: str | None) -> Any:
    """The inspected kernel (khotui.image.inspect), cached by path, size and mtime: the preview runs
    on every keystroke. None when there is no kernel or it cannot be read."""
    if not kernel:
        return None
    try:
        st = os.stat(kernel)
    except OSError:
        return None
    key = (kernel, st.st_size, st.st_mtime_ns)
    if key not in _image_cache:
        from khotui.image.inspect import inspect_kernel
        try:
            _image_cache[key] = inspect_kernel(kernel)
        except KhotuiError:
            _image_cache[key] = None
    return _image_cache[key]


def cmdline_preview(src: "Source", current: str, new: str, kernel: str | None) -> CmdlinePreview:
    """The token diff, and the plan's own command-line checks (report.cmdline_findings): the
    same kho=on rule and image limit as `khotui plan`, shown while the operator types."""
    from khotui.plan import report
    from khotui.cmdline import accepted_length, diff_cmdline
    d = diff_cmdline(current, new)
    image = _image(kernel)
    limit = accepted_length(getattr(getattr(image, "setup", None), "cmdline_size", None))
    warnings = [f.message + (f" (fix: {f.fix})" if f.fix else "")
                for f in report.cmdline_findings(src.status(), new, image)
                if f.status in ("fail", "warn")]
    return CmdlinePreview(removed=d.removed, boot_only_removed=d.boot_only_removed,
                          added=d.added, duplicates=d.duplicates, kho=d.kho,
                          length=len(new.encode()) + 1, limit=limit, warnings=warnings)


# -- plan --------------------------------------------------------------------------------------


def plan(src: "Source", request: PlanInput) -> Plan:
    result = _guard(lambda: _plan_load(src, request))
    if isinstance(result, Problem):
        return Plan(request=request, would_succeed=False, verdict=result.message,
                    segments=[], regions=[], findings=[Finding("plan", "fail", result.message,
                                                                  result.fix)])
    ok = bool(result.would_succeed)
    findings = list(result.findings)
    segments = segment_rows(result.segments())
    regions = list(result.status.kho.scratch)
    message = getattr(result.plan, "message", None)
    if ok:
        where = "the scratch regions" if result.status.kho.enabled else "System RAM"
        verdict = f"the load would succeed: {len(segments)} segments fit in {where}"
    else:
        verdict = _verdict(ok, findings, message)
    return Plan(request=request, would_succeed=ok, verdict=verdict, segments=segments,
                regions=regions, findings=findings, notes=list(result.assumptions),
                handle=result)


def _request(request: PlanInput) -> Any:
    from khotui.plan import report
    # the editor always holds the whole next command line (never None: nothing to append to)
    return report.PlanRequest(kernel=request.kernel, initrd=request.initrd,
                              cmdline=request.cmdline)


def _plan_load(src: "Source", request: PlanInput) -> Any:
    from khotui.plan import report
    return report.plan_load(src.root, _request(request), status=src.status())


def _verdict(ok: bool, findings: list[Finding], message: str | None = None) -> str:
    if ok:
        return "the load would succeed"
    failing = [f for f in findings if f.status == "fail"]
    n = f" ({len(failing)} failing checks)" if len(failing) > 1 else ""
    first = failing[0].message if failing else (message or "see the checks")
    return f"the load would fail{n}: {first}"


# -- load / unload -----------------------------------------------------------------------------


def open_files(src: "Source", plan: Plan) -> tuple[Any, list[tuple[str, str, int | None]]]:
    """Open and hash the files once: the confirmation shows these hashes, the load uses
    these descriptors (opened.open_for_load)."""
    from khotui.load.opened import open_for_load
    files = open_for_load(plan.request.kernel, plan.request.initrd)
    return files, [(f.path, f.sha256, f.size) for f in files.files]


def load(src: "Source", plan: Plan, files: Any = None, *, force: bool = False) -> LoadResult:
    if src.dry_run:
        if files is not None:
            files.close()
        return LoadResult(
            ok=plan.would_succeed, dry_run=True, title="Dry run",
            message=("nothing was loaded: this is the " + src.label + ", not the live host. "
                     + ("The plan says the load would succeed." if plan.would_succeed
                        else "The plan says the load would fail: " + plan.verdict)),
            fix=None if plan.would_succeed else _first_fix(plan),
            predicted=plan.segments,
            next_steps=["on the live host, run khotui as root and load from the Plan screen"])
    return _live_load(src, plan, files, force=force)


def _first_fix(plan: Plan) -> str | None:
    return next((f.fix for f in plan.findings if f.status == "fail" and f.fix), None)


def _syscalls(src: "Source") -> Any:
    if src.syscalls is not None:
        return src.syscalls
    from khotui.load import kexec
    return kexec.real_syscalls()


def _log_args(src: "Source") -> dict[str, Any]:
    args: dict[str, Any] = {}
    if src.log_path is not ...:
        args["log_path"] = src.log_path
    if src.syslog is not ...:
        args["syslog"] = src.syslog
    return args


def _live_load(src: "Source", plan: Plan, files: Any, *, force: bool = False) -> LoadResult:
    """`khotui load`'s path (cli.load.load): plan again on the opened descriptors, refuse on a
    failing check unless forced, then commit.load_opened() and its comparison."""
    from khotui.load import audit
    from khotui.load import commit
    from khotui.plan import report
    try:
        if files is None:
            files, _ = open_files(src, plan)
        with files:
            # a fresh read: the host may have changed since the plan (a load, a hotplug)
            result = report.plan_load(src.root, _request(plan.request),
                                      kernel_file=files.kernel.fd, initrd_file=files.initrd_fd,
                                      status=src.status(refresh=True))
            predicted = segment_rows(result.segments())
            failing = [f for f in result.findings if f.status == "fail"]
            if failing and not force:
                return LoadResult(
                    ok=False, dry_run=False, title="Refused: a check fails",
                    message=("nothing was loaded: on the opened files, "
                             + "; ".join(f"{f.id}: {f.message}" for f in failing)),
                    fix=failing[0].fix, predicted=predicted)
            args = _log_args(src)
            done = commit.load_opened(result, files, syscalls=_syscalls(src),
                                      log_path=args.get("log_path", audit.DEFAULT_LOG_PATH),
                                      syslog=args.get("syslog", audit.default_syslog))
    except KhotuiError as exc:
        return LoadResult(ok=False, dry_run=False, title="Not loaded", message=exc.message
                          if not exc.path else f"{exc.path}: {exc.message}", fix=exc.fix,
                          predicted=plan.segments)
    return commit_result(src, done, predicted, failing if force else [])


def commit_result(src: "Source", done: Any, predicted: list[Any],
                  overridden: list[Finding]) -> LoadResult:
    """A commit.CommitResult as the result screen shows it."""
    from khotui.load import commit
    steps = list(done.warnings)
    if overridden:
        steps.insert(0, "failing checks overridden by the operator: "
                     + ", ".join(f.id for f in overridden))
    if not done.ok:
        ex = done.explanation
        return LoadResult(ok=False, dry_run=False, title=f"Load failed: {done.errno}",
                          message=f"kexec_file_load failed: {done.errno}: {ex.summary}",
                          cause=ex.cause, fix=ex.fix, errno=done.errno, predicted=predicted,
                          overridden=overridden, next_steps=steps)
    diffs = [SegmentDiffRow(d.name, d.predicted_mem, d.predicted_memsz, d.actual_mem,
                            d.actual_memsz, d.same) for d in done.diffs]
    match = done.matches_prediction
    verdict = ("the kernel placed every segment where the preview said" if match
               else "the kernel placed segments elsewhere than the preview: see DIFFERS"
               if match is False else "the kernel did not log its placement")
    steps += ["the image is loaded; nothing runs until you execute it",
              commit.how_to_execute(src.sysroot)]
    return LoadResult(ok=True, dry_run=False, title="Loaded",
                      message=f"kexec_file_load succeeded: {verdict}", predicted=predicted,
                      diffs=diffs, overridden=overridden, next_steps=steps)


def unload(src: "Source") -> LoadResult:
    if src.dry_run:
        return LoadResult(ok=True, dry_run=True, title="Dry run",
                          message=f"nothing was unloaded: this is the {src.label}, not the live host")
    from khotui.load import kexec
    from khotui.load import opened
    try:
        outcome = opened.run_unload(syscalls=_syscalls(src), **_log_args(src))
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
