"""`khotui load` and `khotui unload`: the conversation around the one state-changing call.

The policy is `khotui.load.session`'s (the app follows the same one): the checks and the plan
run on the very descriptors that will be loaded; a failing check refuses unless --force (which
names what it overrides); on a snapshot (--root/--demo) `load` is a dry run and says so. This
module only prints, asks and maps the answer to an exit code: the operator confirms by typing
the host name unless --yes, and only then are the real syscalls opened. Executing the kexec is a
separate, explicitly confirmed step (--exec), through `systemctl kexec` when systemd is the init.

`syscalls` (from `cli.main.main`) replaces the real kernel for tests: given, it stands for the
kernel of `root`, so the load is not a dry run even on a snapshot. cli.main passes one only
for the live host (or a test's explicit `root_is_live`), and decides `unload`'s `live` too.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from khotui.cli import text
from khotui.errors import KhotuiError, Problem
from khotui.host.sysroot import Sysroot
from khotui.load import commit, session
from khotui.load.audit import AuditSink
from khotui.load.commit import CommitResult, warning_text
from khotui.load.session import LoadSession
from khotui.load.syscall import Syscalls, real_syscalls
from khotui.plan import PlanRequest, PlanResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Seam for tests: where the operator's answers come from.
ask: Callable[[str], str] = input


def _confirm(prompt: str, expected: str, out: TextIO) -> bool:
    if not sys.stdin.isatty() and ask is input:
        raise KhotuiError("cannot ask for confirmation: standard input is not a terminal",
                          fix="pass --yes to confirm non-interactively")
    out.write(prompt)
    out.flush()
    try:
        answer = ask("")
    except EOFError:
        return False
    return answer.strip() == expected


def load(args: argparse.Namespace, root: Path, out: TextIO | None = None, *,
         syscalls: Syscalls | None = None) -> int:
    out = out or sys.stdout
    request = PlanRequest(kernel=args.kernel, initrd=args.initrd, cmdline=args.cmdline,
                                 append=args.append)
    live = True if syscalls is not None else None
    with LoadSession.prepare(root, request, live=live, sink=AuditSink(log_path=args.log)) as s:
        human = not args.json
        if human:
            text.print_plan(s.plan, out)
            for w in s.warnings:
                out.write(f"warning: {warning_text(w)}\n")
        early = s.precheck(force=args.force)
        if early is not None and early.dry_run:
            return _finish(args, out, s.plan, None,
                           "dry run: the host state comes from a snapshot, so nothing was loaded",
                           EXIT_OK if early.ok else EXIT_FAILED)
        if early is not None:
            return _finish(args, out, s.plan, None,
                           "refused: a check fails (see above); nothing was loaded. --force "
                           "loads anyway", EXIT_FAILED)
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
        done = s.commit(force=args.force, syscalls=syscalls or real_syscalls())
    rc = _finish(args, out, s.plan, done, None, EXIT_OK if done.ok else EXIT_FAILED,
                 shown=s.warnings)
    if done.ok and args.execute:
        return _execute(root, out, syscalls)
    return rc


def _finish(args: argparse.Namespace, out: TextIO, plan: PlanResult,
            done: CommitResult | None, note: str | None, code: int,
            shown: tuple[Problem, ...] = ()) -> int:
    if args.json:
        obj = plan.as_dict()
        obj["load"] = None if done is None else done.as_dict()
        obj["note"] = note
        json.dump(obj, out, indent=2)
        out.write("\n")
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
    out.write(f"next: {commit.how_to_execute(Sysroot('/'))}\n")
    return code


def _execute(root: Path, out: TextIO, syscalls: Syscalls | None) -> int:
    host = session.this_host_name()
    if not _confirm(f"\nExecute the kexec now? The running kernel ends here. Type the host name "
                    f"({host}) again to execute: ", host, out):
        out.write("not executing; the image stays loaded\n")
        return EXIT_OK
    sysroot = Sysroot(root)
    if commit.systemd_is_init(sysroot):
        proc = subprocess.run(["systemctl", "kexec"])
        return EXIT_OK if proc.returncode == 0 else EXIT_FAILED
    (syscalls or real_syscalls()).reboot_kexec()
    return EXIT_FAILED  # reboot only returns on failure


def unload(args: argparse.Namespace, out: TextIO | None = None, *,
           syscalls: Syscalls | None = None, live: bool = True, where: str = "a snapshot") -> int:
    """`live` False (a snapshot or the demo, `where`; decided by cli.main): a dry run, like
    `load` there: no confirmation, no syscall, no audit record, and it says so."""
    out = out or sys.stdout
    if live and not args.yes:
        host = session.this_host_name()
        if not _confirm(f"Unload the loaded kexec image? Type the host name ({host}): ", host, out):
            out.write("not confirmed; nothing was unloaded\n")
            return EXIT_FAILED
    done = session.unload(syscalls=(syscalls or real_syscalls()) if live else None, live=live,
                          sink=AuditSink(log_path=args.log))
    note = (f"dry run: the host state comes from {where}, so nothing was unloaded"
            if done.dry_run else None)
    if args.json:
        obj: dict[str, object] = {"ok": done.ok, "errno": done.errno or "",
                                  "warnings": [warning_text(w) for w in done.warnings]}
        if note:
            obj.update(dry_run=True, note=note)
        json.dump(obj, out, indent=2)
        out.write("\n")
    elif note:
        out.write(note + "\n")
    elif done.ok:
        out.write("unloaded: no kexec image is loaded now\n")
    elif done.explanation is not None:
        ex = done.explanation
        out.write(f"unload failed: {done.errno}: {ex.summary}\n  fix: {ex.fix}\n")
    return EXIT_OK if done.ok else EXIT_FAILED
