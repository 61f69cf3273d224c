"""`khotui` command line: status, plan, snapshot, load, unload — and the TUI when no command is given.

The forms and exit codes are a contract for scripts:
  0  the load would succeed (plan), no failing check (status), done (snapshot, load, unload)
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
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from khotui import __version__
from khotui.errors import KhotuiError

if TYPE_CHECKING:
    from khotui.load.syscall import Syscalls
    from khotui.plan import PlanRequest

EXIT_OK, EXIT_WOULD_FAIL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with our one-line style (it already uses 2 for usage errors), and
    takes only whole option names: by default argparse accepts any unique prefix, so `--y`,
    `--e` and `--f` would mean `--yes`, `--exec` and `--force` (a typo that confirms a load).
    Subparsers are made by this class too (`parser_class`), so the rule holds for every command.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
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
    p.add_argument("--kernel", required=True, metavar="FILE", help="kernel image to load")
    p.add_argument("--initrd", metavar="FILE", help="initrd to load (default: none)")
    cmd = p.add_mutually_exclusive_group()
    cmd.add_argument("--cmdline", metavar="TEXT",
                     help="exact command line for the new kernel")
    cmd.add_argument("--append", metavar="TEXT",
                     help="reuse the current command line (minus BOOT_IMAGE= and initrd=) plus TEXT")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_root(p)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="khotui", description="Prepare a kexec with Kexec HandOver (KHO).")
    parser.add_argument("--version", action="version", version=f"khotui {__version__}")
    _add_root(parser, prefix="top_")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("status", help="KHO state, scratch regions, kexec state, findings")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_root(p)

    p = sub.add_parser("plan", help="dry run: checks and the predicted placement of every segment")
    _add_load_args(p)

    p = sub.add_parser("snapshot", help="write the host state khotui reads to OUT (a sysroot)")
    p.add_argument("out", metavar="OUT")
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


JSON_CHUNK = 64 << 10


def _print_json(obj: object) -> None:
    # In 64 KiB pieces: json.dump() writes every token separately (200,000 writes for the
    # status of a 10,000-node KHO FDT), each a syscall when stdout is unbuffered
    # (PYTHONUNBUFFERED, python -u); json.dumps() would hold the whole text at once.
    out, parts, size = sys.stdout, [], 0
    for part in json.JSONEncoder(indent=2, sort_keys=False).iterencode(obj):
        parts.append(part)
        size += len(part)
        if size >= JSON_CHUNK:
            out.write("".join(parts))
            parts, size = [], 0
    parts.append("\n")
    out.write("".join(parts))


def cmd_status(args: argparse.Namespace, target: Target) -> int:
    from khotui.cli import text
    from khotui.plan import host_status
    status = host_status(target.root)
    if args.json:
        _print_json(status.as_dict())
    else:
        text.print_status(status)
    return EXIT_WOULD_FAIL if status.failed else EXIT_OK


def _plan_request(args: argparse.Namespace) -> PlanRequest:
    from khotui.plan import PlanRequest
    return PlanRequest(kernel=args.kernel, initrd=args.initrd, cmdline=args.cmdline,
                       append=args.append)


def cmd_plan(args: argparse.Namespace, target: Target) -> int:
    from khotui.cli import text
    from khotui.plan import plan_load
    result = plan_load(target.root, _plan_request(args))
    if args.json:
        _print_json(result.as_dict())
    else:
        text.print_plan(result)
    return EXIT_OK if result.would_succeed else EXIT_WOULD_FAIL


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
    return load.load(args, target.root, syscalls=syscalls if target.live else None)


def cmd_unload(args: argparse.Namespace, target: Target, syscalls: Syscalls | None = None) -> int:
    from khotui.cli import load
    if not target.live:
        return load.unload(args, syscalls=None, live=False,
                           where="the demo snapshot" if target.demo else f"snapshot {target.root}")
    return load.unload(args, syscalls=syscalls)


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
DRY_RUN_COMMANDS = {"status", "plan", "snapshot"}

COMMANDS: dict[str, Callable[[argparse.Namespace, Target], int]] = {
    "status": cmd_status, "plan": cmd_plan, "snapshot": cmd_snapshot}


def main(argv: Sequence[str] | None = None, *, syscalls: Syscalls | None = None,
         root_is_live: bool = False) -> int:
    """`syscalls`: the kernel `load`/`unload` talk to instead of this host's (tests pass a
    fake; see khotui.cli.load). It is reached only on the live host: with --root or --demo the
    command is a dry run and never calls it, unless a test says `root_is_live=True` (the --root
    snapshot then stands for a live host whose kernel is `syscalls`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("khotui: interrupted; nothing was changed", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # a bug in khotui: still no traceback for the operator
        if os.environ.get("KHOTUI_DEBUG"):
            raise
        print(f"khotui: internal error ({type(exc).__name__}: {exc}); nothing was changed on the "
              "host. Rerun with KHOTUI_DEBUG=1 for the traceback and report it.", file=sys.stderr)
        return EXIT_USAGE
