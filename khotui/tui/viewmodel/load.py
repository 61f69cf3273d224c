"""Prepare, plan, load: installed kernels, the cmdline diff, `plan_load()`, the load flow.

The load is a `khotui.load.session.LoadSession`, the same policy `khotui load` follows, committed
with the `Syscalls` object the app was given (a fake in tests; `syscall.real_syscalls()` only on
the live host, only after the typed confirmation). On a snapshot or the demo nothing is ever
called: the session answers with its plan as a dry run.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from khotui.errors import KhotuiError
from khotui.tui.viewmodel import (
    Choices,
    CmdlinePreview,
    Finding,
    KernelChoice,
    LoadResult,
    Plan,
    PlanInput,
    Problem,
    SegmentDiffRow,
    _guard,
    segment_rows,
)

if TYPE_CHECKING:
    from khotui.image.inspect import KernelImage
    from khotui.load.audit import AuditSink
    from khotui.load.commit import CommitResult
    from khotui.load.session import LoadSession
    from khotui.load.syscall import Syscalls
    from khotui.plan import PlanRequest, PlanResult
    from khotui.tui.viewmodel import Source


# -- prepare -----------------------------------------------------------------------------------


def choices(src: Source) -> Choices:
    from khotui.cmdline import next_cmdline
    from khotui.host.boot import read_boot
    boot = _guard(lambda: read_boot(src.sysroot))
    current = "" if isinstance(boot, Problem) else (boot.cmdline or "")
    kernels = _guard(lambda: _kernels(src))
    boot_dir = src.sysroot.path("/boot")
    start = str(boot_dir if boot_dir.is_dir() else src.root)
    return Choices(kernels=kernels, current_cmdline=current,
                   suggested_cmdline=next_cmdline(current), browse_root=start)


def _kernels(src: Source) -> list[KernelChoice]:
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


_image_cache: dict[tuple[str, int, int], KernelImage | None] = {}


def _image(kernel: str | None) -> KernelImage | None:
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


def cmdline_preview(src: Source, current: str, new: str, kernel: str | None) -> CmdlinePreview:
    """The token diff, and the plan's own command-line checks (cmdline_findings): the
    same kho=on rule and image limit as `khotui plan`, shown while the operator types."""
    from khotui.cmdline import accepted_length, cmdline_len, diff_cmdline
    from khotui.plan import cmdline_findings
    d = diff_cmdline(current, new)
    image = _image(kernel)
    limit = accepted_length(None if image is None or image.setup is None
                            else image.setup.cmdline_size)
    warnings = [f.message + (f" (fix: {f.fix_for('app')})" if f.fix else "")
                for f in cmdline_findings(src.status(), new, image)
                if f.status in ("fail", "warn")]
    return CmdlinePreview(removed=d.removed, boot_only_removed=d.boot_only_removed,
                          added=d.added, duplicates=d.duplicates, kho=d.kho,
                          length=cmdline_len(new), limit=limit, warnings=warnings)


# -- plan --------------------------------------------------------------------------------------


def plan(src: Source, request: PlanInput) -> Plan:
    result = _guard(lambda: _plan_load(src, request))
    if isinstance(result, Problem):
        return Plan(request=request, would_succeed=False, verdict=result.headline,
                    segments=[], regions=[], findings=[Finding("plan", "fail", result.headline,
                                                                  result.fix)])
    return _plan_of(request, result)


def _plan_of(request: PlanInput, result: PlanResult) -> Plan:
    """A `PlanResult` as the Plan screen shows it."""
    ok = bool(result.would_succeed)
    findings = list(result.findings)
    segments = segment_rows(result.segments())
    regions = list(result.status.kho.scratch)
    message = None if result.plan is None else result.plan.message
    if ok:
        where = "the scratch regions" if result.status.kho.scratch_known else "System RAM"
        verdict = f"the load would succeed: {len(segments)} segments fit in {where}"
    else:
        verdict = _verdict(ok, findings, message)
    return Plan(request=request, would_succeed=ok, verdict=verdict, segments=segments,
                regions=regions, findings=findings, notes=list(result.notes),
                assumptions=list(result.assumptions), exactness=result.exactness,
                handle=result)


def _request(request: PlanInput) -> PlanRequest:
    from khotui.plan import PlanRequest
    # the editor always holds the whole next command line (never None: nothing to append to)
    return PlanRequest(kernel=request.kernel, initrd=request.initrd, cmdline=request.cmdline)


def _plan_load(src: Source, request: PlanInput) -> PlanResult:
    from khotui.plan import plan_load
    return plan_load(src.root, _request(request), status=src.status())


def _verdict(ok: bool, findings: list[Finding], message: str | None = None) -> str:
    if ok:
        return "the load would succeed"
    failing = [f for f in findings if f.status == "fail"]
    n = f" ({len(failing)} failing checks)" if len(failing) > 1 else ""
    first = failing[0].message if failing else (message or "see the checks")
    return f"the load would fail{n}: {first}"


# -- load / unload -----------------------------------------------------------------------------
# The policy (dry run, refusal, force, the syscall, the read-back) is khotui.load.session's, the
# same `khotui load` follows; this part only maps its answers onto the screens.


def _sink(src: Source) -> AuditSink:
    from khotui.load.audit import DEFAULT_SINK
    return DEFAULT_SINK if src.sink is None else src.sink


def _syscalls(src: Source) -> Syscalls:
    if src.syscalls is not None:
        given: Syscalls = src.syscalls
        return given
    from khotui.load.syscall import real_syscalls
    return real_syscalls()


def open_files(src: Source, plan: Plan) -> tuple[LoadSession, list[tuple[str, str, int | None]]]:
    """Open and hash the files once and plan again on those descriptors, against a fresh read
    of the host (it may have changed since the plan: a load, a hotplug): the confirmation shows
    these hashes, the load commits this session."""
    from khotui.load.session import LoadSession
    session = LoadSession.prepare(src.root, _request(plan.request), live=not src.dry_run,
                                  status=src.status(refresh=not src.dry_run),
                                  host_name=src.hostname(), sink=_sink(src))
    if session.log_problem is not None:
        # the app asks for the confirmation next: an unusable audit log is said now, not after
        session.close()
        raise session.log_problem
    return session, [(f.path, f.sha256, f.size) for f in session.facts.files]


def confirmed_ids(plan: Plan, force: bool) -> tuple[str, ...]:
    """What the force box confirmed: the failing check ids the confirmation named (the
    ConfirmLoadScreen lists the failing findings of this very `plan`), and no others."""
    if not force:
        return ()
    return tuple(dict.fromkeys(f.id for f in plan.findings if f.status == "fail"))


def load(src: Source, plan: Plan, files: LoadSession | None = None, *,
         force: bool = False) -> LoadResult:
    """Commit the session `open_files()` prepared (or prepare one now): the syscalls are
    opened only when the session would reach the kernel, after the operator confirmed.
    `force`: the operator ticked the box naming the failing checks of `plan`; only those are
    overridden, a check failing at commit time that the box did not name refuses."""
    session = files
    ids = confirmed_ids(plan, force)
    try:
        if session is None:
            session, _ = open_files(src, plan)
        reaches_kernel = session.precheck(force=ids) is None
        done = session.commit(force=ids, syscalls=_syscalls(src) if reaches_kernel else None)
    except KhotuiError as exc:
        return LoadResult(ok=False, dry_run=src.dry_run, title="Not loaded",
                          message=exc.message if not exc.path else f"{exc.path}: {exc.message}",
                          fix=exc.fix, predicted=plan.segments)
    finally:
        if session is not None:
            session.close()  # the files, the audit log, and the load lock
    return commit_result(src, _plan_of(plan.request, session.plan), done)


def _first_fix(plan: Plan) -> str | None:
    return next((f.fix_for("app") for f in plan.findings if f.status == "fail" and f.fix), None)


def commit_result(src: Source, plan: Plan, done: CommitResult) -> LoadResult:
    """A session's `CommitResult` as the result screen shows it; `plan` is the session's."""
    from khotui.load import commit
    predicted = plan.segments
    if done.dry_run:
        return LoadResult(
            ok=done.ok, dry_run=True, title="Dry run",
            message=("nothing was loaded: this is the " + src.label + ", not the live host. "
                     + ("The plan says the load would succeed." if done.ok
                        else "The plan says the load would fail: " + plan.verdict)),
            fix=None if done.ok else _first_fix(plan), predicted=predicted,
            next_steps=["on the live host, run khotui as root and load from the Plan screen"])
    if done.refused and done.unconfirmed and done.forced:
        new = list(done.unconfirmed)
        return LoadResult(
            ok=False, dry_run=False, title="Refused: a check the confirmation did not name fails",
            message=("nothing was loaded: the box overrode only the checks it named; now "
                     + "; ".join(f"{f.id}: {f.message}" for f in new) + " fails too"),
            fix=new[0].fix_for("app"), predicted=predicted)
    if done.refused:
        failing = list(done.failing)
        return LoadResult(
            ok=False, dry_run=False, title="Refused: a check fails",
            message=("nothing was loaded: on the opened files, "
                     + "; ".join(f"{f.id}: {f.message}" for f in failing)),
            fix=failing[0].fix_for("app") if failing else None, predicted=predicted)
    overridden = list(done.overridden)
    steps = [commit.warning_text(w) for w in done.warnings]
    if overridden:
        steps.insert(0, "failing checks overridden by the operator: "
                     + ", ".join(f.id for f in overridden))
    ex = done.explanation
    if ex is not None:
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
    if done.receipt is not None:
        steps.append(f"receipt: {done.receipt}; after the kexec, `khotui verify --receipt "
                     f"{done.receipt}` checks what arrived")
    rp = done.receipt_problem
    if rp is not None:
        # the image IS loaded: said as such, with why the receipt is missing and the fix
        return LoadResult(ok=True, dry_run=False, title="Loaded, but the receipt was not written",
                          message=(f"kexec_file_load succeeded ({verdict}), but the receipt "
                                   f"was not written: "
                                   + (f"{rp.path}: " if rp.path else "") + rp.headline),
                          fix=rp.fix, predicted=predicted, diffs=diffs, overridden=overridden,
                          next_steps=steps)
    return LoadResult(ok=True, dry_run=False, title="Loaded",
                      message=f"kexec_file_load succeeded: {verdict}", predicted=predicted,
                      diffs=diffs, overridden=overridden, next_steps=steps)


def unload_refusal(src: Source) -> LoadResult | None:
    if src.dry_run:
        return None
    try:
        _sink(src).open().close()      # checked now, opened again for the records
    except KhotuiError as exc:
        return LoadResult(ok=False, dry_run=False, title="Not unloaded", message=exc.message
                          if not exc.path else f"{exc.path}: {exc.message}", fix=exc.fix)
    return None


def unload(src: Source) -> LoadResult:
    from khotui.load import commit, session
    from khotui.load.lock import LoadLock
    try:
        if src.dry_run:
            done = session.unload(syscalls=None, live=False, sink=_sink(src))
        else:
            # one load or unload at a time, as `khotui unload` (khotui.load.lock)
            with LoadLock.acquire():
                done = session.unload(syscalls=_syscalls(src), live=True, sink=_sink(src))
    except KhotuiError as exc:
        return LoadResult(ok=False, dry_run=False, title="Not unloaded", message=exc.message,
                          fix=exc.fix)
    if done.dry_run:
        return LoadResult(ok=True, dry_run=True, title="Dry run",
                          message=f"nothing was unloaded: this is the {src.label}, not the live host")
    ex = done.explanation
    if ex is not None:
        return LoadResult(ok=False, dry_run=False, title=f"Unload failed: {done.errno}",
                          message=f"kexec_file_load (unload) failed with {done.errno}: "
                                  f"{ex.summary}: {ex.cause}", fix=ex.fix)
    return LoadResult(ok=True, dry_run=False, title="Unloaded",
                      message="the kexec image is unloaded",
                      next_steps=[commit.warning_text(w) for w in done.warnings])
