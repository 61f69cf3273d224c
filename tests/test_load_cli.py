"""`khotui load` / `unload` as an operator runs them, against the fake kernel of tests/fakes.py.

The fake is passed as `cli.main(argv, syscalls=fake)`, the same object the app's tests pass to
`Source`: it stands for the kernel of the `--root` capture, so the load is not a dry run there.
"""

from __future__ import annotations

import errno
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from khotui.cli import load as cli_load
from khotui.cli import main as cli
from tests.conftest import CAPTURES, VM
from tests.fakes import FakeKernel, logs_like
from tests.fixtures.trees import copy_tree


@pytest.fixture(autouse=True)
def quiet_host(tmp_path, monkeypatch):
    """The load lock in a temporary directory, syslog into a socket of the test's own
    (`quiet_host.lines` holds what reached it): nothing of this machine's /run or /dev/log."""
    from khotui.load import audit, lock
    run_dir = tmp_path / "run-khotui"
    monkeypatch.setattr(lock, "LOCK_DIR", str(run_dir))
    sock_path = tmp_path / "devlog"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.setblocking(False)
    monkeypatch.setattr(audit, "SYSLOG_SOCKET", str(sock_path))

    class Syslog:
        def lines(self) -> list[str]:
            out = []
            while True:
                try:
                    out.append(sock.recv(65536).decode())
                except BlockingIOError:
                    return out
    yield Syslog()
    sock.close()


@pytest.fixture
def host(tmp_path, shared):
    """A capture's sysroot and a fake kernel standing for its kernel."""
    def make(capture: str, fail: int = 0) -> tuple[Path, FakeKernel]:
        root = tmp_path / capture
        copy_tree(CAPTURES / capture / "sysroot", root)
        return root, FakeKernel(fail, on_load=logs_like(capture, root))
    return make


def initrd(tmp_path: Path, size: int) -> Path:
    out = tmp_path / f"initrd-{size}"
    subprocess.run([sys.executable, str(CAPTURES / "make-initrd"), str(size), str(out)], check=True)
    return out


def run(argv: list[str], capsys, syscalls: FakeKernel | None = None) -> tuple[int, str, str]:
    # the fake stands for the kernel of the --root capture: say so (without it, a snapshot
    # root is a dry run that never reaches the fake)
    code = cli.main(argv, syscalls=syscalls, root_is_live=syscalls is not None)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_load_yes_loads_and_compares_with_the_kernels_own_placement(host, tmp_path, capsys):
    root, fake = host("two-nodes")
    cmdline = (CAPTURES / "two-nodes/load/cmdline").read_text()
    log = tmp_path / "khotui.log"
    code, out, err = run(["load", "--yes", "--root", str(root), "--kernel", str(VM / "bzImage-kho-7.3.4"),
                          "--initrd", str(initrd(tmp_path, 8 << 20)), "--cmdline", cmdline,
                          "--log", str(log)], capsys, fake)
    assert code == 0, out + err
    (call,) = fake.calls
    assert call.kernel[0x202:0x206] == b"HdrS" and call.initrd_fd >= 0
    assert call.kernel == (VM / "bzImage-kho-7.3.4").read_bytes()
    assert call.cmdline.rstrip(b"\0") == cmdline.encode()
    assert call.flags & 0x8, "KEXEC_FILE_DEBUG is always set"
    rows = [line for line in out.splitlines() if " predicted " in line]
    assert len(rows) == 5 and all(line.rstrip().endswith("same") for line in rows)
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["result"] == "ok" and len(record["kernel"]["sha256"]) == 64
    assert "systemctl kexec" in out or "kexec -e" in out


def test_load_json_reports_actual_placement(host, tmp_path, capsys):
    root, fake = host("two-nodes")
    code, out, _ = run(["load", "--yes", "--json", "--root", str(root),
                        "--kernel", str(VM / "bzImage-kho-7.3.4"),
                        "--initrd", str(initrd(tmp_path, 8 << 20)),
                        "--cmdline", (CAPTURES / "two-nodes/load/cmdline").read_text(),
                        "--log", str(tmp_path / "log")], capsys, fake)
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
    code, out, _ = run(args, capsys, fake)
    assert code == 1 and fake.calls == [] and "refused" in out
    code, out, _ = run([*args, "--force"], capsys, fake)
    assert code == 1 and len(fake.calls) == 1
    assert "--force: overriding segments-fit" in out
    assert "EADDRNOTAVAIL" in out and "initrd" in out and "kho_scratch" in out


def test_confirmation_needs_the_host_name(host, tmp_path, capsys, monkeypatch):
    root, fake = host("two-nodes")
    args = ["load", "--root", str(root), "--kernel", str(VM / "bzImage-kho-7.3.4"),
            "--initrd", str(initrd(tmp_path, 8 << 20)), "--append", "khostage=2",
            "--log", str(tmp_path / "log")]
    monkeypatch.setattr(cli_load, "ask", lambda prompt: "yes")
    code, out, _ = run(args, capsys, fake)
    assert code == 1 and fake.calls == [] and "not confirmed" in out
    assert "sha256" in out and f"({socket.gethostname()})" in out
    monkeypatch.setattr(cli_load, "ask", lambda prompt: socket.gethostname())
    code, out, _ = run(args, capsys, fake)
    assert code == 0 and len(fake.calls) == 1


def test_load_on_a_snapshot_is_a_dry_run(shared, tmp_path, capsys):
    # no fake: had the dry run reached real_syscalls(), the autouse guard would have failed it
    # (exit 2, "internal error")
    code, out, err = run(["load", "--yes", "--root", str(CAPTURES / "two-nodes/sysroot"),
                          "--kernel", str(VM / "bzImage-kho-7.3.4"), "--append", "x=1"], capsys)
    assert code == 0 and "dry run" in out, out + err


def test_a_failing_dry_run_exits_1_and_json_has_no_load(shared, tmp_path, capsys):
    code, out, _ = run(["load", "--yes", "--json", "--root",
                        str(CAPTURES / "scratch-too-small/sysroot"),
                        "--kernel", str(VM / "bzImage-kho-7.3.4"),
                        "--initrd", str(initrd(tmp_path, 64 << 20))], capsys)
    obj = json.loads(out)
    assert code == 1 and obj["load"] is None and obj["note"].startswith("dry run")
    assert obj["would_succeed"] is False


def test_file_warnings_are_printed_before_the_load_and_kept_in_the_json(host, tmp_path,
                                                                        capsys):
    root, fake = host("two-nodes")
    kernel = tmp_path / "bzImage"
    shutil.copyfile(VM / "bzImage-kho-7.3.4", kernel)
    kernel.chmod(0o666)
    args = ["load", "--yes", "--root", str(root), "--kernel", str(kernel),
            "--initrd", str(initrd(tmp_path, 8 << 20)),
            "--cmdline", (CAPTURES / "two-nodes/load/cmdline").read_text(),
            "--log", str(tmp_path / "log")]
    # a file others can write is a failing check (file-writable): refused unless --force
    code, out, _ = run(args, capsys, fake)
    assert code == 1 and not fake.calls and "refused" in out
    args.append("--force")
    code, out, _ = run(args, capsys, fake)
    assert code == 0
    assert "--force: overriding file-writable" in out
    (line,) = [ln for ln in out.splitlines()
               if ln.startswith("warning:") and "world-writable" in ln]  # once, with the plan
    assert out.index(line) < out.index("loaded.")
    assert line == (f"warning: {kernel}: the kernel is world-writable (mode 0666): anyone could "
                    f"change it before it is loaded. Fix: chmod o-w {kernel}")
    code, out, _ = run([*args, "--json"], capsys, fake)
    warnings = json.loads(out)["load"]["warnings"]
    assert line.removeprefix("warning: ") in warnings


def test_unload_yes(tmp_path, capsys):
    fake = FakeKernel()
    code, out, _ = run(["unload", "--yes", "--log", str(tmp_path / "log")], capsys, fake)
    assert code == 0 and "unloaded" in out
    (call,) = fake.calls
    assert call.flags == 0x1 and call.kernel_fd == -1  # KEXEC_FILE_UNLOAD
    assert json.loads((tmp_path / "log").read_text().splitlines()[-1])["action"] == "unload"


def test_unload_refused_is_explained_and_exits_1(tmp_path, capsys):
    fake = FakeKernel(errno.EPERM)
    code, out, _ = run(["unload", "--yes", "--json", "--log", str(tmp_path / "log")], capsys,
                       fake)
    # issue #13: every JSON object names its schema, and unload says it was no dry run
    assert code == 1 and json.loads(out) == {"schema": "khotui.unload/1", "ok": False,
                                             "dry_run": False, "errno": "EPERM", "warnings": []}
    code, out, _ = run(["unload", "--yes", "--log", str(tmp_path / "log")], capsys, fake)
    assert code == 1 and out.startswith("unload failed: EPERM: the kernel does not allow")
