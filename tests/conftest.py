"""Shared test fixtures: where the real KHO captures and the KHO kernel live.

Tests read `../shared/` beside the checkout (override with KHOTUI_SHARED). Captures are the
ground truth: each is a sysroot recorded from a KHO kernel plus the kernel's own placement log.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.where import CAPTURES, REPO, SHARED, VM

__all__ = ["CAPTURES", "REPO", "SHARED", "VM", "capture_names", "python_runs_as"]


def python_runs_as(uid: int, python: str = sys.executable) -> bool:
    """Whether user `uid` (setpriv, as root) can start `python`. pyenv's 3.12 and 3.13 load
    libpython from their RUNPATH under /root (0700), which `nobody` cannot read; a 3.11 venv
    ran only because Debian ships libpython3.11 in /lib. The Makefile now picks Python >= 3.12
    for the venv (ansible-core), so tests that run it as another user ask first."""
    if not shutil.which("setpriv"):
        return False
    p = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                        python, "-c", ""], capture_output=True, timeout=60)
    return p.returncode == 0


def capture_names() -> list[str]:
    if not CAPTURES.is_dir():
        return []
    return sorted(p.name for p in CAPTURES.iterdir() if (p / "sysroot").is_dir())


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is missing: the real KHO captures are needed for this test")
    return SHARED


@pytest.fixture(autouse=True)
def no_real_libc(monkeypatch):
    """In every test: real_syscalls() cannot open libc, and the dry-run switch starts off and is
    put back afterwards (an in-process `cli.main(["status"])` sets it for the whole process)."""
    from khotui.load import syscall
    def refuse():
        raise AssertionError("a test tried to open the real libc for a syscall")
    monkeypatch.setattr(syscall, "_open_libc", refuse)
    monkeypatch.setattr(syscall, "DRY_RUN_ONLY", False)


@pytest.fixture(autouse=True)
def receipt_in_tmp(tmp_path, monkeypatch):
    """In every test: a load's default receipt goes to the test's own directory, never to
    this machine's /var/lib/khotui."""
    from khotui.load import receipt
    monkeypatch.setattr(receipt, "DEFAULT_PATH", str(tmp_path / "var-lib-khotui" / "receipt.json"))
