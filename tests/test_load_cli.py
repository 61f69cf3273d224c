"""`khotui load` / `unload` as an operator runs them, with the syscall behind a fake seam.

The fake kernel answers like the real one did in the captures: on success it appends the
capture's own KEXEC_FILE_DEBUG log to the snapshot's `dmesg`, so khotui reads the placement back
exactly as it would from /dev/kmsg.
"""

from __future__ import annotations

import errno
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from khotui.cli import main as cli

from khotui.cli import load as cli_load
from tests.conftest import CAPTURES, VM


class FakeKernel:
    def __init__(self, root: Path, log: Path | None, fail: int | None = None):
        self.root, self.log, self.fail, self.calls = root, log, fail, []

    def kexec_file_load(self, kernel_fd, initrd_fd, cmdline, flags):
        import os
        self.calls.append((os.pread(kernel_fd, 4, 0x202), initrd_fd, cmdline, flags))
        if self.fail:
            raise OSError(self.fail, os.strerror(self.fail))
        if self.log is not None:
            with open(self.root / "dmesg", "a") as f:
                f.write(self.log.read_text())
        return 0

    def reboot_kexec(self):
        raise AssertionError("a test must never exec")


@pytest.fixture
def host(tmp_path, shared, monkeypatch):
    """A capture's sysroot treated as the live host, with a fake kernel."""
    def make(capture: str, fail: int | None = None):
        root = tmp_path / capture
        shutil.copytree(CAPTURES / capture / "sysroot", root, symlinks=True)
        fake = FakeKernel(root, CAPTURES / capture / "load" / "kernel.log", fail)
        monkeypatch.setattr(cli_load, "_is_live", lambda r: True)
        monkeypatch.setattr(cli_load, "syscalls_factory", lambda: fake)
        monkeypatch.setattr(cli_load, "_hostname", lambda: "testhost")
        return root, fake
    return make


def initrd(tmp_path: Path, size: int) -> Path:
    out = tmp_path / f"initrd-{size}"
    subprocess.run([sys.executable, str(CAPTURES / "make-initrd"), str(size), str(out)], check=True)
    return out


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_load_yes_loads_and_compares_with_the_kernels_own_placement(host, tmp_path, capsys):
    root, fake = host("two-nodes")
    cmdline = (CAPTURES / "two-nodes/load/cmdline").read_text()
    log = tmp_path / "khotui.log"
    code, out, err = run(["load", "--yes", "--root", str(root), "--kernel", str(VM / "bzImage-kho-7.3.4"),
                          "--initrd", str(initrd(tmp_path, 8 << 20)), "--cmdline", cmdline,
                          "--log", str(log)], capsys)
    assert code == 0, out + err
    assert len(fake.calls) == 1
    magic, initrd_fd, passed, flags = fake.calls[0]
    assert magic == b"HdrS" and initrd_fd >= 0
    assert passed.rstrip(b"\0") == cmdline.encode()
    assert flags & 0x8, "KEXEC_FILE_DEBUG is always set"
    rows = [line for line in out.splitlines() if " predicted " in line]
    assert len(rows) == 5 and all(line.rstrip().endswith("same") for line in rows)
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["result"] == "ok" and len(record["kernel"]["sha256"]) == 64
    assert "systemctl kexec" in out or "kexec -e" in out


def test_load_json_reports_actual_placement(host, tmp_path, capsys):
    root, fake = host("two-nodes")
    code, out, _ = run(["load", "--yes", "--json", "--root", str(root), "--kernel", str(VM / "bzImage-kho-7.3.4"),
                        "--initrd", str(initrd(tmp_path, 8 << 20)),
                        "--cmdline", (CAPTURES / "two-nodes/load/cmdline").read_text(),
                        "--log", str(tmp_path / "log")], capsys)
    obj = json.loads(out)
    assert code == 0 and obj["load"]["ok"] is True
    assert obj["load"]["matches_prediction"] is True
    assert [s["mem"] for s in obj["load"]["actual"]] == [s["mem"] for s in obj["segments"]]


def test_failing_check_refuses_without_force(host, tmp_path, capsys):
    root, fake = host("scratch-too-small", fail=errno.EADDRNOTAVAIL)
    args = ["load", "--yes", "--root", str(root), "--kernel", str(VM / "bzImage-kho-7.3.4"),
            "--initrd", str(initrd(tmp_path, 64 << 20)),
            "--cmdline", (CAPTURES / "scratch-too-small/load/cmdline").read_text(),
            "--log", str(tmp_path / "log")]
    code, out, _ = run(args, capsys)
    assert code == 1 and fake.calls == [] and "refused" in out
    code, out, _ = run(args + ["--force"], capsys)
    assert code == 1 and len(fake.calls) == 1
    assert "--force: overriding segments-fit" in out
    assert "EADDRNOTAVAIL" in out and "initrd" in out and "kho_scratch" in out


def test_confirmation_needs_the_host_name(host, tmp_path, capsys, monkeypatch):
    root, fake = host("two-nodes")
    args = ["load", "--root", str(root), "--kernel", str(VM / "bzImage-kho-7.3.4"),
            "--initrd", str(initrd(tmp_path, 8 << 20)), "--append", "khostage=2",
            "--log", str(tmp_path / "log")]
    monkeypatch.setattr(cli_load, "ask", lambda prompt: "yes")
    code, out, _ = run(args, capsys)
    assert code == 1 and fake.calls == [] and "not confirmed" in out
    assert "sha256" in out and "testhost" in out
    monkeypatch.setattr(cli_load, "ask", lambda prompt: "testhost")
    code, out, _ = run(args, capsys)
    assert code == 0 and len(fake.calls) == 1


def test_load_on_a_snapshot_is_a_dry_run(shared, tmp_path, capsys, monkeypatch):
    called = []
    monkeypatch.setattr(cli_load, "syscalls_factory", lambda: called.append(1))
    code, out, _ = run(["load", "--yes", "--root", str(CAPTURES / "two-nodes/sysroot"),
                        "--kernel", str(VM / "bzImage-kho-7.3.4"), "--append", "x=1"], capsys)
    assert code == 0 and called == [] and "dry run" in out


def test_unload_yes(host, tmp_path, capsys, monkeypatch):
    root, fake = host("two-nodes")
    calls = []
    fake.kexec_file_load = lambda *a: calls.append(a) or 0
    code, out, _ = run(["unload", "--yes", "--log", str(tmp_path / "log")], capsys)
    assert code == 0 and "unloaded" in out
    assert calls and calls[0][3] & 0x1  # KEXEC_FILE_UNLOAD
