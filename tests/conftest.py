"""Shared test fixtures: where the real KHO captures and the KHO kernel live.

Tests read `../shared/` beside the checkout (override with KHOTUI_SHARED). Captures are the
ground truth: each is a sysroot recorded from a KHO kernel plus the kernel's own placement log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.where import CAPTURES, REPO, SHARED, VM

__all__ = ["CAPTURES", "REPO", "SHARED", "VM", "capture_names"]


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
