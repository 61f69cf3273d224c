"""6.16–7.0 hosts (kho-v1, out/finalize, sub-node property `fdt`) through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, VM
from tests.fixtures.legacy_kho import make_legacy_sysroot


def cli(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "khotui", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert "Traceback" not in out.stderr
    return out


def check(doc: dict, check_id: str) -> dict:
    return next(c for c in doc["checks"] if c["id"] == check_id)


@pytest.mark.parametrize("kernel,finalized", [("6.18", False), ("6.18", True), ("7.0", False)])
def test_status_reports_abi_layout_and_finalize(tmp_path, shared, kernel, finalized):
    root = make_legacy_sysroot(tmp_path / "root", finalized=finalized, kernel=kernel)
    status = json.loads(cli("status", "--json", "--root", str(root)).stdout)
    assert status["kho"]["layout"] == "6.16-7.0" and status["kho"]["finalized"] is finalized
    if status["kho"]["abi"] is not None:
        assert status["kho"]["abi"] == "kho-v1"
    fin = check(status, "kho-finalize")
    assert fin["status"] == ("ok" if finalized else "warn")
    if not finalized:
        assert "echo 1 > /sys/kernel/debug/kho/out/finalize" in fin["fix"]


def test_a_73_kernel_cannot_take_a_kho_v1_handover(tmp_path, shared):
    root = make_legacy_sysroot(tmp_path / "root", finalized=True, kernel="7.0")
    out = cli("plan", "--json", "--root", str(root), "--kernel", str(VM / "bzImage-kho-7.3.4"))
    plan = json.loads(out.stdout)
    abi = check(plan, "next-abi")
    assert abi["status"] == "fail" and "kho-v4" in abi["message"] and "kho-v1" in abi["message"]
    assert out.returncode == 1
