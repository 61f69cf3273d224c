"""Bad input of every kind: exit 2 or a failing finding, a message naming the file and the fix,
never a traceback, and nothing changed on the host."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CAPTURES, REPO, VM, python_runs_as
from tests.fixtures.trees import copy_tree

TWO = CAPTURES / "two-nodes" / "sysroot"
KERNEL = VM / "bzImage-kho-7.3.4"


def run_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "khotui", *args], cwd=REPO,
                            capture_output=True, text=True, timeout=60, **kw)
    assert "Traceback" not in result.stderr + result.stdout
    return result


@pytest.fixture
def sysroot(tmp_path, shared) -> Path:
    return copy_tree(TWO, tmp_path / "sysroot", writable=True)


def plan(root: Path, kernel: Path | str = KERNEL, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("plan", "--json", "--root", str(root), "--kernel", str(kernel), *extra)


def finding(result: subprocess.CompletedProcess, check_id: str) -> dict:
    return next(c for c in json.loads(result.stdout)["checks"] if c["id"] == check_id)


def test_missing_kernel_names_the_file_and_exits_2(shared, tmp_path):
    result = plan(TWO, tmp_path / "nope")
    assert result.returncode == 2
    assert str(tmp_path / "nope") in result.stderr and "fix:" in result.stderr


def test_directory_fifo_and_empty_file_are_refused(shared, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    for bad in (tmp_path, fifo, empty):
        result = plan(TWO, bad)
        assert result.returncode == 2, bad
        assert str(bad) in result.stderr and "fix:" in result.stderr


def test_truncated_bzimage(shared, tmp_path):
    cut = tmp_path / "vmlinuz-cut"
    cut.write_bytes(KERNEL.read_bytes()[:64 << 10])
    result = plan(TWO, cut)
    assert result.returncode in (1, 2)
    text = result.stdout + result.stderr
    assert "truncated" in text


def test_foreign_image_is_a_failing_finding(shared, tmp_path):
    elf = tmp_path / "vmlinux"
    elf.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\x3e\x00" + b"\0" * 4000)
    result = plan(TWO, elf)
    assert result.returncode == 1
    f = finding(result, "kernel-image")
    assert f["status"] == "fail" and "ELF" in f["message"]


def test_corrupt_outgoing_fdt_is_a_warning_naming_the_file(sysroot):
    (sysroot / "sys/kernel/debug/kho/out/fdt").write_bytes(b"\xde\xad\xbe\xef" * 16)
    result = run_cli("status", "--json", "--root", str(sysroot))
    assert result.returncode == 0
    f = finding(result, "kho-out-fdt")
    assert f["status"] == "warn" and "kho/out/fdt" in f["message"]


def test_garbled_scratch_file_fails_naming_it(sysroot):
    (sysroot / "sys/kernel/debug/kho/out/scratch_len").write_text("0x8000000\nbanana\n")
    result = run_cli("status", "--json", "--root", str(sysroot))
    assert result.returncode == 1
    f = finding(result, "kho-enabled")
    assert f["status"] == "fail" and "scratch_len" in f["message"]


def test_missing_debugfs_says_kho_is_on_and_scratch_unknown(sysroot):
    # kho=on and a KHO build: the kernel has KHO on whether debugfs was copied or not
    shutil.rmtree(sysroot / "sys/kernel/debug")
    result = run_cli("status", "--json", "--root", str(sysroot))
    status = json.loads(result.stdout)
    assert status["kho"]["enabled"] is True and status["kho"]["scratch"] is None
    assert status["kho"]["scratch_unknown"]["message"] and status["kho"]["scratch_unknown"]["fix"]
    assert result.returncode == 1


def test_lockdown_without_signature_fails(sysroot):
    (sysroot / "sys/kernel/security/lockdown").write_text("none [integrity] confidentiality\n")
    result = plan(sysroot)
    assert result.returncode == 1
    f = finding(result, "lockdown")
    assert f["status"] == "fail" and "signature" in f["message"]


def test_next_cmdline_without_kho_on_fails(shared):
    result = plan(TWO, KERNEL, "--cmdline", "console=ttyS0 ro")
    assert result.returncode == 1
    f = finding(result, "cmdline-kho")
    assert f["status"] == "fail" and "kho=on" in f["fix"]


def test_kexec_load_disabled_fails(sysroot):
    (sysroot / "proc/sys/kernel/kexec_load_disabled").write_text("1\n")
    result = plan(sysroot)
    assert result.returncode == 1
    assert finding(result, "kexec-load-disabled")["status"] == "fail"


def test_root_that_is_not_a_snapshot_exits_2(tmp_path):
    assert run_cli("status", "--root", str(tmp_path / "missing")).returncode == 2
    result = run_cli("status", "--root", str(tmp_path))
    assert result.returncode == 2 and "snapshot" in result.stderr


def test_bad_usage_exits_2():
    assert run_cli("plan").returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_non_root_on_the_live_host_gets_a_partial_view(tmp_path):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root (to drop to nobody) and setpriv")
    if not python_runs_as(65534):
        pytest.skip(f"nobody cannot start this venv's Python ({sys.executable}: its libpython "
                    "is below /root)")
    env = dict(os.environ, HOME=str(tmp_path))
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             sys.executable, "-m", "khotui", "status", "--json"],
                            cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert "Traceback" not in result.stderr
    if result.returncode == 2 and "Permission denied" in result.stderr:
        pytest.skip("the checkout is not readable by nobody here")
    status = json.loads(result.stdout)
    priv = next(c for c in status["checks"] if c["id"] == "privileges")
    assert priv["status"] == "fail" and "root" in priv["message"]


def test_non_root_plan_on_the_live_host_says_what_needs_root(tmp_path, shared):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root (to drop to nobody) and setpriv")
    if not python_runs_as(65534):
        pytest.skip(f"nobody cannot start this venv's Python ({sys.executable}: its libpython "
                    "is below /root)")
    kernel = KERNEL    # tmp_path is below a 0700 directory of root's; the shared kernel is 0444
    env = dict(os.environ, HOME="/nonexistent")
    env.pop("KHOTUI_DEBUG", None)
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             sys.executable, "-m", "khotui", "plan", "--json", "--kernel",
                             str(kernel)],
                            cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert "Traceback" not in result.stderr + result.stdout
    assert "internal error" not in result.stderr
    if result.returncode == 2 and "ermission denied" in result.stderr:
        pytest.skip("the checkout or the kernel copy is not readable by nobody here")
    plan = json.loads(result.stdout)
    checks = {c["id"]: c for c in plan["checks"]}
    # what needs root is said, with the fix
    assert checks["privileges"]["status"] == "fail" and "root" in checks["privileges"]["message"]
    assert checks["privileges"]["fix"]
    # the image is still inspected: a useful partial view
    assert checks["kernel-image"]["status"] == "ok" and plan["kernel"]["format"] == "bzImage"
    assert result.returncode == 1
    if "iomem" in checks:   # addresses hidden: no fake placement failure against zeros
        assert checks["iomem"]["fix"]
        seg = checks.get("segments-fit")
        assert seg is None or "0x0-0x0" not in seg["message"]
        assert any("root" in n for n in plan["notes"]) or plan["fits"] is not None
