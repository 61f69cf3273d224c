"""Project-wide promises: the core never imports Textual; dry-run paths never reach kexec.

The second is proven by the kernel, not by reading our code: the commands run under a seccomp
filter (tests/syscall_guard.py) that kills the process on kexec_file_load, kexec_load or reboot.
"""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import syscall_guard

REPO = Path(__file__).resolve().parent.parent
CORE = REPO / "khotui"


# The one sanctioned door from the core to the TUI: the CLI starts the app when no command is
# given, importing it inside that function only, so `khotui plan` never loads Textual.
LAUNCHER = ("main.py", "cmd_tui")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    if path.name == LAUNCHER[0]:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == LAUNCHER[1]:
                node.body = [n for n in node.body if not isinstance(n, ast.Try)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_never_imports_textual():
    offenders = []
    for path in CORE.rglob("*.py"):
        if "tui" in path.relative_to(CORE).parts:
            continue
        for name in _imports(path):
            if name.split(".")[0] == "textual" or name.startswith("khotui.tui"):
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert offenders == []


def test_core_import_does_not_load_textual_at_run_time():
    # Catches indirect imports too: load every core module, then look at sys.modules.
    code = (
        "import importlib, pkgutil, sys, khotui\n"
        "for m in pkgutil.walk_packages(khotui.__path__, 'khotui.'):\n"
        "    if m.name.startswith('khotui.tui') or m.name == 'khotui.__main__': continue\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'textual'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


needs_seccomp = pytest.mark.skipif(not syscall_guard.supported(),
                                   reason="seccomp guard supports x86_64 and aarch64 Linux only")


def guarded(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tests" / "syscall_guard.py"), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120, **kw)


@needs_seccomp
def test_guard_really_kills_a_kexec_syscall():
    # Positive control: without it, a passing dry-run test would prove nothing.
    nr = syscall_guard.ARCHES[__import__("platform").machine()][1]["kexec_file_load"]
    code = f"import ctypes; ctypes.CDLL(None).syscall({nr}, -1, -1, 0, None, 0); print('reached')"
    result = guarded(sys.executable, "-c", code)
    assert result.returncode == -signal.SIGSYS
    assert "reached" not in result.stdout


@needs_seccomp
def test_dry_run_commands_never_reach_a_kexec_or_reboot_syscall(tmp_path):
    """status, plan and snapshot run to completion under a filter that kills on kexec/reboot."""
    from tests.conftest import CAPTURES, VM

    root = CAPTURES / "two-nodes" / "sysroot"
    if not root.is_dir():
        pytest.skip("captures missing")
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"070701" + b"0" * 4090)
    py = sys.executable
    runs = [
        guarded(py, "-m", "khotui", "status", "--json", "--root", str(root)),
        guarded(py, "-m", "khotui", "plan", "--json", "--root", str(root),
                "--kernel", str(VM / "bzImage-kho-7.3.4"), "--initrd", str(initrd)),
        guarded(py, "-m", "khotui", "snapshot", "--root", str(root), str(tmp_path / "snap")),
        guarded(py, "-m", "khotui", "status", "--json"),          # the live host, read-only
    ]
    for result in runs:
        assert result.returncode in (0, 1), result.stderr
        assert "Traceback" not in result.stderr
    assert (tmp_path / "snap" / "proc" / "cmdline").exists()


def test_dry_run_commands_switch_off_the_real_syscalls():
    code = ("import khotui.cli.main as c, khotui.load.syscall as k\n"
            "c.main(['status', '--json', '--root', '/nonexistent'])\n"
            "print(k.DRY_RUN_ONLY)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip().endswith("True")
