"""`khotui load` and `khotui unload`: the conversation around the one state-changing call.

Safety model, in order: the checks and the plan run on the very descriptors that will be loaded;
a failing check refuses unless --force (which names what it overrides); the operator confirms by
typing the host name unless --yes; the files must be unchanged since they were hashed; then one
`kexec_file_load` with KEXEC_FILE_DEBUG, the kernel's placement read back and compared. Executing
the kexec is a separate, explicitly confirmed step (--exec), through `systemctl kexec` when
systemd is the init. On a snapshot (--root/--demo) `load` is a dry run and says so.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, TextIO

from khotui.load import commit

from khotui.load import kexec

from khotui.plan import report

from khotui.cli import text
from khotui.errors import KhotuiError
from khotui.host.sysroot import Sysroot
from khotui.load.opened import open_for_load, run_unload

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Seams for tests: where the syscalls and the operator's answers come from.
syscalls_factory: Callable[[], kexec.Syscalls] = kexec.real_syscalls
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


def _is_live(root: Path) -> bool:
    return Sysroot(root).is_live


def _hostname() -> str:
    return socket.gethostname()


def load(args: Any, root: Path, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    request = report.PlanRequest(kernel=args.kernel, initrd=args.initrd, cmdline=args.cmdline,
                                 append=args.append)
    live = _is_live(root)
    with open_for_load(args.kernel, args.initrd) as files:
        result = report.plan_load(root, request, kernel_file=files.kernel.fd,
                                  initrd_file=files.initrd_fd)
        human = not args.json
        if human:
            text.print_plan(result, out)
            for w in files.warnings:
                out.write(f"warning: {w}\n")
        if not live:
            return _finish(args, out, result, None,
                           "dry run: the host state comes from a snapshot, so nothing was loaded",
                           EXIT_OK if result.would_succeed else EXIT_FAILED)
        failing = [f for f in result.findings if f.status == "fail"]
        if failing and not args.force:
            return _finish(args, out, result, None,
                           "refused: a check fails (see above); nothing was loaded. --force "
                           "loads anyway", EXIT_FAILED)
        if failing and human:
            out.write("--force: overriding " + ", ".join(f"{f.id} ({f.message})" for f in failing) + "\n")
        if not args.yes:
            host = _hostname()
            shown = (f"\nAbout to load with kexec_file_load(2):\n"
                     f"  kernel  {files.kernel.resolved}  sha256 {files.kernel.sha256}\n"
                     + (f"  initrd  {files.initrd.resolved}  sha256 {files.initrd.sha256}\n"
                        if files.initrd else "  initrd  none\n")
                     + f"  cmdline {result.cmdline}\n"
                     f"This replaces any loaded kexec image. Type the host name ({host}) to load: ")
            if not _confirm(shown, host, out):
                return _finish(args, out, result, None, "not confirmed; nothing was loaded",
                               EXIT_FAILED)
        done = commit.load_opened(result, files, syscalls=syscalls_factory(),
                                  log_path=args.log)
    code = EXIT_OK if done.ok else EXIT_FAILED
    rc = _finish(args, out, result, done, None, code)
    if done.ok and getattr(args, "execute", False):
        return _execute(args, root, out)
    return rc


def _finish(args: Any, out: TextIO, result: Any, done: commit.CommitResult | None,
            note: str | None, code: int) -> int:
    if args.json:
        obj = result.as_dict()
        obj["load"] = None if done is None else done.as_dict()
        obj["note"] = note
        json.dump(obj, out, indent=2)
        out.write("\n")
        return code
    if note:
        out.write(f"\n{note}\n")
    if done is None:
        return code
    if not done.ok:
        ex = done.explanation
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
        out.write(f"warning: {w}\n")
    out.write(f"next: {commit.how_to_execute(Sysroot('/'))}\n")
    return code


def _execute(args: Any, root: Path, out: TextIO) -> int:
    host = _hostname()
    if not _confirm(f"\nExecute the kexec now? The running kernel ends here. Type the host name "
                    f"({host}) again to execute: ", host, out):
        out.write("not executing; the image stays loaded\n")
        return EXIT_OK
    sysroot = Sysroot(root)
    if commit.systemd_is_init(sysroot):
        proc = subprocess.run(["systemctl", "kexec"])
        return EXIT_OK if proc.returncode == 0 else EXIT_FAILED
    syscalls_factory().reboot_kexec()
    return EXIT_FAILED  # reboot only returns on failure


def unload(args: Any, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if not args.yes:
        host = _hostname()
        if not _confirm(f"Unload the loaded kexec image? Type the host name ({host}): ", host, out):
            out.write("not confirmed; nothing was unloaded\n")
            return EXIT_FAILED
    outcome = run_unload(syscalls=syscalls_factory(), log_path=args.log)
    res = outcome.result
    if args.json:
        json.dump({"ok": res.ok, "errno": res.errno_name, "warnings": outcome.warnings}, out, indent=2)
        out.write("\n")
    elif res.ok:
        out.write("unloaded: no kexec image is loaded now\n")
    else:
        ex = kexec.explain(res.errno)
        out.write(f"unload failed: {res.errno_name}: {ex.summary}\n  fix: {ex.fix}\n")
    return EXIT_OK if res.ok else EXIT_FAILED
