"""One load, start to finish: the load policy `khotui load` and the app's Load both follow.

`LoadSession.prepare()` opens and hashes the kernel and initrd once (`opened`), then plans again
on those very descriptors against a fresh read of the host, so what the operator confirms is
what the kernel will read. The session then states the facts to confirm (`facts`: resolved
paths, sha256, sizes, cmdline, the host name to type, the failing checks, whether this is a dry
run and why). `commit(force=..., syscalls=...)` applies the policy, in this order:

1. not the live host: a dry run; nothing reaches a syscall (`syscalls` is not even looked at);
2. a failing check, not forced: refused before the kernel;
3. otherwise one `kexec_file_load` through the given `Syscalls`, the kernel's placement read
   back and compared (`commit.load_opened`); forced, the answer names what was overridden.

`unload()` is the same for KEXEC_FILE_UNLOAD. Callers own only the conversation: the CLI prints,
the TUI maps the `CommitResult` onto its screens. The kernel is reached only through the
`Syscalls` object the caller passes after the operator confirmed (`syscall.real_syscalls()` in
production, a fake in tests): the one way to inject it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from khotui.errors import KhotuiError, Problem
from khotui.host.sysroot import Sysroot
from khotui.load import commit
from khotui.load.audit import DEFAULT_SINK, AuditSink
from khotui.load.commit import CommitResult
from khotui.load.explain import ExplainContext, explain
from khotui.load.opened import OpenedFile, OpenedFiles, open_for_load, run_unload
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
    failing: tuple[Finding, ...]      # failing checks; --force overrides every one of them
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


def _dry_run_reason(root: Path) -> str:
    return f"{root} is a snapshot, not the live host"


class LoadSession:
    """The opened files, their plan, and the one commit. Close it (or use `with`) when done;
    `commit()` closes it itself: a session loads at most once."""

    def __init__(self, root: Path, files: OpenedFiles, plan: PlanResult, *, live: bool,
                 host_name: str, sink: AuditSink) -> None:
        self.root = root
        self.files = files
        self.plan = plan
        self.live = live
        self.host_name = host_name
        self.sink = sink

    @classmethod
    def prepare(cls, root: str | os.PathLike[str], request: PlanRequest, *,
                live: bool | None = None, status: HostStatus | None = None,
                host_name: str | None = None, sink: AuditSink = DEFAULT_SINK) -> LoadSession:
        """Open and hash the files, then plan on their descriptors.

        `live` None: the root is the live host only when it is `/`. `status` None reads the
        host now (pass a freshly read one to share it). Unreadable files raise KhotuiError and
        leave nothing open.
        """
        path = Path(root)
        files = open_for_load(request.kernel, request.initrd)
        try:
            plan = plan_load(path, request, kernel_file=files.kernel.fd,
                             initrd_file=files.initrd_fd, status=status)
        except BaseException:
            files.close()
            raise
        return cls(path, files, plan, live=Sysroot(path).is_live if live is None else live,
                   host_name=host_name or this_host_name(), sink=sink)

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
        return tuple(self.files.warnings)

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

    def precheck(self, *, force: bool) -> CommitResult | None:
        """What `commit()` answers without the kernel: the dry run or the refusal; None when
        the load would go to the kernel. Callers ask before confirming, so the operator is
        never asked to confirm what cannot happen."""
        flags = commit.load_flags(self.plan)
        if self.dry_run:
            return CommitResult("load", self.plan.would_succeed, flags, dry_run=True,
                                forced=force, warnings=self.warnings, failing=self.failing)
        if self.failing and not force:
            return CommitResult("load", False, flags, refused=True, failing=self.failing,
                                warnings=self.warnings)
        return None

    def commit(self, *, force: bool, syscalls: Syscalls | None) -> CommitResult:
        """Apply the policy (module docstring), then close the files. `syscalls` is used only
        for a live load; pass `syscall.real_syscalls()` only after the operator confirmed."""
        try:
            early = self.precheck(force=force)
            if early is not None:
                return early
            if syscalls is None:
                raise KhotuiError("no way to the kernel was given for this load",
                                  fix="this is a khotui bug: report it with the command you ran")
            done = commit.load_opened(self.plan, self.files, syscalls=syscalls, sink=self.sink)
            return CommitResult(done.action, done.ok, done.flags, forced=force,
                                errno=done.errno, explanation=done.explanation,
                                actual=done.actual, diffs=done.diffs, warnings=done.warnings,
                                failing=self.failing)
        finally:
            self.close()

    def close(self) -> None:
        self.files.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unload(*, syscalls: Syscalls | None, live: bool = True, on_crash: bool = False,
           sink: AuditSink = DEFAULT_SINK) -> CommitResult:
    """Unload the loaded kexec image: a dry run when not `live` (`syscalls` untouched), else
    KEXEC_FILE_UNLOAD through `syscalls`, audited; a kernel refusal comes back explained."""
    flags = KEXEC_FILE_UNLOAD | (KEXEC_FILE_ON_CRASH if on_crash else 0)
    if not live:
        return CommitResult("unload", True, flags, dry_run=True)
    if syscalls is None:
        raise KhotuiError("no way to the kernel was given for this unload",
                          fix="this is a khotui bug: report it with the command you ran")
    outcome = run_unload(on_crash=on_crash, syscalls=syscalls, sink=sink)
    r = outcome.result
    if not r.ok:
        return CommitResult("unload", False, r.flags, errno=r.errno_name,
                            explanation=explain(r.errno, ExplainContext(flags=r.flags)),
                            warnings=tuple(outcome.warnings))
    return CommitResult("unload", True, r.flags, warnings=tuple(outcome.warnings))
