"""Committing a load: the syscall on the opened files and the kernel's placement read back.

`load_opened()` runs the real (or injected) `kexec_file_load` on the descriptors that were
hashed and inspected, always with KEXEC_FILE_DEBUG, then reads the kernel's own placement back
from the kernel log and compares it with the prediction segment by segment. `CommitResult` is
the one answer a load or unload gives (also the dry run and the refusal, which
`khotui.load.session` decides). Nothing here prompts or prints: the callers own the conversation
with the operator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from khotui.errors import Problem
from khotui.host.kernellog import LoggedLoad, parse_kernel_log_all, read_kernel_log
from khotui.host.sysroot import Sysroot
from khotui.load import syscall
from khotui.load.audit import DEFAULT_SINK, AuditLog, AuditSink
from khotui.load.explain import ExplainContext, Explanation, explain
from khotui.load.opened import OpenedFiles, run_load
from khotui.plan import PlanResult
from khotui.types import Finding, JsonDict


class PredictedSegment(Protocol):
    """What the comparison needs of a planned segment (x86_64 and arm64 plans both have it)."""

    @property
    def name(self) -> str: ...
    @property
    def mem(self) -> int | None: ...
    @property
    def memsz(self) -> int: ...


@dataclass(frozen=True)
class SegmentDiff:
    name: str
    predicted_mem: int | None
    predicted_memsz: int
    actual_mem: int | None
    actual_memsz: int | None

    @property
    def same(self) -> bool:
        return (self.predicted_mem, self.predicted_memsz) == (self.actual_mem, self.actual_memsz)

    def as_dict(self) -> JsonDict:
        return {"name": self.name, "predicted_mem": self.predicted_mem,
                "predicted_memsz": self.predicted_memsz, "actual_mem": self.actual_mem,
                "actual_memsz": self.actual_memsz, "same": self.same}


def warning_text(problem: Problem) -> str:
    """A warning as one line of text, as `khotui load` has always printed it."""
    return problem.headline + (f". Fix: {problem.fix}" if problem.fix else "")


@dataclass(frozen=True)
class CommitResult:
    """What one load or unload came to: loaded, refused by the kernel (`errno` and its
    `explanation`), refused by khotui before the kernel (`refused`: a failing check, not
    forced), or a dry run (`dry_run`: not the live host; `ok` then says whether the plan would
    succeed). `failing` are the failing checks at commit time; `overridden` the ones --force
    loaded past."""

    action: Literal["load", "unload"]
    ok: bool
    flags: int = 0
    dry_run: bool = False
    refused: bool = False
    forced: bool = False
    errno: str | None = None
    explanation: Explanation | None = None
    actual: LoggedLoad | None = None         # the kernel's own placement, when it logged one
    diffs: tuple[SegmentDiff, ...] = ()
    warnings: tuple[Problem, ...] = ()
    failing: tuple[Finding, ...] = ()
    unconfirmed: tuple[Finding, ...] = ()    # refused: failing checks the operator never confirmed
    receipt: str | None = None               # where the receipt of a real load was written
    receipt_problem: Problem | None = None   # loaded, but the receipt could not be written

    @property
    def reached_kernel(self) -> bool:
        return not (self.dry_run or self.refused)

    @property
    def overridden(self) -> tuple[Finding, ...]:
        return self.failing if self.forced and self.reached_kernel else ()

    @property
    def matches_prediction(self) -> bool | None:
        if not self.diffs:
            return None
        return all(d.same for d in self.diffs)

    def as_dict(self) -> JsonDict:
        """The `load` object of `khotui load --json` (warnings as their one-line text)."""
        ex = self.explanation
        return {
            "ok": self.ok,
            "errno": self.errno,
            "flags": self.flags,
            "flag_names": syscall.flag_names(self.flags),
            "explanation": None if ex is None else {"summary": ex.summary, "cause": ex.cause,
                                                    "fix": ex.fix},
            "actual": None if self.actual is None else [
                {"name": s.name, "mem": s.mem, "memsz": s.memsz, "bufsz": s.bufsz}
                for s in self.actual.segments],
            "matches_prediction": self.matches_prediction,
            "differences": [d.as_dict() for d in self.diffs if not d.same],
            "warnings": [warning_text(w) for w in self.warnings],
            "receipt": self.receipt,
            "receipt_problem": None if self.receipt_problem is None
            else self.receipt_problem.as_dict(),
        }


def load_flags(plan_result: PlanResult) -> int:
    """KEXEC_FILE_DEBUG always (the kernel then logs where it put each segment), NO_INITRAMFS
    without an initrd, NO_CMA on request; minus the flags the running kernel predates, which it
    would refuse with EINVAL (DEBUG before 6.8, NO_CMA before 6.17: syscall.FLAG_SINCE)."""
    flags = syscall.KEXEC_FILE_DEBUG
    if plan_result.request.initrd is None:
        flags |= syscall.KEXEC_FILE_NO_INITRAMFS
    if plan_result.request.no_cma:
        flags |= syscall.KEXEC_FILE_NO_CMA
    release = plan_result.status.boot.osrelease
    for bit in syscall.FLAG_SINCE:
        if flags & bit and syscall.flags_unsupported_by(bit, release):
            flags &= ~bit
    return flags


def explain_context(plan_result: PlanResult, flags: int) -> ExplainContext:
    st = plan_result.status
    k = st.kexec
    plan = plan_result.plan
    failed_name = None if plan is None or plan.fits is not False else plan.failed_segment
    failed = None if failed_name is None or plan is None else plan.segment(failed_name)
    tried = [] if plan is None else [(t.name, t.size) for t in plan.regions_tried]
    kernel = plan_result.kernel
    mem_kb = st.boot.meminfo.get("MemTotal")
    return ExplainContext(
        is_root=k.is_root if k.euid is not None else None,
        has_cap_sys_boot=k.cap_sys_boot,
        kexec_load_disabled=k.kexec_load_disabled,
        load_limit_reboot=k.kexec_load_limit_reboot,
        load_limit_panic=k.kexec_load_limit_panic,
        lockdown=k.lockdown,
        sig_enforce=st.boot.config_enabled("CONFIG_KEXEC_SIG_FORCE"),
        kernel_release=st.boot.osrelease,
        arch=st.boot.arch,
        kho_enabled=st.kho.enabled,
        kho_booted=st.kho_booted,
        kexec_loaded=k.loaded,
        flags=flags,
        kernel_path=plan_result.request.kernel,
        initrd_path=plan_result.request.initrd,
        kernel_size=kernel.size,
        initrd_size=None if plan_result.initrd is None else plan_result.initrd.size,
        kernel_format=kernel.format,
        image_cmdline_size=None if kernel.setup is None else kernel.setup.cmdline_size,
        cmdline_len=len(plan_result.cmdline.encode()) + 1,
        mem_total=None if mem_kb is None else mem_kb * 1024,
        failing_segment=failed_name,
        failing_segment_memsz=None if failed is None else failed.memsz,
        regions_tried=tuple(tried),
    )


def compare(predicted: Sequence[PredictedSegment], actual: LoggedLoad | None) -> list[SegmentDiff]:
    """Pair predicted and logged segments in segment order (the kernel logs segment[N] in order)."""
    if actual is None:
        return []
    diffs = []
    logged = list(actual.segments)
    for i, seg in enumerate(predicted):
        got = logged[i] if i < len(logged) else None
        diffs.append(SegmentDiff(seg.name, seg.mem, seg.memsz,
                                 None if got is None else got.mem,
                                 None if got is None else got.memsz))
    for extra in logged[len(predicted):]:
        diffs.append(SegmentDiff(extra.name or f"segment[{extra.index}]", None, 0,
                                 extra.mem, extra.memsz))
    return diffs


def logged_loads(sysroot: Sysroot) -> list[LoggedLoad]:
    """Every KEXEC_FILE_DEBUG load the kernel log shows, oldest first (empty: none/unreadable)."""
    return _loads_in_log(sysroot)


def _loads_in_log(sysroot: Sysroot) -> list[LoggedLoad]:
    try:
        text = read_kernel_log(sysroot)
    except Exception:  # the log is a bonus; a load must not fail because it is unreadable
        return []
    return parse_kernel_log_all(text) if text else []


NO_DEBUG_LOG = Problem(
    "the kernel log shows no KEXEC_FILE_DEBUG lines for this load (kernel older than 6.8, or "
    "the log is not readable): the actual placement cannot be compared with the prediction")


def load_opened(plan_result: PlanResult, files: OpenedFiles, *, syscalls: syscall.Syscalls,
                sink: AuditSink = DEFAULT_SINK, log: AuditLog | None = None,
                read_log: Callable[[], list[LoggedLoad]] | None = None) -> CommitResult:
    """The syscall on the opened files, then the kernel's placement read back and compared."""
    sysroot = plan_result.status.sysroot
    read_log = read_log or (lambda: _loads_in_log(sysroot))
    before = len(read_log())
    flags = load_flags(plan_result)
    outcome = run_load(files, plan_result.cmdline, flags=flags, syscalls=syscalls, sink=sink,
                       log=log)
    result = outcome.result
    warnings = list(outcome.warnings)
    if not result.ok:
        ex = explain(result.errno, explain_context(plan_result, flags))
        return CommitResult("load", False, flags, errno=result.errno_name, explanation=ex,
                            warnings=tuple(warnings))
    loads = read_log()
    actual = loads[-1] if len(loads) > before else None
    if actual is None:
        warnings.append(NO_DEBUG_LOG)
    return CommitResult("load", True, flags, actual=actual,
                        diffs=tuple(compare(plan_result.segments(), actual)),
                        warnings=tuple(warnings))


def systemd_is_init(sysroot: Sysroot) -> bool:
    # sd_booted(): /run/systemd/system exists only when systemd is PID 1
    return sysroot.is_dir("/run/systemd/system")


def how_to_execute(sysroot: Sysroot) -> str:
    if systemd_is_init(sysroot):
        return ("run `systemctl kexec` to shut services down cleanly and jump into the new kernel "
                "(`kexec -e` jumps at once, without a clean shutdown)")
    return ("stop your services, sync, then run `kexec -e` (or `khotui load --exec`); nothing "
            "shuts the system down cleanly for you without systemd")
