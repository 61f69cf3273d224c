"""`khotui` command line: status, plan, snapshot, load, unload — and the TUI when no command is given.

The forms, exit codes (EPILOG, shown by --help) and JSON objects (khotui.cli.jsonout: every
one carries its `schema`; an error with --json is a khotui.error object) are a contract for
scripts:
  0  the load would succeed (plan), no failing check (status), done (snapshot, kernels, load,
     unload)
  1  the load would fail: a failing check, or a segment that fits nowhere
  2  bad usage or unreadable input
Every error reaches the user as one message naming the file and the fix; never a traceback.

Which host a command acts on is decided here, once (`select_target`): the live host only when
neither --root nor --demo is given; on anything else every command, `load` and `unload`
included, is a dry run with the real syscalls switched off. An empty --root, a --root that is
`/`, and two different hosts before and after the command are usage errors, never a silent
fall-back to the live host. No option may be abbreviated (`--y` is not `--yes`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from khotui import __version__
from khotui.cli.jsonout import JSON_CHUNK as JSON_CHUNK
from khotui.cli.jsonout import write_error, write_json
from khotui.errors import KhotuiError

if TYPE_CHECKING:
    from khotui.load.syscall import Syscalls
    from khotui.plan import PlanRequest

EXIT_OK, EXIT_WOULD_FAIL, EXIT_USAGE = 0, 1, 2
FORMATS = ("text", "json", "prometheus")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with our one-line style (it already uses 2 for usage errors), and
    takes only whole option names: by default argparse accepts any unique prefix, so `--y`,
    `--e` and `--f` would mean `--yes`, `--exec` and `--force` (a typo that confirms a load).
    Subparsers are made by this class too (`parser_class`), so the rule holds for every command.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    last_error: str | None = None

    def error(self, message: str) -> None:  # type: ignore[override]
        # kept on the top-level parser too, for main()'s JSON answer
        _Parser.last_error = message
        self.print_usage(sys.stderr)
        print(f"khotui: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_root(p: argparse.ArgumentParser, prefix: str = "") -> None:
    # The top-level parser stores under other names: argparse lets a subparser's defaults
    # overwrite values given before the command (`khotui --root X status`).
    src = p.add_mutually_exclusive_group()
    src.add_argument("--root", metavar="DIR", dest=prefix + "root", default=None,
                     help="read the host state below DIR (a snapshot) instead of /; "
                          "nothing is loaded or unloaded (a dry run)")
    src.add_argument("--demo", action="store_true", dest=prefix + "demo",
                     help="read the bundled demo snapshot (a real KHO capture)")


def _add_load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kernel", required=True, metavar="FILE",
                   help="kernel image to load; `default`: the entry the host boots next (BLS "
                        "default, else the newest installed; see `khotui kernels`). On "
                        "--root/--demo an absolute path the snapshot has is its file")
    p.add_argument("--initrd", metavar="FILE",
                   help="initrd to load (default: none; with --kernel default, that entry's)")
    cmd = p.add_mutually_exclusive_group()
    cmd.add_argument("--cmdline", metavar="TEXT",
                     help="exact command line for the new kernel")
    cmd.add_argument("--append", metavar="TEXT",
                     help="reuse the current command line (minus BOOT_IMAGE= and initrd=) plus TEXT")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_root(p)


EPILOG = """\
exit codes:
  0    the load would succeed (plan), no failing check (status), done (snapshot, kernels,
       load, unload); with --root/--demo a load or unload is a dry run and says so
  1    the load would fail (a failing check, or a segment that fits nowhere), a check fails
       (status), or a load/unload was refused or failed
  2    bad usage or unreadable input: with --json, {"schema": "khotui.error/1", "error":
       {"message", "path", "fix"}} on stdout
  130  interrupted

--json prints one object whose "schema" names its kind and version (khotui.plan/1 ...).

paths on a snapshot (--root DIR, --demo): an absolute --kernel/--initrd path that the snapshot
has is the snapshot's file (what the app and `khotui kernels` list), resolved beneath DIR
without following a link out of it; a path it lacks, or a relative one, is a file on this
machine. --kernel default: the entry the host boots next (as `systemctl kexec` picks it).

snapshot OUT writes the host state khotui reads to the new directory OUT (mode 0700); review
it anywhere with `khotui --root OUT`.
"""


VERIFY_HELP = """\
Run in the new kernel after `khotui load` and the kexec. Reads the receipt the load wrote and
checks, each by name:
  kho-booted       this kernel booted via KHO (kho/in is there)
  rebooted         the boot id differs from the receipt's (when both are known)
  kexec-metadata   kexec-metadata names the receipt's release as the previous one and the
                   kexec count rose by one
  kernel           the running kernel is the loaded one (/proc/version's banner matches
                   the image's version string)
  cmdline          /proc/cmdline is the loaded command line
  blobs            every outgoing KHO sub-blob arrived (kho/in/sub_fdts) by name and size,
                   and by sha256 where its content is stable (all but LUO)
  luo              the LUO live-update number rose by one (skipped: "LUO not on")
With --root DIR a snapshot taken after the kexec verifies offline; --demo checks the demo.
Exit: 0 everything arrived, 1 something did not (named), 2 bad input (a missing, unreadable,
foreign or corrupt receipt).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="khotui", description="Prepare a kexec with Kexec HandOver (KHO).",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"khotui {__version__}")
    _add_root(parser, prefix="top_")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("status", help="KHO state, scratch regions, kexec state, findings")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_root(p)

    p = sub.add_parser("plan", help="dry run: checks and the predicted placement of every segment")
    _add_load_args(p)
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="text (default), json (the same as --json), or prometheus: the text "
                        "exposition format, for node_exporter's textfile collector")
    p.add_argument("--textfile", metavar="PATH", default=None,
                   help="with --format prometheus: write the metrics to PATH (whole, through a "
                        "temporary renamed into place, mode 0644) instead of stdout, even when "
                        "the dry run cannot run (exit 2: khotui_check_success 0)")

    p = sub.add_parser("kernels", help="the installed kernels, newest first, and the default")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_root(p)

    p = sub.add_parser("snapshot", help="write the host state khotui reads to OUT (a sysroot)",
                       description="Copy what khotui reads (procfs, sysfs, the KHO debugfs "
                                   "files, /boot's kernel list) into the new directory OUT, "
                                   "readable by its owner only; review it with "
                                   "`khotui --root OUT`.")
    p.add_argument("out", metavar="OUT", help="the directory to create (must not exist or be empty)")
    _add_root(p)

    p = sub.add_parser("load", help="kexec_file_load the kernel after the checks and the plan")
    _add_load_args(p)
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--force", action="store_true", help="load even when a check fails (says which)")
    p.add_argument("--exec", dest="execute", action="store_true",
                   help="after a successful load, execute the kexec (asks again)")
    p.add_argument("--log", metavar="FILE", default="/var/log/khotui.log",
                   help="append a JSON line per load here (default: %(default)s)")
    p.add_argument("--no-audit-log", action="store_true",
                   help="load even without a JSON audit log (on purpose; see --log)")
    p.add_argument("--receipt", metavar="FILE", default=None,
                   help="after a successful load, write what was handed over here, for "
                        "`khotui verify` after the kexec (default: /var/lib/khotui/receipt.json;"
                        " mode 0600, directory 0700; none on a dry run)")

    p = sub.add_parser("verify", help="after the kexec: did what the load's receipt recorded "
                                      "arrive? (exit 0 yes, 1 no, 2 bad receipt)",
                       description=VERIFY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--receipt", metavar="FILE", default=None,
                   help="the receipt `khotui load` wrote (default: /var/lib/khotui/receipt.json)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_root(p)

    p = sub.add_parser("unload", help="unload the loaded kexec image")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--log", metavar="FILE", default="/var/log/khotui.log")
    p.add_argument("--no-audit-log", action="store_true",
                   help="unload even without a JSON audit log (on purpose; see --log)")
    _add_root(p)
    return parser


@dataclass(frozen=True)
class Target:
    """The host a command acts on: the live host only when neither --root nor --demo is given.

    Decided here, once, for every command: on anything but the live host the real kexec and
    reboot syscalls are switched off before the command runs, so `load`, `unload` and the app
    are dry runs there whatever path they take."""

    root: Path
    demo: bool
    live: bool


def _level(args: argparse.Namespace, prefix: str) -> tuple[str | None, bool]:
    return getattr(args, prefix + "root", None), bool(getattr(args, prefix + "demo", False))


def _describe(root: str | None, demo: bool) -> str:
    return "--demo" if demo else f"--root {root}"


def select_target(args: argparse.Namespace) -> Target:
    """--root/--demo before and after the command, checked and reduced to one `Target`."""
    top, sub = _level(args, "top_"), _level(args, "")
    for root, _ in (top, sub):
        if root is not None and not root.strip():
            # `--root "$SNAP"` with SNAP unset: the empty string must not mean "/" (the live host)
            raise KhotuiError(
                "--root is empty (an unset shell variable?); refusing rather than reading, "
                "loading or unloading the live host",
                fix="give the snapshot directory made by `khotui snapshot`, or leave out --root "
                    "to act on this host")
    top_given = top[0] is not None or top[1]
    sub_given = sub[0] is not None or sub[1]
    if top_given and sub_given and top != sub:
        raise KhotuiError(
            f"two hosts given: {_describe(*top)} before the command and {_describe(*sub)} "
            "after it",
            fix="give --root or --demo once, either before or after the command")
    root, demo = sub if sub_given else top
    if demo:
        from khotui.demo import demo_root
        return Target(demo_root(), demo=True, live=False)
    if root is None:
        return Target(Path("/"), demo=False, live=True)
    path = Path(root)
    if not path.is_dir():
        raise KhotuiError("not a directory", path=root,
                          fix="give a snapshot directory made by `khotui snapshot`, or omit --root")
    try:
        is_slash = path.resolve() == Path("/")
    except OSError:
        is_slash = False
    if is_slash:
        # `--root "$SNAP/"` with SNAP unset: a --root always names a snapshot; the live host
        # is reached only by leaving --root out, so a typo cannot turn a dry run into a load
        raise KhotuiError("--root names this host's own / (an unset shell variable?), not a "
                          "snapshot", path=root,
                          fix="leave out --root to act on this host, or give the snapshot "
                              "directory made by `khotui snapshot`")
    return Target(path, demo=False, live=False)


def cmd_status(args: argparse.Namespace, target: Target) -> int:
    from khotui.cli import text
    from khotui.plan import host_status
    status = host_status(target.root)
    if args.json:
        write_json("status", status.as_dict())
    else:
        text.print_status(status)
    return EXIT_WOULD_FAIL if status.failed else EXIT_OK


def resolve_request(args: argparse.Namespace, target: Target) -> tuple[PlanRequest, list[str]]:
    """The files `--kernel`/`--initrd` name on the target (khotui.host.choose: the rule the app
    shares), and a note per file read from a snapshot or chosen as the default."""
    from khotui.host.choose import default_kernel, resolve_file
    from khotui.host.sysroot import Sysroot
    from khotui.plan import PlanRequest
    sysroot = Sysroot(target.root)
    live = target.live and sysroot.is_live
    notes: list[str] = []
    kernel, initrd = args.kernel, args.initrd
    if kernel == "default":
        chosen, why = default_kernel(sysroot)
        kernel = chosen.kernel_path
        if initrd is None:
            initrd = chosen.initrd_path
        notes.append(f"--kernel default: {kernel}" + (f" with {initrd}" if initrd else "")
                     + f": {why}")
    paths: list[str] = []
    for typed in (kernel, initrd):
        if typed is None or live:
            paths.append(typed)
            continue
        f = resolve_file(sysroot, typed)
        paths.append(f.path)
        notes.append(f.note)
    return PlanRequest(kernel=paths[0], initrd=paths[1], cmdline=args.cmdline,
                       append=args.append), notes


class _UsageError(Exception):
    """A combination of options argparse cannot express; reported by main() as a usage error."""


def plan_format(args: argparse.Namespace) -> None:
    """`plan`'s output: --format, with --json as --format json; --textfile only with
    --format prometheus. Sets args.format and args.json; a contradiction is a usage error."""
    given = getattr(args, "format", None)
    if args.json and given not in (None, "json"):
        raise _UsageError(f"--json and --format {given} disagree: give one of them")
    args.format = given or ("json" if args.json else "text")
    args.json = args.format == "json"
    if args.textfile is not None and args.format != "prometheus":
        raise _UsageError("--textfile needs --format prometheus")


def _now() -> float:
    """The check's time for the metrics (a function, so tests can fix it)."""
    import time
    return time.time()


def write_metrics(args: argparse.Namespace, exposition: str, verdict: str) -> None:
    """The metrics to stdout, or to --textfile with one line saying where they went and the
    `verdict` they hold."""
    if args.textfile is None:
        sys.stdout.write(exposition)
        sys.stdout.flush()
        return
    from khotui.cli import textfile
    written = textfile.write(args.textfile, exposition)
    print(f"khotui: wrote {written}: {verdict}")
    if not written.endswith(textfile.SUFFIX):
        print(f"khotui: note: node_exporter's textfile collector reads only *{textfile.SUFFIX} "
              "files", file=sys.stderr)


def cmd_plan(args: argparse.Namespace, target: Target) -> int:
    from khotui.cli import text
    from khotui.plan import plan_load
    request, notes = resolve_request(args, target)
    result = plan_load(target.root, request)
    # where each file came from is a rule applied, not a guess: a note
    result.notes[:0] = notes
    if args.format == "prometheus":
        from khotui.cli import prometheus
        failing = [f.id for f in result.findings if f.status == "fail"]
        write_metrics(args, prometheus.plan_metrics(result, now=_now()),
                      "the load would succeed" if result.would_succeed else
                      "the load would fail (" + ", ".join(
                          ([result.errno] if result.errno else []) + failing) + ")")
    elif args.json:
        write_json("plan", result.as_dict())
    else:
        text.print_plan(result)
    return EXIT_OK if result.would_succeed else EXIT_WOULD_FAIL


def cmd_kernels(args: argparse.Namespace, target: Target) -> int:
    from khotui.host.choose import default_kernel
    from khotui.host.kernels import find_kernels
    from khotui.host.sysroot import Sysroot
    sysroot = Sysroot(target.root)
    kernels = find_kernels(sysroot)
    default, why = (None, None)
    if kernels:
        chosen, why = default_kernel(sysroot)
        default = chosen.kernel_path
    if args.json:
        write_json("kernels", {"kernels": [dict(k.as_dict(), default=k.kernel_path == default)
                                           for k in kernels],
                               "default": default, "default_why": why})
        return EXIT_OK
    if not kernels:
        print("no installed kernels found (no /boot/vmlinuz-*, no boot loader entries)")
        return EXIT_OK
    for k in kernels:
        marks = ("default " if k.kernel_path == default else "") + ("running" if k.running else "")
        print(f"{k.version:24} {k.kernel_path:40} {k.initrd_path or '-':40} {marks.strip()}")
    print(f"default: {default} ({why}); plan it with: khotui plan --kernel default")
    return EXIT_OK


def cmd_snapshot(args: argparse.Namespace, target: Target) -> int:
    from khotui.host.snapshot import write_snapshot
    from khotui.host.sysroot import Sysroot
    skipped = write_snapshot(Sysroot(target.root), Path(args.out),
                             progress=lambda note: print(f"khotui: {note}", file=sys.stderr))
    print(f"khotui: wrote a snapshot to {args.out}; review it with: khotui --root {args.out}")
    # it holds the physical memory map, the kernel log, the command line and the KHO data
    print(f"khotui: {args.out} is readable by its owner only (0700); share it with care")
    if skipped:
        # what the snapshot lacks, and why (e.g. debugfs as non-root): the review must know
        print(f"khotui: {len(skipped)} not copied:", file=sys.stderr)
        for line in skipped:
            print(f"  skipped {line}", file=sys.stderr)
    return EXIT_OK


def cmd_load(args: argparse.Namespace, target: Target, syscalls: Syscalls | None = None) -> int:
    from khotui.cli import load
    # `syscalls` only on the live host (or a test's stand-in for it): on a snapshot load.load()
    # gets none, and its session is a dry run that never asks for a kernel
    request, notes = resolve_request(args, target)
    return load.load(args, target.root, syscalls=syscalls if target.live else None,
                     request=request, notes=notes)


def cmd_unload(args: argparse.Namespace, target: Target, syscalls: Syscalls | None = None) -> int:
    from khotui.cli import load
    if not target.live:
        return load.unload(args, syscalls=None, live=False,
                           where="the demo snapshot" if target.demo else f"snapshot {target.root}")
    return load.unload(args, syscalls=syscalls)


def cmd_verify(args: argparse.Namespace, target: Target) -> int:
    from khotui.cli import verify
    return verify.run(args, target.root)


def cmd_tui(args: argparse.Namespace, target: Target) -> int:
    try:
        from khotui.tui import require_terminal
        require_terminal()      # before Textual is even imported: no terminal, no wait
        from khotui.tui.app import run_app
    except ImportError as exc:  # the TUI is optional for scripts; say what is missing
        raise KhotuiError(f"the interactive app is not available: {exc}",
                          fix="use `khotui status` or `khotui plan`, or reinstall khotui") from None
    return run_app(root=target.root, demo=target.demo)


# Commands that only read: the real kexec syscalls are switched off before they run, so not even
# a bug can reach kexec_file_load from them (tests/test_invariants.py proves it with seccomp).
DRY_RUN_COMMANDS = {"status", "plan", "snapshot", "kernels", "verify"}

COMMANDS: dict[str, Callable[[argparse.Namespace, Target], int]] = {
    "status": cmd_status, "plan": cmd_plan, "snapshot": cmd_snapshot, "kernels": cmd_kernels,
    "verify": cmd_verify}


def main(argv: Sequence[str] | None = None, *, syscalls: Syscalls | None = None,
         root_is_live: bool = False) -> int:
    """`syscalls`: the kernel `load`/`unload` talk to instead of this host's (tests pass a
    fake; see khotui.cli.load). It is reached only on the live host: with --root or --demo the
    command is a dry run and never calls it, unless a test says `root_is_live=True` (the --root
    snapshot then stands for a live host whose kernel is `syscalls`)."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(words)
        if args.command == "plan":
            try:
                plan_format(args)
            except _UsageError as exc:
                parser.error(str(exc))
    except SystemExit as exc:
        # a usage error with --json still answers in JSON (--help and --version exit 0), and
        # with --format prometheus in metrics, on stdout only: the arguments that would name a
        # --textfile are the ones that are wrong (a stale textfile shows in
        # khotui_check_timestamp_seconds)
        if exc.code == EXIT_USAGE:
            message = getattr(parser, "last_error", None) or "bad usage"
            wanted = _format_in(words)
            if wanted == "json" or "--json" in words:
                write_error(message, fix="see `khotui --help`")
            elif wanted == "prometheus":
                from khotui.cli import prometheus
                sys.stdout.write(prometheus.error_metrics(message, None, "see `khotui --help`",
                                                          now=_now()))
        raise
    wants_json = bool(getattr(args, "json", False))
    if args.command in DRY_RUN_COMMANDS:
        from khotui.load.syscall import forbid_real_syscalls
        forbid_real_syscalls()
    try:
        target = select_target(args)
        if root_is_live:
            if syscalls is None or target.demo:
                raise KhotuiError("root_is_live needs a stand-in kernel and a --root snapshot",
                                  fix="this is a test bug: pass syscalls= and --root")
            target = Target(target.root, demo=False, live=True)
        if not target.live:
            # every command on a snapshot or the demo: no real kexec or reboot syscall from here
            # on (tests/test_invariants.py proves it for unload and load under seccomp)
            from khotui.load.syscall import forbid_real_syscalls
            forbid_real_syscalls()
        if args.command == "load":
            return cmd_load(args, target, syscalls)
        if args.command == "unload":
            return cmd_unload(args, target, syscalls)
        return COMMANDS.get(args.command, cmd_tui)(args, target)
    except KhotuiError as exc:
        print(f"khotui: {exc}", file=sys.stderr)
        if wants_json:
            write_error(exc.message, exc.path, exc.fix)
        _error_metrics(args, exc.message, exc.path, exc.fix, exc)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("khotui: interrupted; nothing was changed", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a bug in khotui: still no traceback for the operator
        if os.environ.get("KHOTUI_DEBUG"):
            raise
        message = (f"internal error ({type(exc).__name__}: {exc}); nothing was changed on the "
                   "host")
        fix = "rerun with KHOTUI_DEBUG=1 for the traceback and report it"
        print(f"khotui: {message}. {fix[0].upper()}{fix[1:]}.", file=sys.stderr)
        if wants_json:
            write_error(message, None, fix)
        _error_metrics(args, message, None, fix, exc)
        return EXIT_USAGE


def _format_in(words: Sequence[str]) -> str | None:
    """The --format value among raw arguments (for answering a usage error in that format)."""
    for n, word in enumerate(words):
        if word == "--format" and n + 1 < len(words):
            return words[n + 1]
        if word.startswith("--format="):
            return word.split("=", 1)[1]
    return None


def _error_metrics(args: argparse.Namespace, message: str, path: str | None, fix: str | None,
                   exc: BaseException) -> None:
    """`plan --format prometheus` that could not run (exit 2) still answers in metrics
    (khotui_check_success 0 and why), to --textfile when given: a broken host shows up in
    monitoring as broken, not as yesterday's answer. Not when the textfile itself is what
    failed: that is said on stderr only."""
    if getattr(args, "format", None) != "prometheus":
        return
    from khotui.cli import prometheus
    from khotui.cli.textfile import TextfileError
    if isinstance(exc, TextfileError):
        return
    try:
        write_metrics(args, prometheus.error_metrics(message, path, fix, now=_now()),
                      "khotui_check_success 0 (the dry run could not run)")
    except KhotuiError as again:
        print(f"khotui: {again}", file=sys.stderr)
