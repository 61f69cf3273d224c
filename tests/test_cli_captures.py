"""`khotui plan --json` on every real capture reproduces the kernel's own recorded placement.

The expected values are read from each capture's `load/kernel.log` (the kernel's
KEXEC_FILE_DEBUG lines), never from a table copied into this file.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from khotui.host.kernellog import parse_kernel_log
from tests.conftest import CAPTURES, REPO, VM, capture_names
from tests.fixtures.trees import copy_tree

ERRNO = {0: None, 99: "EADDRNOTAVAIL", 22: "EINVAL", 1: "EPERM", 8: "ENOEXEC"}
LOADED = [c for c in capture_names() if (CAPTURES / c / "load" / "kernel.log").exists()]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "khotui", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def arm64_image(tmp_path_factory) -> Path:
    src = VM / "arm64" / "Image-kho-7.3.4-arm64.gz"
    if not src.exists():
        pytest.skip(f"{src} is missing")
    out = tmp_path_factory.mktemp("arm64") / "Image"
    with gzip.open(src) as f, open(out, "wb") as g:
        shutil.copyfileobj(f, g)
    return out


def make_initrd(size: int, dest: Path) -> Path:
    subprocess.run([sys.executable, str(CAPTURES / "make-initrd"), str(size), str(dest)], check=True)
    return dest


def with_running_image(capture: str, tmp_path: Path) -> Path:
    """The capture's sysroot with its running kernel's image at /boot/vmlinuz-<release>, as an
    installed host has it, so the purgatory is read from it (khotui.host.running_image): every
    x86 capture ran bzImage-kho-7.3.4."""
    root = copy_tree(CAPTURES / capture / "sysroot", tmp_path / "sysroot", writable=True)
    release = (root / "proc/sys/kernel/osrelease").read_text().strip()
    (root / "boot").mkdir(exist_ok=True)
    shutil.copyfile(VM / "bzImage-kho-7.3.4", root / "boot" / f"vmlinuz-{release}")
    return root


def with_boot_log(capture: str, tmp_path: Path) -> Path:
    """The arm64 capture's sysroot with the kernel log a snapshot keeps (`dmesg`): the arm64
    captures recorded that boot's log only after the load (load/kernel.log), and the boot part
    of it is what the host showed before (it says whether the RNG was ready for /chosen)."""
    root = copy_tree(CAPTURES / capture / "sysroot", tmp_path / "sysroot", writable=True)
    (root / "dmesg").write_text((CAPTURES / capture / "load" / "kernel.log").read_text())
    return root


def plan_args(capture: str, tmp_path: Path, request, *, image: bool = True) -> list[str]:
    cap = CAPTURES / capture
    scenario = (cap / "scenario.txt").read_text()
    kernel = request.getfixturevalue("arm64_image") if "arm64" in capture else VM / "bzImage-kho-7.3.4"
    root = cap / "sysroot"
    if image and "arm64" not in capture:
        root = with_running_image(capture, tmp_path)
    elif image:
        root = with_boot_log(capture, tmp_path)
    args = ["plan", "--json", "--root", str(root), "--kernel", str(kernel),
            "--cmdline", (cap / "load" / "cmdline").read_text()]
    m = re.search(r"^initrd: (\d+) bytes", scenario, re.M)
    if m:
        args += ["--initrd", str(make_initrd(int(m.group(1)), tmp_path / "initrd"))]
    return args


@pytest.mark.parametrize("capture", LOADED)
def test_plan_reproduces_the_kernels_placement(capture, tmp_path, request):
    cap = CAPTURES / capture
    logged = parse_kernel_log((cap / "load" / "kernel.log").read_text())
    errno = ERRNO[int((cap / "load" / "errno").read_text())]
    result = run_cli(*plan_args(capture, tmp_path, request))
    assert "Traceback" not in result.stderr
    plan = json.loads(result.stdout)
    assert plan["cmdline"] == (cap / "load" / "cmdline").read_text()

    if errno is None:
        assert result.returncode == 0, result.stdout
        assert plan["fits"] is True and plan["errno"] is None
        predicted = [(s["mem"], s["memsz"]) for s in plan["segments"]]
        actual = [(s.mem, s.memsz) for s in logged.segments]
        assert predicted == actual
        assert [s["bufsz"] for s in plan["segments"]] == [s.bufsz for s in logged.segments]
        # the purgatory was read from the running kernel's image, not assumed: nothing is
        assert not [a for a in plan["assumptions"] if "purgatory" in a]
        if (cap / "sysroot/sys/firmware/efi").exists() and \
                not (cap / "sysroot/sys/kernel/boot_params").exists():
            # an EFI boot recorded without boot_params: the descriptor size is guessed, and
            # said (tests/fixtures/captures/efi-* record it and are exact)
            assert plan["exact"] is False
            assert [a.split(":")[0] for a in plan["assumptions"]] == ["EFI descriptor size"]
        else:
            assert plan["exact"] is True and plan["assumptions"] == [], plan["assumptions"]
    else:
        assert result.returncode == 1
        assert plan["fits"] is False and plan["errno"] == errno
        failed = [s for s in plan["segments"] if s["mem"] is None]
        assert failed, "the segment that fits nowhere has mem null"
        fail = next(c for c in plan["checks"] if c["id"] == "segments-fit")
        assert fail["status"] == "fail" and errno in fail["message"]
        assert failed[0]["name"] in fail["message"]
        # what the kernel did place before it gave up matches too (x86 logs Loaded lines)
        for seg in plan["segments"]:
            line = logged.loaded.get(seg["name"]) if logged else None
            if line is not None and seg["mem"] is not None:
                assert seg["mem"] == line.mem
                assert line.memsz is None or seg["memsz"] == line.memsz


def test_kho_off_capture_says_why_and_still_predicts(tmp_path, request):
    result = run_cli(*plan_args("kho-off", tmp_path, request))
    plan = json.loads(result.stdout)
    assert plan["kho"]["enabled"] is False
    kho = next(c for c in plan["checks"] if c["id"] == "kho-enabled")
    assert kho["status"] == "warn" and "kho=off" in kho["message"]
    assert plan["fits"] is True and all(s["region"].startswith("System RAM") for s in plan["segments"])


def test_status_json_contract(shared):
    result = run_cli("status", "--json", "--root", str(CAPTURES / "two-nodes" / "sysroot"))
    assert result.returncode == 0
    status = json.loads(result.stdout)
    assert status["kho"]["enabled"] is True and status["kho"]["abi"] == "kho-v4"
    scratch_phys = CAPTURES / "two-nodes/sysroot/sys/kernel/debug/kho/out/scratch_phys"
    phys = [int(x, 16) for x in scratch_phys.read_text().split()]
    assert [r["addr"] for r in status["kho"]["scratch"]] == phys
    assert [r["kind"] for r in status["kho"]["scratch"]] == ["lowmem", "global", "node", "node"]
    assert status["kho"]["out_fdt"]["truncated"] is True
    assert status["kexec"]["loaded"] is False


def test_arm64_image_release_is_read_for_the_abi_check(tmp_path, request):
    """arm64 Images have no version field: the banner tells the release, so the ABI check can say."""
    result = run_cli(*plan_args("two-nodes-arm64", tmp_path, request))
    plan = json.loads(result.stdout)
    assert plan["kernel"]["version"].startswith("7.3.4 ")
    abi = next(c for c in plan["checks"] if c["id"] == "next-abi")
    assert abi["status"] == "ok" and "kho-v4" in abi["message"]


def test_withheld_running_image_names_the_purgatory_and_the_missing_path(tmp_path, request):
    """Without the running kernel's image the purgatory is the 7.3.4 test build's, and the plan
    says so: which input, the path looked for, and how to provide it."""
    result = run_cli(*plan_args("two-nodes", tmp_path, request, image=False))
    plan = json.loads(result.stdout)
    said = [a for a in plan["assumptions"] if a.startswith("purgatory:")]
    assert len(said) == 1
    assert "7.3.4 test build" in said[0] and "/boot/vmlinuz-7.3.4" in said[0]
    assert "khotui snapshot" in said[0]
    if "exact" in plan:
        assert plan["exact"] is False


def test_snapshot_keeps_the_purgatory_for_root(tmp_path, request):
    """`khotui snapshot` of a root with the running image records the purgatory ELF; planning
    on the snapshot (no image in it) then needs no purgatory assumption either."""
    root = with_running_image("two-nodes", tmp_path)
    snap = tmp_path / "snap"
    done = run_cli("--root", str(root), "snapshot", str(snap))
    assert done.returncode == 0, done.stderr
    assert (snap / "khotui-purgatory.ro").read_bytes()[:4] == b"\x7fELF"
    manifest = json.loads((snap / "khotui-snapshot.json").read_text())
    assert manifest["purgatory"]["source"] == "image"
    assert manifest["purgatory"]["banner"].startswith("7.3.4 (root@vm)")
    assert (manifest["purgatory"]["bufsz"], manifest["purgatory"]["memsz"]) == (0x4000, 0x5000)
    args = plan_args("two-nodes", tmp_path, request, image=False)
    args[args.index("--root") + 1] = str(snap)
    plan = json.loads(run_cli(*args).stdout)
    assert not [a for a in plan["assumptions"] if "purgatory" in a]
    logged = parse_kernel_log((CAPTURES / "two-nodes/load/kernel.log").read_text())
    assert [(s["mem"], s["memsz"]) for s in plan["segments"]] == \
        [(s.mem, s.memsz) for s in logged.segments]


def test_the_efi_capture_with_boot_params_is_exact(tmp_path):
    # tests/fixtures/captures/efi-two-nodes-bootparams: OVMF, boot_params recorded (its
    # version reads 0x0000 under the EFI stub's entry, efi_info is there): the descriptor size
    # is read, not assumed, and every segment is the kernel's
    cap = REPO / "tests" / "fixtures" / "captures" / "efi-two-nodes-bootparams"
    logged = parse_kernel_log((cap / "load" / "kernel.log").read_text())
    initrd = make_initrd(8 << 20, tmp_path / "initrd")
    result = run_cli("plan", "--json", "--root", str(cap / "sysroot"),
                     "--kernel", str(VM / "bzImage-kho-7.3.4"), "--initrd", str(initrd),
                     "--cmdline", (cap / "load" / "cmdline").read_text())
    plan = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout
    assert [(s["mem"], s["memsz"], s["bufsz"]) for s in plan["segments"]] == \
        [(s.mem, s.memsz, s.bufsz) for s in logged.segments]
    assert plan["exact"] is True and plan["assumptions"] == []
