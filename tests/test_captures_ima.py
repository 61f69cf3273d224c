"""`khotui plan` on the real captures of the second x86_64 build (tests/fixtures/captures/ima-*):
IMA measuring under `ima_policy=tcb`, another purgatory (khotui-purgatory.ro), a KHO-booted
host, and hosts that never mounted debugfs (issue #11). Expected values come from each
capture's `load/kernel.log` (the kernel's KEXEC_FILE_DEBUG lines).

What the replay stands in for, and why:
- The loaded image (bzImage-ima-7.3.4, 9 MB) is not in git: its real setup sectors
  (`bzImage-ima-7.3.4.setup`: setup_sects, init_size, pref_address, cmdline_size...) padded to
  its real size, which is all the placement reads of it.
- khotui reads the IMA list after it opened the files, as on a live host; the replayed root
  therefore holds the list the guest had at the syscall (`load/ima-at-syscall/`), in which the
  guest's loader had already measured the kernel and initrd. IMA names and hashes an open file
  (d_path(), the file's digest): the stand-in files play the guest's, with the name and digest
  the list recorded for them (`_as_loaded`), so khotui finds them measured as the kernel did.
Everything else is the capture as the kernel showed it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from khotui.demo import _write_sparse_cpio
from khotui.host.ima import LoadFile, parse_list
from khotui.host.kernellog import parse_kernel_log
from khotui.plan import PlanRequest, dryrun, plan_load
from tests.fixtures.trees import copy_tree
from tests.fixtures.where import REPO

HERE = REPO / "tests" / "fixtures" / "captures"
SETUP = HERE / "bzImage-ima-7.3.4.setup"
IMAGE_SIZE = 9434112            # bzImage-ima-7.3.4, sha256 85195a31...a331 (scenario.txt)
V9FS_MAGIC = 0x01021997         # the guest loaded its files from the 9p share
IMA_DIR = "sys/kernel/security/ima"
CAPTURES = sorted(p.name for p in HERE.glob("ima-*") if (p / "load/kernel.log").exists())
NO_DEBUGFS = [c for c in CAPTURES if not (HERE / c / "sysroot/sys/kernel/debug").exists()]


def replay(capture: str, tmp_path: Path, monkeypatch) -> tuple[Path, PlanRequest]:
    cap = HERE / capture
    root = copy_tree(cap / "sysroot", tmp_path / "root", writable=True)
    at_syscall = cap / "load" / "ima-at-syscall"
    for f in at_syscall.iterdir():
        (root / IMA_DIR / f.name).write_bytes(f.read_bytes())
    with open(at_syscall / "binary_runtime_measurements", "rb") as listed:
        recorded = parse_list(listed.read, str(at_syscall))

    def as_loaded(role: str, path: str, source: object) -> LoadFile:
        # the stand-in plays the file the guest loaded: the name and digest the list recorded
        want = "bzImage" if role == "kernel" else "initrd"
        [(name, digests)] = [(n, d) for n, d in recorded.files.items() if want in n]
        [digest] = digests
        return LoadFile(role=role, name=name, fowner=0, fsmagic=V9FS_MAGIC, sig_len=0,
                        digest=lambda _algo: digest)

    monkeypatch.setattr(dryrun, "_load_file", as_loaded)
    kernel = tmp_path / "bzImage"
    with open(kernel, "wb") as f:
        f.write(SETUP.read_bytes())
        f.truncate(IMAGE_SIZE)
    scenario = (cap / "scenario.txt").read_text()
    initrd = None
    m = re.search(r"^initrd: (\d+) bytes", scenario, re.M)
    if m:
        initrd = tmp_path / "initrd"
        _write_sparse_cpio(initrd, int(m.group(1)))
    return root, PlanRequest(kernel=str(kernel), initrd=None if initrd is None else str(initrd),
                             cmdline=(cap / "load" / "cmdline").read_text())


def test_the_captures_are_here():
    assert len(CAPTURES) >= 6 and len(NO_DEBUGFS) >= 2 and SETUP.exists()


@pytest.mark.parametrize("capture", [c for c in CAPTURES if c not in NO_DEBUGFS])
def test_plan_reproduces_the_second_builds_placement_exactly(capture, tmp_path, monkeypatch):
    root, request = replay(capture, tmp_path, monkeypatch)
    logged = parse_kernel_log((HERE / capture / "load" / "kernel.log").read_text())
    result = plan_load(root, request)
    assert result.plan is not None and result.plan.fits is True
    assert [(s.mem, s.memsz, s.bufsz) for s in result.segments()] == \
        [(s.mem, s.memsz, s.bufsz) for s in logged.segments]
    assert result.segments()[0].name == "ima"
    # the purgatory came from the snapshot's record, the IMA size from the list: nothing guessed
    assert result.assumptions == [] and result.exact
    assert any("IMA segment" in n for n in result.notes)


@pytest.mark.parametrize("capture", NO_DEBUGFS)
def test_without_debugfs_kho_is_on_and_the_scratch_is_unknown(capture, tmp_path, monkeypatch):
    root, request = replay(capture, tmp_path, monkeypatch)
    result = plan_load(root, request)
    as_json = result.as_dict()
    assert as_json["kho"]["enabled"] is True and as_json["kho"]["scratch"] is None
    assert as_json["fits"] is None and not result.exact and not result.would_succeed
    failing = [f for f in result.findings if f.id == "kho-scratch"]
    assert failing and failing[0].status == "fail"
    assert "mount -t debugfs none /sys/kernel/debug" in (failing[0].fix or "")
