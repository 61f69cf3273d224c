"""Whether KHO is on, decided as the kernel decides it, and what a plan may then claim.

Copies of the real captures with the debugfs tree removed or emptied, `debugfs=off` or
`debugfs=no-mount` on the command line, or a changed build config: `status --json` and
`plan --json` must say KHO is on with its scratch regions unknown (no plan, exit 1, the fix),
or off with the reason, never "off" for a KHO that is on. Then the plan's contract: `exact`,
`assumptions` (guesses only) and `notes`.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from khotui.cmdline import debugfs_requested, kho_requested, parse_scratch_size, scratch_param
from tests.conftest import CAPTURES, VM
from tests.fixtures.trees import copy_tree
from tests.test_cli_captures import arm64_image, make_initrd, run_cli  # noqa: F401 (fixture)

MOUNT_FIX = "mount -t debugfs none /sys/kernel/debug"
X86_KERNEL = VM / "bzImage-kho-7.3.4"


def sysroot_copy(capture: str, tmp_path: Path) -> Path:
    src = CAPTURES / capture / "sysroot"
    if not src.is_dir():
        pytest.skip(f"{src} is missing: the real KHO captures are needed for this test")
    return copy_tree(src, tmp_path / capture, writable=True)


def drop_debugfs(root: Path, *, empty: bool = False) -> None:
    shutil.rmtree(root / "sys/kernel/debug")
    if empty:
        (root / "sys/kernel/debug").mkdir()


def add_to_cmdline(root: Path, extra: str) -> None:
    path = root / "proc/cmdline"
    path.write_text(path.read_text().rstrip("\n") + f" {extra}\n")


def edit_config(root: Path, drop: tuple[str, ...] = (), add: tuple[str, ...] = ()) -> None:
    path = root / "proc/config.gz"
    lines = [line for line in gzip.decompress(path.read_bytes()).decode().splitlines()
             if not any(line.startswith(f"{d}=") for d in drop)]
    lines += [f"# {d} is not set" for d in drop] + list(add)
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def plan_json(root: Path, kernel: Path, *extra: str) -> tuple[int, dict]:
    result = run_cli("plan", "--json", "--root", str(root), "--kernel", str(kernel), *extra)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def status_json(root: Path) -> tuple[int, dict]:
    result = run_cli("status", "--json", "--root", str(root))
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def check(doc: dict, check_id: str) -> dict:
    return next(c for c in doc["checks"] if c["id"] == check_id)


def kernel_for(capture: str, request) -> Path:
    return request.getfixturevalue("arm64_image") if "arm64" in capture else X86_KERNEL


# --- KHO on, scratch unreadable ----------------------------------------------------------------

@pytest.mark.parametrize("capture", ["two-nodes", "two-nodes-arm64"])
@pytest.mark.parametrize("empty", [False, True], ids=["no-debugfs", "empty-debugfs"])
def test_kho_on_without_debugfs_is_on_with_scratch_unknown(capture, empty, tmp_path, request):
    root = sysroot_copy(capture, tmp_path)
    drop_debugfs(root, empty=empty)
    code, plan = plan_json(root, kernel_for(capture, request))
    assert code == 1
    assert plan["kho"]["enabled"] is True and plan["kho"]["scratch"] is None
    assert plan["fits"] is None and plan["segments"] == [] and plan["exact"] is False
    scratch = check(plan, "kho-scratch")
    assert scratch["status"] == "fail" and MOUNT_FIX in scratch["fix"]
    assert "KHO is off" not in json.dumps(plan)
    assert any("scratch regions are unknown" in n for n in plan["notes"])

    code, status = status_json(root)
    assert code == 1
    assert status["kho"]["enabled"] is True and status["kho"]["scratch"] is None
    assert status["kho"]["scratch_unknown"]["reason"] == "debugfs-not-mounted"
    assert MOUNT_FIX in check(status, "kho-scratch")["fix"]


def test_plan_text_says_on_unknown_and_the_fix(tmp_path):
    root = sysroot_copy("two-nodes", tmp_path)
    drop_debugfs(root)
    result = run_cli("plan", "--root", str(root), "--kernel", str(X86_KERNEL))
    assert result.returncode == 1
    assert "KHO      on, scratch regions UNKNOWN" in result.stdout
    assert f"fix: on the host: {MOUNT_FIX}" in result.stdout
    assert "prediction: not exact: no placement could be predicted" in result.stdout
    assert "KHO      off" not in result.stdout


def test_build_without_kho_debugfs_says_khotui_cannot_read_it(tmp_path):
    root = sysroot_copy("two-nodes", tmp_path)
    drop_debugfs(root)
    edit_config(root, drop=("CONFIG_KEXEC_HANDOVER_DEBUGFS",))
    code, plan = plan_json(root, X86_KERNEL)
    assert code == 1 and plan["kho"]["enabled"] is True and plan["kho"]["scratch"] is None
    scratch = check(plan, "kho-scratch")
    assert "cannot read the scratch regions on this build" in scratch["message"]
    assert "mount" not in scratch["fix"] and "CONFIG_KEXEC_HANDOVER_DEBUGFS=y" in scratch["fix"]


def test_unknown_debugfs_layout_is_refused_by_name(tmp_path):
    root = sysroot_copy("two-nodes", tmp_path)
    out = root / "sys/kernel/debug/kho/out"
    (out / "scratch_phys").rename(out / "bootmem_phys")
    (out / "scratch_len").rename(out / "bootmem_len")
    code, plan = plan_json(root, X86_KERNEL)
    assert code == 1 and plan["kho"]["enabled"] is True and plan["kho"]["scratch"] is None
    scratch = check(plan, "kho-scratch")
    assert "unknown KHO debugfs layout: files " in scratch["message"]
    assert "out/bootmem_phys" in scratch["message"] and "khotui knows 6.16–7.3" in scratch["message"]
    assert plan["segments"] == [] and plan["fits"] is None


# --- KHO off -----------------------------------------------------------------------------------

@pytest.mark.parametrize("param", ["debugfs=off", "debugfs=no-mount"])
def test_debugfs_off_turns_kho_off_and_says_so(param, tmp_path):
    """kho_init() fails in kho_debugfs_init() and sets kho_enable = false, logging nothing
    (kernel/liveupdate/kexec_handover.c); `no-mount` is `off` in 7.3 (fs/debugfs/inode.c)."""
    root = sysroot_copy("two-nodes", tmp_path)
    drop_debugfs(root)
    add_to_cmdline(root, param)
    code, status = status_json(root)
    assert status["kho"]["enabled"] is False and status["kho"]["scratch"] == []
    assert param in status["kho"]["off_reason"]
    assert "reboot without debugfs=off" in status["kho"]["fix"]
    kho = check(status, "kho-enabled")
    assert kho["status"] == "warn" and param in kho["message"] and "mount -t" not in kho["fix"]
    assert code == 0
    code, plan = plan_json(root, X86_KERNEL)
    assert plan["kho"]["enabled"] is False
    assert "kho-scratch" not in {c["id"] for c in plan["checks"]}


def test_debugfs_allow_none_config_turns_kho_off(tmp_path):
    root = sysroot_copy("two-nodes", tmp_path)
    drop_debugfs(root)
    edit_config(root, drop=("CONFIG_DEBUG_FS_ALLOW_ALL",), add=("CONFIG_DEBUG_FS_ALLOW_NONE=y",))
    _code, status = status_json(root)
    assert status["kho"]["enabled"] is False
    assert "CONFIG_DEBUG_FS_ALLOW_NONE" in status["kho"]["off_reason"]


def test_kho_off_capture_without_debugfs_stays_off(tmp_path):
    root = sysroot_copy("kho-off", tmp_path)
    if (root / "sys/kernel/debug").exists():
        drop_debugfs(root)
    _code, status = status_json(root)
    assert status["kho"]["enabled"] is False and "kho=off" in status["kho"]["off_reason"]


# --- the contract: exact, assumptions, notes ----------------------------------------------------

def test_x86_capture_is_not_exact_and_names_only_the_guess(tmp_path):
    code, plan = plan_json(CAPTURES / "two-nodes" / "sysroot", X86_KERNEL)
    assert code == 0 and plan["fits"] is True
    # every x86 capture still assumes the test build's purgatory (no earlier debug load)
    assert plan["exact"] is False
    assert any(a.startswith("purgatory:") and "not read from the running kernel" in a
               for a in plan["assumptions"])
    # explanations and choices are notes, not guesses
    for text in ("KHO on: every segment", "command line: the running one"):
        assert not any(a.startswith(text) for a in plan["assumptions"])
        assert any(n.startswith(text) for n in plan["notes"])


def test_plan_text_counts_the_assumptions(tmp_path):
    result = run_cli("plan", "--root", str(CAPTURES / "two-nodes" / "sysroot"),
                     "--kernel", str(X86_KERNEL))
    assert "prediction: not exact: 1 assumption\n" in result.stdout
    assert "notes\n" in result.stdout and "\n  - command line: the running one" in result.stdout
    assert "assumptions (guessed inputs" in result.stdout


def _arm64_args(tmp_path: Path) -> list[str]:
    cap = CAPTURES / "two-nodes-arm64"
    size = int(next(line.split()[1] for line in (cap / "scenario.txt").read_text().splitlines()
                    if line.startswith("initrd:")))
    return ["--initrd", str(make_initrd(size, tmp_path / "initrd")),
            "--cmdline", (cap / "load" / "cmdline").read_text()]


def test_arm64_is_exact_when_everything_was_read(tmp_path, arm64_image):  # noqa: F811
    """two-nodes-arm64 has no purgatory; with its kernel log (which says "random: crng init
    done") beside it, nothing is assumed: exact, assumptions empty, the kernel's own placement."""
    root = sysroot_copy("two-nodes-arm64", tmp_path)
    shutil.copy(CAPTURES / "two-nodes-arm64" / "load" / "kernel.log", root / "dmesg")
    code, plan = plan_json(root, arm64_image, *_arm64_args(tmp_path))
    assert code == 0 and plan["fits"] is True
    assert plan["assumptions"] == [] and plan["exact"] is True
    result = run_cli("plan", "--root", str(root), "--kernel", str(arm64_image), *_arm64_args(tmp_path))
    assert "prediction: exact" in result.stdout


def test_arm64_without_a_kernel_log_assumes_the_rng(tmp_path, arm64_image):  # noqa: F811
    code, plan = plan_json(CAPTURES / "two-nodes-arm64" / "sysroot", arm64_image, *_arm64_args(tmp_path))
    assert code == 0 and plan["exact"] is False
    (rng,) = plan["assumptions"]
    assert "RNG" in rng and "assumed" in rng and "dmesg" in rng


# --- the command line, as the kernel reads it ---------------------------------------------------

def test_kho_param_as_kho_parse_enable_reads_it():
    assert kho_requested("kho=on kho=maybe") is True        # a rejected value changes nothing
    assert kho_requested("kho=off kho=1") is True
    assert kho_requested("kho") is None and kho_requested("kho=") is None
    assert kho_requested("kho=on -- kho=off") is True


def test_debugfs_param_as_debugfs_kernel_reads_it():
    assert debugfs_requested("debugfs=off") is False
    assert debugfs_requested("debugfs=no-mount") is False
    assert debugfs_requested("debugfs=off debugfs=on") is True
    assert debugfs_requested("debugfs=off debugfs=bogus") is False
    assert debugfs_requested("quiet") is None


@pytest.mark.parametrize("name", ["kho_scratch", "kho_bootmem"])
def test_scratch_sizes_under_either_name(name):
    assert scratch_param(f"quiet {name}=64M,128M,32M") == (name, "64M,128M,32M")
    parsed = parse_scratch_size(name, "64M,0x1000000,32m")
    assert parsed is not None and parsed.sizes == (64 << 20, 16 << 20, 32 << 20)
    assert parse_scratch_size(name, "150%").scale == 150
    for bad in ("", "64M,128M", "0,0,0", "64M,128M,32MB", "abc%", "12345678901%"):
        assert parse_scratch_size(name, bad) is None


@pytest.mark.parametrize("name", ["kho_scratch", "kho_bootmem"])
def test_cmdline_scratch_check_reads_both_names(name, tmp_path):
    base = (CAPTURES / "two-nodes" / "load" / "cmdline").read_text()
    _code, plan = plan_json(CAPTURES / "two-nodes" / "sysroot", X86_KERNEL,
                            "--cmdline", f"{base} {name}=256M,512M,256M")
    found = check(plan, "cmdline-scratch")
    assert found["status"] == "ok" and f"{name}=256M,512M,256M" in found["message"]
    assert "cold boot" in found["message"]
    _code, plan = plan_json(CAPTURES / "two-nodes" / "sysroot", X86_KERNEL,
                            "--cmdline", f"{base} {name}=lots")
    found = check(plan, "cmdline-scratch")
    assert found["status"] == "warn" and "default 200%" in found["message"]
