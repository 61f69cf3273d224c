"""One load, start to finish: the load policy `khotui load` and the app's Load both follow.

`LoadSession.prepare()` opens and hashes the kernel and initrd once (`opened`), then plans again
on those very descriptors against a fresh read of the host, so what the operator confirms is
what the kernel will read. On the live host it first takes the load lock (`lock`: one khotui
load at a time, held until the session is closed, i.e. through `--exec`) and opens and checks
the audit log (`audit.AuditSink.open`), so neither can fail after the operator confirmed. The
session then states the facts to confirm (`facts`: resolved paths, sha256, sizes, cmdline, the
host name to type, the failing checks, whether this is a dry run and why).
`commit(force=..., syscalls=...)` applies the policy, in this order:

1. not the live host: a dry run; nothing reaches a syscall (`syscalls` is not even looked at);
2. the checks run again on the opened files against a fresh read of the host; a failing check
   whose id the operator did not confirm in `force` (the ids `--force` printed, the ids the
   app's box named) refuses before the kernel: a check that began failing after the
   confirmation is never overridden by it;
3. otherwise one `kexec_file_load` through the given `Syscalls`, recorded before and after with
   SIGINT/SIGTERM/SIGHUP held off in between (`opened.run_load`), the kernel's placement read
   back and compared (`commit.load_opened`); forced, the answer names what was overridden;
4. after a successful real load, the receipt (`receipt`: what was handed over, for `khotui
   verify` in the next kernel) is written to `receipt_path`; a failure to write it is in the
   answer's `receipt_problem` (the image IS loaded). A dry run or a refusal writes none.

`interrupted_note()` words an interrupt from what actually happened: the syscall made or not,
the kernel's answer, and the kernel's own `/sys/kernel/kexec_loaded`.

`unload()` is the same for KEXEC_FILE_UNLOAD. Callers own only the conversation: the CLI prints,
the TUI maps the `CommitResult` onto its screens. The kernel is reached only through the
`Syscalls` object the caller passes after the operator confirmed (`syscall.real_syscalls()` in
production, a fake in tests): the one way to inject it.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from khotui.errors import KhotuiError, Problem
from khotui.host.sysroot import Sysroot
from khotui.load import commit, receipt
from khotui.load.audit import DEFAULT_SINK, AuditLog, AuditSink
from khotui.load.commit import CommitResult
from khotui.load.explain import ExplainContext, explain
from khotui.load.lock import LoadLock
from khotui.load.opened import OpenedFile, OpenedFiles, UnloadState, open_for_load, run_unload
from khotui.load.syscall import KEXEC_FILE_ON_CRASH, KEXEC_FILE_UNLOAD, Syscalls
from khotui.plan import HostStatus, PlanRequest, PlanResult, plan_load
from khotui.types import FAIL, Finding


@dataclass(frozen=True)
class FileFacts:
    """One opened file as the confirmation shows it."""

    role: str            # "kernel" or "initrd"
    path: str            # as given
    resolved: str        # what the descriptor refers to
    sha256: str
    size: int

    @classmethod
    def of(cls, f: OpenedFile) -> FileFacts:
        return cls(f.role, f.path, f.resolved, f.sha256, f.size)


@dataclass(frozen=True)
class ConfirmFacts:
    """Everything the operator confirms before a load, from the opened files and their plan."""

    kernel: FileFacts
    initrd: FileFacts | None
    cmdline: str
    host_name: str                    # what the operator types to confirm
    failing: tuple[Finding, ...]      # failing checks; --force overrides exactly these ids
    would_succeed: bool
    dry_run: bool
    dry_run_reason: str | None        # why nothing will be loaded (None on the live host)
    warnings: tuple[Problem, ...]     # about the files (who else could write them)

    @property
    def files(self) -> tuple[FileFacts, ...]:
        return (self.kernel,) if self.initrd is None else (self.kernel, self.initrd)


def this_host_name() -> str:
    """The name an operator types to confirm a change to the host khotui runs on."""
    return socket.gethostname()


def confirms(answer: str, expected: str) -> bool:
    """Whether `answer` confirms: the host name typed exactly. An empty host name can never be
    confirmed (typing nothing would otherwise do)."""
    return bool(expected.strip()) and answer.strip() == expected.strip()


def kexec_loaded(root: Path) -> bool | None:
    """The kernel's own word: /sys/kernel/kexec_loaded below `root` (None: unreadable)."""
    try:
        text = Sysroot(root).read_optional_text("/sys/kernel/kexec_loaded")
    except (KhotuiError, OSError):
        return None
    return None if text is None else text.strip() == "1"


def _loaded_words(root: Path) -> str:
    state = kexec_loaded(root)
    return ("" if state is None else
            " (the kernel reports an image loaded: /sys/kernel/kexec_loaded is 1)" if state else
            " (the kernel reports no image loaded: /sys/kernel/kexec_loaded is 0)")


def interrupt_note(action: str, signame: str, attempted: bool, result: object,
                   root: Path) -> str:
    """What an interrupt of a load or unload left behind, in words; `result` is the kernel's
    `kexec.LoadResult` or None."""
    ok = getattr(result, "ok", None)
    if not attempted:
        return (f"interrupted ({signame}) before the {action} reached the kernel: nothing was "
                f"changed{_loaded_words(root)}")
    if result is None:
        return (f"interrupted ({signame}) during the {action}: the outcome is not known"
                f"{_loaded_words(root)}; the audit log has the attempt")
    if ok:
        done = ("the image IS loaded; `khotui unload` removes it" if action == "load"
                else "the image was unloaded")
        return (f"interrupted ({signame}) after the {action} succeeded: {done}"
                f"{_loaded_words(root)}; the audit log has the record")
    name = getattr(result, "errno_name", "") or "an error"
    return (f"interrupted ({signame}) after the kernel refused the {action} with {name}: "
            f"nothing was changed{_loaded_words(root)}")


def _dry_run_reason(root: Path) -> str:
    return f"{root} is a snapshot, not the live host"


class LoadSession:
    """The opened files, their plan, and the one commit. Close it (or use `with`) when done;
    `commit()` closes it itself: a session loads at most once."""

    def __init__(self, root: Path, files: OpenedFiles, plan: PlanResult, *, live: bool,
                 host_name: str, sink: AuditSink, log: AuditLog | None = None,
                 lock: LoadLock | None = None, log_problem: KhotuiError | None = None,
                 receipt_path: str | os.PathLike[str] | None = None) -> None:
        self.root = root
        # None: receipt.DEFAULT_PATH as it is at commit time
        self.receipt_path = receipt_path
        self.files = files
        self.plan = plan
        self.live = live
        self.host_name = host_name
        self.sink = sink
        self.log = log
        self.lock = lock
        # an unusable audit log refuses the load before any confirmation (precheck), but
        # after the plan's own refusal, which says why the load could not happen anyway
        self.log_problem = log_problem

    @classmethod
    def prepare(cls, root: str | os.PathLike[str], request: PlanRequest, *,
                live: bool | None = None, status: HostStatus | None = None,
                host_name: str | None = None, sink: AuditSink = DEFAULT_SINK,
                lock_dir: str | None = None,
                receipt_path: str | os.PathLike[str] | None = None) -> LoadSession:
        """Take the load lock (live host only), open and hash the files, plan on their
        descriptors, then open the audit log (live host only; an unusable one is kept in
        `log_problem` for `precheck()` to refuse with).

        `live` None: the root is the live host only when it is `/`. `status` None reads the
        host now (pass a freshly read one to share it). `lock_dir` None: `lock.LOCK_DIR`.
        A busy lock or unreadable files raise KhotuiError and leave nothing open.
        """
        path = Path(root)
        is_live = Sysroot(path).is_live if live is None else live
        lock = LoadLock.acquire(lock_dir) if is_live else None
        log: AuditLog | None = None
        log_problem: KhotuiError | None = None
        try:
            files = open_for_load(request.kernel, request.initrd)
            try:
                plan = plan_load(path, request, kernel_file=files.kernel.fd,
                                 initrd_file=files.initrd_fd, status=status)
                if is_live:
                    try:
                        log = sink.open()
                    except KhotuiError as exc:
                        log_problem = exc
            except BaseException:
                files.close()
                raise
        except BaseException:
            if log is not None:
                log.close()
            if lock is not None:
                lock.release()
            raise
        return cls(path, files, plan, live=is_live, host_name=host_name or this_host_name(),
                   sink=sink, log=log, lock=lock, log_problem=log_problem,
                   receipt_path=receipt_path)

    # -- what the operator confirms ------------------------------------------------------------

    @property
    def dry_run(self) -> bool:
        return not self.live

    @property
    def dry_run_reason(self) -> str | None:
        return None if self.live else _dry_run_reason(self.root)

    @property
    def failing(self) -> tuple[Finding, ...]:
        """The failing checks on the opened files: a load refuses unless forced past them."""
        return tuple(f for f in self.plan.findings if f.status == FAIL)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        """About the files and the audit (no syslog, no JSON log): shown before confirming."""
        return tuple(self.files.warnings) + tuple([] if self.log is None else self.log.warnings)

    @property
    def failing_ids(self) -> tuple[str, ...]:
        """What `--force` confirms: the ids of the failing checks, in order, once each."""
        return tuple(dict.fromkeys(f.id for f in self.failing))

    @property
    def facts(self) -> ConfirmFacts:
        f = self.files
        return ConfirmFacts(
            kernel=FileFacts.of(f.kernel),
            initrd=None if f.initrd is None else FileFacts.of(f.initrd),
            cmdline=self.plan.cmdline, host_name=self.host_name, failing=self.failing,
            would_succeed=self.plan.would_succeed, dry_run=self.dry_run,
            dry_run_reason=self.dry_run_reason, warnings=self.warnings)

    # -- the commit ----------------------------------------------------------------------------

    def precheck(self, *, force: Collection[str] = ()) -> CommitResult | None:
        """What `commit()` answers without the kernel: the dry run or the refusal; None when
        the load would go to the kernel. `force`: the ids of the failing checks the operator
        confirmed overriding; any other failing check refuses. Then an unusable audit log
        raises its KhotuiError. Callers ask before confirming, so the operator is never asked
        to confirm what cannot happen."""
        flags = commit.load_flags(self.plan)
        if self.dry_run:
            return CommitResult("load", self.plan.would_succeed, flags, dry_run=True,
                                forced=bool(force), warnings=self.warnings,
                                failing=self.failing)
        unconfirmed = tuple(f for f in self.failing if f.id not in set(force))
        if unconfirmed:
            return CommitResult("load", False, flags, refused=True, forced=bool(force),
                                failing=self.failing, warnings=self.warnings,
                                unconfirmed=unconfirmed)
        if self.log_problem is not None:
            raise self.log_problem
        return None

    def recheck(self) -> None:
        """Plan again on the same descriptors against a fresh read of the host: a check that
        began failing since the confirmation (kexec_load_disabled set, KHO finalized, a load
        limit reached) must be seen by `precheck`."""
        self.plan = plan_load(self.root, self.plan.request, kernel_file=self.files.kernel.fd,
                              initrd_file=self.files.initrd_fd)

    def commit(self, *, force: Collection[str] = (), syscalls: Syscalls | None) -> CommitResult:
        """Apply the policy (module docstring), then close the files and the log (the lock is
        kept until `close()`). `syscalls` is used only for a live load; pass
        `syscall.real_syscalls()` only after the operator confirmed."""
        try:
            early = self.precheck(force=force)
            if early is not None:
                return early
            self.recheck()
            early = self.precheck(force=force)
            if early is not None:
                return early
            if syscalls is None:
                raise KhotuiError("no way to the kernel was given for this load",
                                  fix="this is a khotui bug: report it with the command you ran")
            done = commit.load_opened(self.plan, self.files, syscalls=syscalls, sink=self.sink,
                                      log=self.log)
            result = CommitResult(done.action, done.ok, done.flags, forced=bool(self.failing),
                                  errno=done.errno, explanation=done.explanation,
                                  actual=done.actual, diffs=done.diffs, warnings=done.warnings,
                                  failing=self.failing)
            return self._with_receipt(result) if result.ok else result
        finally:
            self._close_files()

    def _with_receipt(self, done: CommitResult) -> CommitResult:
        """`done` with the receipt written, or with why it could not be (the image is loaded
        either way: the caller says so and exits non-zero)."""
        path = receipt.default_path() if self.receipt_path is None else self.receipt_path
        try:
            written = receipt.write(path, receipt.build(self.plan, self.files, done))
        except KhotuiError as exc:
            return dataclasses.replace(done, receipt_problem=exc.problem)
        except OSError as exc:  # what write() does not name itself (fstat, fsync of the dir)
            return dataclasses.replace(done, receipt_problem=Problem(
                f"cannot write the receipt: {exc.strerror or exc}", os.fspath(path),
                receipt.WRITE_FIX))
        return dataclasses.replace(done, receipt=written)

    def interrupted_note(self, signame: str) -> str:
        """An interrupt of this session's load, worded from what happened."""
        return interrupt_note("load", signame, self.files.attempted, self.files.result,
                              self.root)

    def _close_files(self) -> None:
        self.files.close()
        if self.log is not None:
            self.log.close()

    def close(self) -> None:
        """Close the files and the log, and let the next load in (release the lock)."""
        self._close_files()
        if self.lock is not None:
            self.lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unload(*, syscalls: Syscalls | None, live: bool = True, on_crash: bool = False,
           sink: AuditSink = DEFAULT_SINK, log: AuditLog | None = None,
           state: UnloadState | None = None) -> CommitResult:
    """Unload the loaded kexec image: a dry run when not `live` (`syscalls` untouched), else
    KEXEC_FILE_UNLOAD through `syscalls`, audited before and after (`log`, opened before the
    confirmation; None: opened from `sink` now); a kernel refusal comes back explained.
    `state` tells an interrupt handler whether the syscall was made and what it answered."""
    flags = KEXEC_FILE_UNLOAD | (KEXEC_FILE_ON_CRASH if on_crash else 0)
    if not live:
        return CommitResult("unload", True, flags, dry_run=True)
    if syscalls is None:
        raise KhotuiError("no way to the kernel was given for this unload",
                          fix="this is a khotui bug: report it with the command you ran")
    outcome = run_unload(on_crash=on_crash, syscalls=syscalls, sink=sink, log=log, state=state)
    r = outcome.result
    if not r.ok:
        return CommitResult("unload", False, r.flags, errno=r.errno_name,
                            explanation=explain(r.errno, ExplainContext(flags=r.flags)),
                            warnings=tuple(outcome.warnings))
    return CommitResult("unload", True, r.flags, warnings=tuple(outcome.warnings))
