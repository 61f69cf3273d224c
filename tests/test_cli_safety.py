"""Issue #10: root and dry-run selection must never land on the live host by accident, and no
option may be abbreviated.

The attacks that could reach the kernel run as real `khotui` processes under the seccomp filter
of tests/syscall_guard.py, which kills the process (SIGSYS) on kexec_file_load, kexec_load or
reboot before the syscall runs: a pass is the kernel's word that no state-changing syscall was
made, and the tests are safe to run as root. The rest run in-process with the FakeKernel of
tests/fakes.py, to show that a snapshot root never reaches even the stand-in kernel.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from khotui.cli import main as cli
from khotui.load import syscall
from tests import syscall_guard
from tests.conftest import CAPTURES, REPO, VM
from tests.fakes import FakeKernel
from tests.fixtures.trees import copy_tree

TWO = CAPTURES / "two-nodes" / "sysroot"
KERNEL = VM / "bzImage-kho-7.3.4"

needs_seccomp = pytest.mark.skipif(not syscall_guard.supported(),
                                   reason="seccomp guard supports x86_64 and aarch64 Linux only")


def guarded(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m khotui ARGS` under the seccomp guard, stdin not a terminal."""
    result = subprocess.run([sys.executable, str(REPO / "tests" / "syscall_guard.py"),
                             sys.executable, "-m", "khotui", *args],
                            cwd=REPO, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode != -signal.SIGSYS, \
        f"khotui {' '.join(args)} reached a kexec/reboot syscall:\n{result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr + result.stdout
    return result


@pytest.fixture
def snap(tmp_path, shared) -> Path:
    return copy_tree(TWO, tmp_path / "snap")


def _load_args(tmp_path: Path) -> list[str]:
    return ["--kernel", str(KERNEL), "--cmdline", "console=ttyS0", "--yes", "--force",
            "--log", str(tmp_path / "khotui.log")]


# -- --root "" and --root resolving to / -------------------------------------------------------

@needs_seccomp
@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize("command", ["load", "unload"])
def test_an_empty_root_is_refused_not_the_live_host(tmp_path, shared, command, where):
    # `khotui load --root "$SNAP" --yes` with SNAP unset
    extra = _load_args(tmp_path) if command == "load" else ["--yes", "--log", str(tmp_path / "l")]
    argv = ["--root", "", command, *extra] if where == "before" else [command, "--root", "", *extra]
    result = guarded(*argv)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--root is empty" in result.stderr
    assert "fix: give the snapshot directory" in result.stderr
    assert not (tmp_path / "khotui.log").exists() and not (tmp_path / "l").exists()


@pytest.mark.parametrize("argv", [["--root", "", "status"], ["status", "--root", ""],
                                  ["plan", "--root", "", "--kernel", str(KERNEL)],
                                  ["snapshot", "--root", "", "/nonexistent/out"],
                                  ["status", "--root", " "]])
def test_an_empty_root_is_refused_by_every_command(argv, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--root is empty" in err and "fix:" in err and "Traceback" not in err


@needs_seccomp
def test_an_empty_root_does_not_start_the_app_on_the_live_host():
    # `khotui --root "$SNAP"`: the app (which can load and unload) must not open on this host
    result = guarded("--root", "", timeout=30)
    assert result.returncode == 2 and "--root is empty" in result.stderr


@needs_seccomp
def test_a_root_that_is_slash_is_refused(tmp_path, shared):
    # `--root "$SNAP/"` with SNAP unset is "/": the live host only ever comes from leaving
    # --root out
    for root in ("/", "//", "/."):
        result = guarded("unload", "--yes", "--root", root, "--log", str(tmp_path / "l"))
        assert result.returncode == 2, result.stdout + result.stderr
        assert "names this host's own /" in result.stderr and "leave out --root" in result.stderr
    assert not (tmp_path / "l").exists()


# -- unload (and load) on a snapshot or the demo are dry runs -----------------------------------

@needs_seccomp
@pytest.mark.parametrize("form", ["--demo unload", "unload --demo", "--root SNAP unload",
                                  "unload --root SNAP"])
def test_unload_on_a_snapshot_or_the_demo_is_a_dry_run(snap, tmp_path, form):
    argv = [str(snap) if word == "SNAP" else word for word in form.split()]
    log = tmp_path / "khotui.log"
    result = guarded(*argv, "--yes", "--log", str(log))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dry run" in result.stdout and "nothing was unloaded" in result.stdout
    assert "demo" in result.stdout if "--demo" in argv else str(snap) in result.stdout
    assert not log.exists(), "a dry run writes no audit record"


@needs_seccomp
def test_unload_dry_run_json_says_so(snap, tmp_path):
    import json
    result = guarded("unload", "--root", str(snap), "--yes", "--json", "--log", str(tmp_path / "l"))
    obj = json.loads(result.stdout)
    assert result.returncode == 0 and obj["ok"] is True and obj["dry_run"] is True
    assert "nothing was unloaded" in obj["note"]


@needs_seccomp
def test_unload_on_a_snapshot_does_not_ask(snap, tmp_path):
    # a dry run changes nothing, so there is nothing to confirm: no prompt on a non-terminal
    result = guarded("unload", "--root", str(snap), "--log", str(tmp_path / "l"))
    assert result.returncode == 0 and "dry run" in result.stdout


@needs_seccomp
@pytest.mark.parametrize("form", ["--demo load", "load --demo", "--root SNAP load",
                                  "load --root SNAP"])
def test_load_forced_on_a_snapshot_or_the_demo_is_a_dry_run(snap, tmp_path, form):
    argv = [str(snap) if word == "SNAP" else word for word in form.split()]
    result = guarded(*argv, *_load_args(tmp_path))
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert "dry run" in result.stdout and "nothing was loaded" in result.stdout
    assert not (tmp_path / "khotui.log").exists()


@pytest.mark.parametrize("argv", [["--demo", "unload", "--yes"], ["unload", "--demo", "--yes"],
                                  ["--root", "SNAP", "unload", "--yes"],
                                  ["unload", "--yes", "--root", "SNAP"]])
def test_a_snapshot_root_never_reaches_even_the_injected_kernel(snap, tmp_path, capsys, argv):
    fake = FakeKernel()
    argv = [str(snap) if a == "SNAP" else a for a in argv] + ["--log", str(tmp_path / "l")]
    assert cli.main(argv, syscalls=fake) == 0
    assert fake.calls == [] and "dry run" in capsys.readouterr().out
    assert syscall.DRY_RUN_ONLY, "a non-live root switches the real syscalls off"


def test_load_on_a_snapshot_never_reaches_the_injected_kernel(snap, tmp_path, capsys):
    fake = FakeKernel()
    code = cli.main(["load", "--root", str(snap), *_load_args(tmp_path)], syscalls=fake)
    assert code in (0, 1) and fake.calls == []
    assert "dry run" in capsys.readouterr().out and syscall.DRY_RUN_ONLY


def test_the_live_host_seam_is_explicit_and_refuses_the_demo(capsys):
    assert cli.main(["--demo", "unload", "--yes"], syscalls=FakeKernel(), root_is_live=True) == 2
    assert "test bug" in capsys.readouterr().err
    assert cli.main(["status", "--json"], root_is_live=True) == 2


# -- --root/--demo at two levels ---------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--demo", "status", "--root", "SNAP"],
    ["--root", "SNAP", "status", "--demo"],
    ["--root", "SNAP", "status", "--root", "OTHER"],
    ["--demo", "unload", "--yes", "--root", "SNAP"],
    ["--root", "SNAP", "plan", "--demo", "--kernel", str(KERNEL)],
])
def test_two_different_hosts_at_two_levels_exit_2(snap, tmp_path, capsys, argv):
    other = copy_tree(TWO, tmp_path / "other")
    argv = [str(snap) if a == "SNAP" else str(other) if a == "OTHER" else a for a in argv]
    fake = FakeKernel()
    assert cli.main(argv, syscalls=fake) == 2
    err = capsys.readouterr().err
    assert "two hosts given" in err and "give --root or --demo once" in err
    assert fake.calls == []


def test_the_same_host_at_both_levels_is_fine(snap, capsys):
    assert cli.main(["--root", str(snap), "status", "--root", str(snap), "--json"]) in (0, 1)
    assert cli.main(["--demo", "status", "--demo", "--json"]) in (0, 1)


# -- text status: what the kernel means by kexec_load_limit_reboot ------------------------------

@pytest.mark.parametrize(("content", "shown"), [(None, "limit=unknown"), ("-1\n", "limit=unlimited"),
                                                ("3\n", "limit=3"), ("0\n", "limit=0")])
def test_text_status_says_what_the_load_limit_means(snap, capsys, content, shown):
    limit = snap / "proc/sys/kernel/kexec_load_limit_reboot"
    limit.chmod(0o644)
    if content is None:
        limit.unlink()
    else:
        limit.write_text(content)
    cli.main(["status", "--root", str(snap)])
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if x.startswith("kexec ")]
    assert shown in line.split() and "None" not in line


# -- no abbreviated options --------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--demo", "load", "--kernel", str(KERNEL), "--y"],
    ["--demo", "load", "--kernel", str(KERNEL), "--yes", "--f"],
    ["--demo", "load", "--kernel", str(KERNEL), "--yes", "--e"],
    ["--demo", "load", "--kern", str(KERNEL)],
    ["unload", "--y"],
    ["--demo", "status", "--js"],
    ["--dem", "status"],
    ["status", "--ro", "/tmp"],
])
def test_abbreviated_options_are_unknown(argv, capsys):
    fake = FakeKernel()
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv, syscalls=fake)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err or "required" in err, err
    assert fake.calls == []


@needs_seccomp
def test_abbreviated_yes_is_refused_before_anything_runs(tmp_path):
    result = guarded("unload", "--y", "--log", str(tmp_path / "l"))
    assert result.returncode == 2 and "unrecognized arguments: --y" in result.stderr
    assert not (tmp_path / "l").exists()
