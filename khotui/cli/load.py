"""`khotui load` and `khotui unload`: the conversation around the one state-changing call.

The policy is `khotui.load.session`'s (the app follows the same one): the checks and the plan
run on the very descriptors that will be loaded; a failing check refuses unless --force (which
names what it overrides); on a snapshot (--root/--demo) `load` is a dry run and says so. This
module only prints, asks and maps the answer to an exit code: the operator confirms by typing
the host name unless --yes, and only then are the real syscalls opened. Executing the kexec is a
separate, explicitly confirmed step (--exec), through `systemctl kexec` when systemd is the init.

Every precondition of every confirmation (a terminal to ask on, for the host name and for
--exec; the load lock; the audit log) is checked before anything is loaded. An interrupt
(Ctrl-C, SIGHUP when the SSH link drops, SIGTERM) is answered from what actually happened
(`LoadSession.interrupted_note`), never with a blanket "nothing was changed".

`syscalls` (from `cli.main.main`) replaces the real kernel for tests: given, it stands for the
kernel of `root`, so the load is not a dry run even on a snapshot. cli.main passes one only
for the live host (or a test's explicit `root_is_live`), and decides `unload`'s `live` too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from khotui.cli import text
from khotui.cli.jsonout import write_json
from khotui.errors import KhotuiError, Problem
from khotui.host.sysroot import Sysroot
from khotui.load import commit, session
from khotui.load.audit import AuditLog, AuditSink
from khotui.load.commit import CommitResult, warning_text
from khotui.load.interrupts import Interrupted, terminating
from khotui.load.lock import LoadLock
from khotui.load.opened import UnloadState
from khotui.load.session import LoadSession
from khotui.load.syscall import Syscalls, real_syscalls
from khotui.plan import PlanRequest, PlanResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

# Seam for tests: where the operator's answers come from.
ask: Callable[[str], str] = input

# systemctl by absolute path: a PATH set by whoever prepared the shell must not pick the
# program root runs to execute the kexec (/usr/bin on merged-/usr systems, /bin otherwise)
SYSTEMCTL_PATHS = ("/usr/bin/systemctl", "/bin/systemctl")


def _systemctl_kexec() -> int:
    exe = next((p for p in SYSTEMCTL_PATHS if os.access(p, os.X_OK)), None)
    if exe is None:
        raise KhotuiError("systemd is init but systemctl is in none of "
                          + ", ".join(SYSTEMCTL_PATHS),
                          fix="run `systemctl kexec` yourself; the image stays loaded")
    return subprocess.run([exe, "kexec"]).returncode


# Seam for tests: how `--exec` hands over to systemd.
run_systemctl_kexec: Callable[[], int] = _systemctl_kexec


def _can_ask() -> bool:
    return ask is not input or sys.stdin.isatty()


def _need_terminal(why: str) -> None:
    if not _can_ask():
        raise KhotuiError(f"cannot ask for confirmation{why}: standard input is not a terminal; "
                          "nothing was changed",
                          fix="pass --yes to confirm the load non-interactively; --exec always "
                              "asks, so run it from a terminal")


def _confirm(prompt: str, expected: str, out: TextIO) -> bool:
    if not expected.strip():
        raise KhotuiError("this host has no host name to type back, so the change cannot be "
                          "confirmed; nothing was changed",
                          fix="set one (hostnamectl set-hostname NAME), or pass --yes")
    _need_terminal("")
    out.write(prompt)
    out.flush()
    try:
        answer = ask("")
    except EOFError:
        return False
    return session.confirms(answer, expected)


def _audit_sink(args: argparse.Namespace) -> AuditSink:
    return AuditSink(log_path=None if getattr(args, "no_audit_log", False) else args.log)


def _say_interrupted(note: str) -> int:
    # stderr may be a dead terminal (SIGHUP): the audit log has the record either way
    with contextlib.suppress(OSError):
        print(f"khotui: {note}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _signame(exc: KeyboardInterrupt) -> str:
    return exc.name if isinstance(exc, Interrupted) else "SIGINT"


def load(args: argparse.Namespace, root: Path, out: TextIO | None = None, *,
         syscalls: Syscalls | None = None, request: PlanRequest | None = None,
         notes: list[str] | None = None) -> int:
    """`request`: the files as cli.main resolved them on the target (khotui.host.choose), with
    `notes` saying where each came from; None: the paths exactly as given."""
    out = out or sys.stdout
    with terminating():
        s: LoadSession | None = None
        try:
            s = LoadSession.prepare(root, request or _request(args),
                                    live=True if syscalls is not None else None,
                                    sink=_audit_sink(args),
                                    receipt_path=getattr(args, "receipt", None))
            if notes:
                s.plan.notes[:0] = notes
            with s:
                return _load(args, s, root, out, syscalls)
        except KeyboardInterrupt as exc:
            if s is None:
                return _say_interrupted(f"interrupted ({_signame(exc)}) before the load: "
                                        "nothing was changed")
            return _say_interrupted(s.interrupted_note(_signame(exc)))


def _request(args: argparse.Namespace) -> PlanRequest:
    return PlanRequest(kernel=args.kernel, initrd=args.initrd, cmdline=args.cmdline,
                       append=args.append)


def _load(args: argparse.Namespace, s: LoadSession, root: Path, out: TextIO,
          syscalls: Syscalls | None) -> int:
    human = not args.json
    if human:
        text.print_plan(s.plan, out)
        for w in s.warnings:
            out.write(f"warning: {warning_text(w)}\n")
    # --force confirms the failing checks it names here, and no others
    confirmed = s.failing_ids if args.force else ()
    early = s.precheck(force=confirmed)
    if early is not None and early.dry_run:
        return _finish(args, out, s.plan, None,
                       "dry run: the host state comes from a snapshot, so nothing was loaded "
                       "and no receipt was written",
                       EXIT_OK if early.ok else EXIT_FAILED, dry_run=True)
    if early is not None:
        return _finish(args, out, s.plan, None,
                       "refused: a check fails (see above); nothing was loaded. --force "
                       "loads anyway", EXIT_FAILED)
    # every confirmation this run will ask for must be possible before anything is loaded
    if not args.yes:
        _need_terminal("")
    if args.execute:
        _need_terminal(" for --exec")
        if not s.host_name.strip():
            raise KhotuiError("this host has no host name to type back, so --exec cannot be "
                              "confirmed; nothing was changed",
                              fix="set one (hostnamectl set-hostname NAME), or load without "
                                  "--exec")
    if s.failing and human:
        out.write("--force: overriding "
                  + ", ".join(f"{f.id} ({f.message})" for f in s.failing) + "\n")
    if not args.yes:
        facts = s.facts
        shown = (f"\nAbout to load with kexec_file_load(2):\n"
                 f"  kernel  {facts.kernel.resolved}  sha256 {facts.kernel.sha256}\n"
                 + (f"  initrd  {facts.initrd.resolved}  sha256 {facts.initrd.sha256}\n"
                    if facts.initrd else "  initrd  none\n")
                 + f"  cmdline {facts.cmdline}\n"
                 f"This replaces any loaded kexec image. Type the host name "
                 f"({facts.host_name}) to load: ")
        if not _confirm(shown, facts.host_name, out):
            return _finish(args, out, s.plan, None, "not confirmed; nothing was loaded",
                           EXIT_FAILED)
    done = s.commit(force=confirmed, syscalls=syscalls or real_syscalls())
    if done.refused:
        new = ", ".join(f"{f.id} ({f.message})" for f in done.unconfirmed)
        return _finish(args, out, s.plan, None,
                       f"refused: {new} fails now and was not confirmed"
                       + (f" (--force confirmed {', '.join(confirmed)})" if confirmed else "")
                       + "; nothing was loaded", EXIT_FAILED)
    rc = _finish(args, out, s.plan, done, None,
                 EXIT_OK if done.ok and done.receipt_problem is None else EXIT_FAILED,
                 shown=s.warnings)
    if done.ok and args.execute and done.receipt_problem is None:
        return _execute(s, done, out, syscalls)
    if done.ok and args.execute:
        out.write("not executing: the receipt was not written (see above)\n")
    return rc

def _finish(args: argparse.Namespace, out: TextIO, plan: PlanResult,
            done: CommitResult | None, note: str | None, code: int,
            shown: tuple[Problem, ...] = (), *, dry_run: bool = False) -> int:
    if args.json:
        obj = plan.as_dict()
        # a script must not read a dry run's "ok" as a load: it says which it was
        obj["dry_run"] = dry_run or (done is not None and done.dry_run)
        obj["load"] = None if done is None else done.as_dict()
        obj["note"] = note
        write_json("load", obj, out)
        return code
    if note:
        out.write(f"\n{note}\n")
    if done is None:
        return code
    ex = done.explanation
    if ex is not None:
        out.write(f"\nkexec_file_load failed: {done.errno}: {ex.summary}\n")
        out.write(f"  cause: {ex.cause}\n  fix:   {ex.fix}\n")
        return code
    out.write("\nloaded. The kernel's own placement against the preview:\n")
    for d in done.diffs:
        mark = "same" if d.same else "DIFFERS"
        pm = "-" if d.predicted_mem is None else f"0x{d.predicted_mem:x}"
        am = "-" if d.actual_mem is None else f"0x{d.actual_mem:x}"
        out.write(f"  {d.name:12} predicted {pm:>12}+0x{d.predicted_memsz:<9x} "
                  f"actual {am:>12}+0x{(d.actual_memsz or 0):<9x} {mark}\n")
    for w in done.warnings:
        if w not in shown:  # the file warnings were printed with the plan
            out.write(f"warning: {warning_text(w)}\n")
    if done.receipt is not None:
        out.write(f"receipt: {done.receipt} (after the kexec, `khotui verify --receipt "
                  f"{done.receipt}` checks what arrived)\n")
    rp = done.receipt_problem
    if rp is not None:
        out.write(f"\nthe image IS loaded, but its receipt was not written: {rp.headline}"
                  + (f" ({rp.path})" if rp.path else "") + "\n"
                  f"  fix: {rp.fix or 'see above'}; then load again with --receipt FILE (or "
                  "execute without a receipt: `khotui verify` will then have nothing to check)\n")
    out.write(f"next: {commit.how_to_execute(Sysroot('/'))}\n")
    return code


def _still_ours(s: LoadSession, done: CommitResult) -> str | None:
    """Why the loaded image may no longer be the one this run loaded (None: it is, as far as
    the kernel tells). The lock kept every other khotui load out since; the kernel's
    kexec_loaded and its log catch an unload or a load by another tool."""
    if session.kexec_loaded(s.root) is False:
        return "the kernel reports no image loaded any more (/sys/kernel/kexec_loaded is 0)"
    if done.actual is not None:
        loads = commit.logged_loads(Sysroot(s.root))
        if loads and loads[-1] != done.actual:
            return "the kernel log shows another kexec load after this one"
    return None


def _execute(s: LoadSession, done: CommitResult, out: TextIO, syscalls: Syscalls | None) -> int:
    host = s.host_name
    if not _confirm(f"\nExecute the kexec now? The running kernel ends here. Type the host name "
                    f"({host}) again to execute: ", host, out):
        out.write("not executing; the image stays loaded\n")
        return EXIT_OK
    changed = _still_ours(s, done)
    if changed is not None:
        out.write(f"not executing: {changed}; the image there may not be the one confirmed. "
                  "Load again, then execute.\n")
        return EXIT_FAILED
    if commit.systemd_is_init(Sysroot(s.root)):
        return EXIT_OK if run_systemctl_kexec() == 0 else EXIT_FAILED
    # reboot(LINUX_REBOOT_CMD_KEXEC) does not flush dirty pages (kernel/reboot.c: only
    # kernel_kexec(), no sync); reboot(2) says to call sync(2) first
    os.sync()
    (syscalls or real_syscalls()).reboot_kexec()
    return EXIT_FAILED  # reboot only returns on failure


def unload(args: argparse.Namespace, out: TextIO | None = None, *,
           syscalls: Syscalls | None = None, live: bool = True, where: str = "a snapshot") -> int:
    """`live` False (a snapshot or the demo, `where`; decided by cli.main): a dry run, like
    `load` there: no confirmation, no syscall, no lock, no audit record, and it says so."""
    out = out or sys.stdout
    if not live:
        note = f"dry run: the host state comes from {where}, so nothing was unloaded"
        if args.json:
            write_json("unload", {"ok": True, "dry_run": True, "errno": "", "warnings": [],
                                  "note": note}, out)
        else:
            out.write(note + "\n")
        return EXIT_OK
    state = UnloadState()
    with terminating():
        try:
            return _unload(args, out, syscalls, state)
        except KeyboardInterrupt as exc:
            return _say_interrupted(session.interrupt_note("unload", _signame(exc),
                                                           state.attempted, state.result,
                                                           Path("/")))


def _unload(args: argparse.Namespace, out: TextIO, syscalls: Syscalls | None,
            state: UnloadState) -> int:
    host = session.this_host_name()
    if not args.yes:
        _need_terminal("")
    log: AuditLog | None = None
    before: list[Problem] = []
    with LoadLock.acquire():
        try:
            log = _audit_sink(args).open()
            before = list(log.warnings)
            if not args.json:
                for w in log.warnings:
                    out.write(f"warning: {warning_text(w)}\n")
            if not args.yes and not _confirm(
                    f"Unload the loaded kexec image? Type the host name ({host}): ", host, out):
                out.write("not confirmed; nothing was unloaded\n")
                return EXIT_FAILED
            done = session.unload(syscalls=syscalls or real_syscalls(), log=log, state=state)
        finally:
            if log is not None:
                log.close()
    if args.json:
        write_json("unload", {"ok": done.ok, "dry_run": False, "errno": done.errno or "",
                              "warnings": [warning_text(w) for w in before + list(done.warnings)]},
                   out)
    elif done.ok:
        out.write("unloaded: no kexec image is loaded now\n")
    elif done.explanation is not None:
        ex = done.explanation
        out.write(f"unload failed: {done.errno}: {ex.summary}\n  fix: {ex.fix}\n")
    return EXIT_OK if done.ok else EXIT_FAILED
