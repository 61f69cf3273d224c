"""Issue #10, the load's own findings, each reproduced as the attacker did it.

Interrupts around the syscall (a child process running `khotui load` with a fake kernel that
sits inside the syscall, signalled from here), the audit trail (written before, fsynced,
refused when it cannot be), the force box overriding only what it named, one load at a time
(an flock under /run, safe against planted links), and the file-writable check (ACLs, remote
filesystems). Every test here fails on the code before the fix.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from khotui.cli import load as cli_load
from khotui.cli import main as cli
from khotui.errors import KhotuiError
from khotui.host import ownership
from khotui.load import audit, lock
from khotui.load import session as load_session
from khotui.load.audit import AuditSink
from khotui.load.lock import LoadLock
from khotui.load.session import LoadSession
from khotui.plan import PlanRequest
from tests.conftest import CAPTURES, VM
from tests.fakes import FakeKernel, logs_like
from tests.fixtures.trees import copy_tree

REPO = Path(__file__).resolve().parents[1]
BZIMAGE = VM / "bzImage-kho-7.3.4"
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a second uid, chown)")


@pytest.fixture(autouse=True)
def private_run(tmp_path, monkeypatch):
    """The load lock in a temporary directory; syslog into a socket of the test's own."""
    monkeypatch.setattr(lock, "LOCK_DIR", str(tmp_path / "run-khotui"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "devlog"))
    monkeypatch.setattr(audit, "SYSLOG_SOCKET", str(tmp_path / "devlog"))
    yield sock
    sock.close()


@pytest.fixture
def two_nodes(tmp_path, shared):
    root = tmp_path / "two-nodes"
    copy_tree(CAPTURES / "two-nodes" / "sysroot", root)
    return root


def _initrd(tmp_path: Path) -> Path:
    out = tmp_path / "initrd"
    subprocess.run([sys.executable, str(CAPTURES / "make-initrd"), str(8 << 20), str(out)],
                   check=True)
    return out


def load_argv(root: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["load", "--root", str(root), "--kernel", str(BZIMAGE),
            "--initrd", str(_initrd(tmp_path)),
            "--cmdline", (CAPTURES / "two-nodes/load/cmdline").read_text(),
            "--log", str(tmp_path / "khotui.log"), *extra]


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def set_loaded(root: Path, value: int) -> None:
    (root / "sys/kernel/kexec_loaded").write_text(f"{value}\n")


def run(argv, capsys, fake):
    code = cli.main(argv, syscalls=fake, root_is_live=True)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


# --- 4. interrupts around the syscall ---------------------------------------------------------

# the kernel has taken the image by the time the signal comes; the syscall has not returned
# yet (kexec_file_load of a big initrd takes a while); {loaded} and {marker} filled per test
SLOW_KERNEL = textwrap.dedent("""\
    class SlowKernel:
        def kexec_file_load(self, kernel_fd, initrd_fd, cmdline, flags):
            with open({loaded!r}, "w") as f:
                f.write("1\\n")
            open({marker!r}, "w").close()
            # stay "inside the syscall" until the test has sent its signal (it writes
            # MARKER.sent after send_signal): a fixed sleep lost the race on a loaded machine
            deadline = time.monotonic() + 60
            while not os.path.exists({marker!r} + ".sent") and time.monotonic() < deadline:
                time.sleep(0.01)
            return 0

        def reboot_kexec(self):
            raise AssertionError("never")
""")


def slow_kernel(loaded: Path, marker: Path) -> str:
    """The SlowKernel class for a child script, indented to sit at its top level."""
    return SLOW_KERNEL.format(loaded=str(loaded), marker=str(marker)).replace("\n", "\n    ")


def signal_inside_syscall(script: str, marker: Path,
                          sig: int) -> tuple[subprocess.Popen[str], str, str]:
    """Run the child `script`, wait until its SlowKernel is inside the syscall (`marker`
    exists), send `sig`, and return the finished child with its output."""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    for _ in range(3000):  # up to a minute on a loaded machine
        if marker.exists():
            break
        assert child.poll() is None, child.communicate()
        time.sleep(0.02)
    assert marker.exists(), "the child never reached the syscall"
    child.send_signal(sig)
    Path(f"{marker}.sent").touch()
    out, err = child.communicate(timeout=60)
    return child, out, err

CHILD = textwrap.dedent("""
    import os, sys, time
    sys.path.insert(0, {repo!r})
    from khotui.cli import main as cli
    from khotui.load import audit
    try:  # (so the same child runs on the code before the fix, which had no lock)
        from khotui.load import lock
        lock.LOCK_DIR = {lock_dir!r}
    except ImportError:
        pass
    audit.SYSLOG_SOCKET = {devlog!r}

    {slow_kernel}
    sys.exit(cli.main({argv!r}, syscalls=SlowKernel(), root_is_live=True))
""")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP, signal.SIGTERM])
def test_a_signal_inside_the_syscall_is_held_until_the_result_is_audited(two_nodes, tmp_path,
                                                                        sig):
    # issue #10: SIGINT as kexec_file_load returns printed "nothing was changed" and wrote no
    # audit line; SIGHUP/SIGTERM (the SSH link drops) killed the process silently
    marker = tmp_path / "in-syscall"
    log = tmp_path / "khotui.log"
    script = CHILD.format(repo=str(REPO), lock_dir=str(tmp_path / "lockdir"),
                          devlog=str(tmp_path / "devlog"),
                          slow_kernel=slow_kernel(two_nodes / "sys/kernel/kexec_loaded", marker),
                          argv=load_argv(two_nodes, tmp_path, "--yes"))
    child, out, err = signal_inside_syscall(script, marker, sig)
    assert child.returncode == 130, (child.returncode, out, err)
    attempt, result = records(log)
    assert attempt["phase"] == "attempt" and attempt["kernel"]["sha256"]
    assert result["phase"] == "result" and result["result"] == "ok"
    name = signal.Signals(sig).name
    assert f"interrupted ({name}) after the load succeeded: the image IS loaded" in err
    assert "/sys/kernel/kexec_loaded is 1" in err
    assert "nothing was changed" not in err


def test_ctrl_c_at_the_exec_prompt_says_the_image_is_loaded(two_nodes, tmp_path, capsys,
                                                           monkeypatch):
    # issue #10: Ctrl-C at the --exec prompt said "nothing was changed" with an image loaded
    fake = FakeKernel(on_load=lambda: (logs_like("two-nodes", two_nodes)(),
                                       set_loaded(two_nodes, 1)))

    def interrupt(_prompt: str) -> str:
        raise KeyboardInterrupt
    monkeypatch.setattr(cli_load, "ask", interrupt)
    code, _, err = run(load_argv(two_nodes, tmp_path, "--yes", "--exec"), capsys, fake)
    assert code == 130 and len(fake.calls) == 1
    assert "after the load succeeded: the image IS loaded" in err
    assert "nothing was changed" not in err
    assert [r["phase"] for r in records(tmp_path / "khotui.log")] == ["attempt", "result"]


def test_ctrl_c_before_the_load_says_nothing_changed(two_nodes, tmp_path, capsys, monkeypatch):
    def interrupt(_prompt: str) -> str:
        raise KeyboardInterrupt
    monkeypatch.setattr(cli_load, "ask", interrupt)
    fake = FakeKernel()
    code, _, err = run(load_argv(two_nodes, tmp_path), capsys, fake)
    assert code == 130 and fake.calls == []
    assert "before the load reached the kernel: nothing was changed" in err
    assert records(tmp_path / "khotui.log") == []


def test_exec_without_a_terminal_is_refused_before_loading(two_nodes, tmp_path, capsys):
    # issue #10: `load --yes --exec --json` with no terminal loaded, then exited 2
    fake = FakeKernel()
    code, _, err = run(load_argv(two_nodes, tmp_path, "--yes", "--exec", "--json"), capsys,
                       fake)
    assert code == 2 and fake.calls == []
    assert "cannot ask for confirmation for --exec" in err and "nothing was changed" in err


def test_an_empty_host_name_cannot_be_confirmed(two_nodes, tmp_path, capsys, monkeypatch):
    # issue #10: an empty host name was "confirmed" by typing nothing
    monkeypatch.setattr(load_session, "this_host_name", lambda: "")
    monkeypatch.setattr(cli_load, "ask", lambda _prompt: "")
    fake = FakeKernel()
    code, _, err = run(load_argv(two_nodes, tmp_path), capsys, fake)
    assert code == 2 and fake.calls == [] and "no host name" in err
    assert not load_session.confirms("", "") and not load_session.confirms(" ", " ")
    assert load_session.confirms(" h ", "h")


# --- 6. the audit trail -----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["dev-full", "fifo", "symlink", "other-owner", "group-writable",
                                  "missing-dir"])
def test_an_unusable_audit_log_refuses_before_anything_is_loaded(two_nodes, tmp_path, capsys,
                                                                 kind):
    # issue #10: --log /dev/full only warned and the load went on; a FIFO hung after the load
    log = {"dev-full": Path("/dev/full"), "fifo": tmp_path / "fifo",
           "symlink": tmp_path / "link", "other-owner": tmp_path / "theirs",
           "group-writable": tmp_path / "gw", "missing-dir": tmp_path / "no" / "log"}[kind]
    if kind == "fifo":
        os.mkfifo(log)
    elif kind == "symlink":
        (tmp_path / "target").write_text("")
        log.symlink_to(tmp_path / "target")
    elif kind == "other-owner":
        if os.geteuid() != 0:
            pytest.skip("needs root to chown")
        log.write_text("")
        os.chown(log, 65534, 65534)
    elif kind == "group-writable":
        log.write_text("")
        log.chmod(0o620)
    fake = FakeKernel()
    argv = load_argv(two_nodes, tmp_path, "--yes")
    argv[argv.index("--log") + 1] = str(log)
    code, _, err = run(argv, capsys, fake)
    assert code == 2 and fake.calls == [], err
    assert str(log) in err and ("--no-audit-log" in err or "chmod go-w" in err)
    if kind == "symlink":
        assert (tmp_path / "target").read_text() == ""


def test_no_audit_log_must_be_chosen_and_is_said(two_nodes, tmp_path, capsys):
    fake = FakeKernel(on_load=logs_like("two-nodes", two_nodes))
    code, out, _ = run(load_argv(two_nodes, tmp_path, "--yes", "--no-audit-log"), capsys, fake)
    assert code == 0 and len(fake.calls) == 1
    assert not (tmp_path / "khotui.log").exists()
    assert "warning: no audit log: the operator chose --no-audit-log" in out


def test_a_missing_syslog_is_said_before_the_load(two_nodes, tmp_path, capsys, monkeypatch):
    # issue #10: with no /dev/log the syslog record was dropped silently
    monkeypatch.setattr(audit, "SYSLOG_SOCKET", str(tmp_path / "no-devlog"))
    fake = FakeKernel(on_load=logs_like("two-nodes", two_nodes))
    code, out, _ = run(load_argv(two_nodes, tmp_path, "--yes"), capsys, fake)
    assert code == 0
    warned = out.index("no syslog socket")
    assert warned < out.index("loaded.")


def test_every_record_is_fsynced_and_syslogged_before_and_after(two_nodes, tmp_path, capsys,
                                                                monkeypatch, private_run):
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    fake = FakeKernel(on_load=logs_like("two-nodes", two_nodes))
    code, _, _ = run(load_argv(two_nodes, tmp_path, "--yes"), capsys, fake)
    # the audit log's two records, then the receipt (its file and its directory) after the load
    assert code == 0 and len(synced) == 4 and synced[0] == synced[1]
    private_run.setblocking(False)
    lines = [private_run.recv(65536).decode() for _ in range(2)]
    assert "load attempt: result=attempt" in lines[0] and "load: result=ok" in lines[1]
    assert lines[0].startswith("<85>khotui[")  # authpriv.notice


def test_a_newline_in_a_file_name_cannot_forge_a_syslog_record(tmp_path):
    class F:
        path = resolved = "/boot/vmlinuz\nload: result=ok by=someone-else"
        sha256 = "ab" * 32
        size = 1
    from khotui.load.kexec import LoadResult
    out = audit.record(LoadResult("load", ok=True, flags=8), kernel=F(), log_path=None,
                       syslog=None, env={}, hostname="h")
    assert "\n" not in out.syslog_line and '\\nload: result=ok' in out.syslog_line


def test_a_direct_reboot_syncs_first(two_nodes, tmp_path, capsys, monkeypatch):
    # issue #10: the direct reboot(KEXEC) path did not sync() first
    events: list[str] = []

    class Kernel(FakeKernel):
        def reboot_kexec(self) -> int:
            events.append("reboot")
            return 0
    fake = Kernel(on_load=lambda: (logs_like("two-nodes", two_nodes)(), set_loaded(two_nodes, 1)))
    monkeypatch.setattr(os, "sync", lambda: events.append("sync"))
    monkeypatch.setattr(cli_load, "ask", lambda _p: load_session.this_host_name())
    monkeypatch.setattr(cli_load, "run_systemctl_kexec", lambda: events.append("systemctl") or 1)
    if (two_nodes / "run/systemd/system").exists():
        (two_nodes / "run/systemd/system").rmdir()
    run(load_argv(two_nodes, tmp_path, "--yes", "--exec"), capsys, fake)
    assert events == ["sync", "reboot"]


def test_systemctl_is_run_by_absolute_path(monkeypatch):
    seen: list[list[str]] = []
    monkeypatch.setattr(cli_load.subprocess, "run",
                        lambda argv: seen.append(argv) or subprocess.CompletedProcess(argv, 0))
    monkeypatch.setattr(cli_load.os, "access", lambda p, m: p == "/usr/bin/systemctl")
    assert cli_load._systemctl_kexec() == 0
    assert seen == [["/usr/bin/systemctl", "kexec"]]


# --- 8. the force box overrides only what it named --------------------------------------------

def test_force_overrides_only_the_confirmed_ids(shared, tmp_path):
    # issue #10: the box named cmdline-kho, cmdline-length, segments-fit, and a
    # kexec-load-disabled check that began failing afterwards was overridden too
    root = tmp_path / "small"
    copy_tree(CAPTURES / "scratch-too-small" / "sysroot", root)
    request = PlanRequest(str(BZIMAGE), None,
                          cmdline=(CAPTURES / "scratch-too-small/load/cmdline").read_text())
    fake = FakeKernel()
    with LoadSession.prepare(root, request, live=True,
                             sink=AuditSink(tmp_path / "log", None)) as s:
        confirmed = s.failing_ids
        assert "kexec-load-disabled" not in confirmed
        (root / "proc/sys/kernel/kexec_load_disabled").write_text("1\n")  # after the dialog
        done = s.commit(force=confirmed, syscalls=fake)
    assert done.refused and fake.calls == []
    assert [f.id for f in done.unconfirmed] == ["kexec-load-disabled"]


def test_cli_force_confirms_what_it_printed(two_nodes, tmp_path, capsys, monkeypatch):
    fake = FakeKernel()

    def disable_then_confirm(_prompt: str) -> str:
        (two_nodes / "proc/sys/kernel/kexec_load_disabled").write_text("1\n")
        return load_session.this_host_name()
    monkeypatch.setattr(cli_load, "ask", disable_then_confirm)
    code, out, _ = run(load_argv(two_nodes, tmp_path, "--force"), capsys, fake)
    assert code == 1 and fake.calls == []
    assert "refused: kexec-load-disabled" in out and "was not confirmed" in out


def test_app_force_box_overrides_only_what_it_named(shared, tmp_path):
    from khotui.tui.viewmodel import PlanInput, Source
    root = tmp_path / "small"
    copy_tree(CAPTURES / "scratch-too-small" / "sysroot", root)
    src = Source(root, syscalls=FakeKernel(), dry_run=False, sink=AuditSink(tmp_path / "l", None))
    initrd = tmp_path / "initrd-64m"
    subprocess.run([sys.executable, str(CAPTURES / "make-initrd"), str(64 << 20), str(initrd)],
                   check=True)
    plan = src.plan(PlanInput(str(BZIMAGE), str(initrd),
                              (CAPTURES / "scratch-too-small/load/cmdline").read_text()))
    assert [f.id for f in plan.findings if f.status == "fail"] == ["segments-fit"]  # the box
    (root / "proc/sys/kernel/kexec_load_disabled").write_text("1\n")
    result = src.load(plan, force=True)
    assert not result.ok and "kexec-load-disabled" in result.message
    assert src.syscalls.calls == []


# --- 9. one load at a time --------------------------------------------------------------------

def test_a_second_load_is_refused_while_one_runs(two_nodes, tmp_path, capsys):
    # issue #10: two overlapping `khotui load` runs: the last one won silently
    with LoadLock.acquire():
        fake = FakeKernel()
        code, _, err = run(load_argv(two_nodes, tmp_path, "--yes"), capsys, fake)
    assert code == 2 and fake.calls == [] and f"pid {os.getpid()}" in err
    assert "another khotui load is running" in err
    fake = FakeKernel(on_load=logs_like("two-nodes", two_nodes))
    code, _, _ = run(load_argv(two_nodes, tmp_path, "--yes"), capsys, fake)
    assert code == 0 and len(fake.calls) == 1  # released with the first


def test_the_lock_is_held_from_prepare_to_close(two_nodes, tmp_path):
    request = PlanRequest(str(BZIMAGE), None, cmdline="x")
    with (LoadSession.prepare(two_nodes, request, live=True, sink=AuditSink(None, None)),
          pytest.raises(KhotuiError, match="another khotui load")):
        LoadSession.prepare(two_nodes, request, live=True, sink=AuditSink(None, None))
    LoadSession.prepare(two_nodes, request, live=True, sink=AuditSink(None, None)).close()


@pytest.mark.parametrize("plant", ["file-link", "dir-link", "dir-writable", "dir-other-owner"])
def test_the_lock_refuses_planted_links_and_foreign_directories(tmp_path, plant):
    d = tmp_path / "run-khotui"
    target = tmp_path / "target"
    target.write_text("precious")
    if plant == "file-link":
        d.mkdir(mode=0o700)
        (d / lock.LOCK_NAME).symlink_to(target)
    elif plant == "dir-link":
        real = tmp_path / "elsewhere"
        real.mkdir(mode=0o700)
        d.symlink_to(real)
    elif plant == "dir-writable":
        d.mkdir()
        d.chmod(0o777)
    else:
        if os.geteuid() != 0:
            pytest.skip("needs root to chown")
        d.mkdir(mode=0o700)
        os.chown(d, 65534, 65534)
    with pytest.raises(KhotuiError) as info:
        LoadLock.acquire(str(d))
    assert info.value.path and info.value.fix
    assert target.read_text() == "precious"


def test_a_new_lock_directory_is_0700_and_the_file_0600(tmp_path):
    d = tmp_path / "run-khotui"
    with LoadLock.acquire(str(d)):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
        assert stat.S_IMODE((d / lock.LOCK_NAME).stat().st_mode) == 0o600


def test_exec_rechecks_that_the_image_is_still_there(two_nodes, tmp_path, capsys, monkeypatch):
    # issue #10: --exec did not re-check that the loaded image was still khotui's
    class Kernel(FakeKernel):
        def reboot_kexec(self) -> int:
            raise AssertionError("executed an image that was unloaded meanwhile")
    fake = Kernel(on_load=lambda: (logs_like("two-nodes", two_nodes)(), set_loaded(two_nodes, 1)))

    def someone_unloads(_prompt: str) -> str:
        set_loaded(two_nodes, 0)
        return load_session.this_host_name()
    monkeypatch.setattr(cli_load, "ask", someone_unloads)
    monkeypatch.setattr(cli_load, "run_systemctl_kexec", lambda: pytest.fail("executed"))
    code, out, _ = run(load_argv(two_nodes, tmp_path, "--yes", "--exec"), capsys, fake)
    assert code == 1 and "not executing: the kernel reports no image loaded" in out


# --- 7. the file-writable check ---------------------------------------------------------------

def _acl(*entries: tuple[int, int, int]) -> bytes:
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


def test_acl_parsing_honours_the_mask():
    u, g, m, o = ownership.ACL_USER, ownership.ACL_GROUP, ownership.ACL_MASK, ownership.ACL_OTHER
    base = [(ownership.ACL_USER_OBJ, 6, 0xFFFFFFFF), (ownership.ACL_GROUP_OBJ, 4, 0xFFFFFFFF),
            (o, 4, 0xFFFFFFFF)]
    assert ownership.acl_writers(_acl(*base, (u, 6, 65534), (m, 6, 0xFFFFFFFF))) == \
        [("user", 65534)]
    assert ownership.acl_writers(_acl(*base, (g, 2, 100), (m, 7, 0xFFFFFFFF))) == [("group", 100)]
    assert ownership.acl_writers(_acl(*base, (u, 6, 65534), (m, 4, 0xFFFFFFFF))) == []
    assert ownership.acl_writers(_acl(*base, (u, 4, 65534), (m, 6, 0xFFFFFFFF))) == []
    assert ownership.acl_writers(b"\x01\x00\x00\x00") == []


@ROOT_ONLY
def test_a_posix_acl_granting_write_fails_the_plan(shared, tmp_path, capsys):
    # issue #10: a root:root file with user:nobody:rw gave no warning
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(BZIMAGE.read_bytes())
    kernel.chmod(0o644)
    acl = _acl((ownership.ACL_USER_OBJ, 6, 0xFFFFFFFF), (ownership.ACL_USER, 6, 65534),
               (ownership.ACL_GROUP_OBJ, 4, 0xFFFFFFFF), (ownership.ACL_MASK, 6, 0xFFFFFFFF),
               (ownership.ACL_OTHER, 4, 0xFFFFFFFF))
    try:
        os.setxattr(kernel, ownership.ACL_XATTR, acl)
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs on {tmp_path}: {exc}")
    code = cli.main(["plan", "--root", str(CAPTURES / "two-nodes/sysroot"), "--kernel",
                     str(kernel), "--cmdline", "kho=on"])
    out = capsys.readouterr().out
    assert code == 1
    assert "POSIX ACL letting user nobody (uid 65534) write it" in out
    assert f"setfacl -b {kernel}" in out


def test_a_file_on_a_remote_filesystem_fails_the_check(monkeypatch, tmp_path):
    kernel = tmp_path / "k"
    kernel.write_bytes(b"x")
    st = kernel.stat()
    local = ownership.fs_type(None, str(kernel))
    assert local is not None and local not in ownership.REMOTE_FS  # the test's own disk
    monkeypatch.setattr(ownership, "fs_type", lambda fd, path: 0x65735546)
    (problem,) = [p for p in ownership.writable_by_others("kernel", str(kernel), st)
                  if "filesystem" in p.message]
    assert "FUSE filesystem (f_type 0x65735546)" in problem.message


def test_file_writable_is_a_failing_check(shared, tmp_path, capsys):
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(BZIMAGE.read_bytes())
    kernel.chmod(0o666)
    code = cli.main(["plan", "--json", "--root", str(CAPTURES / "two-nodes/sysroot"),
                     "--kernel", str(kernel), "--cmdline", "kho=on"])
    findings = json.loads(capsys.readouterr().out)["checks"]
    assert code == 1
    assert any(f["id"] == "file-writable" and f["status"] == "fail" for f in findings)


def test_open_one_checks_the_type_before_opening_for_reading(tmp_path, monkeypatch):
    # issue #10: open_one opened before checking the file type (a device's open() runs)
    from khotui.load import opened
    flags: list[int] = []
    real = os.open
    monkeypatch.setattr(os, "open", lambda p, f, *a, **k: (flags.append(f), real(p, f, *a, **k))[1])
    with pytest.raises(KhotuiError, match="character device"):
        opened.open_one("/dev/null", "kernel")
    assert flags and all(f & os.O_PATH for f in flags)


def test_the_fifo_kernel_never_blocks(tmp_path):
    from khotui.load import opened
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(KhotuiError, match="FIFO"):
        opened.open_one(fifo, "kernel")
    assert errno.ENXIO  # no writer was ever needed


def test_unload_pointed_at_a_snapshot_is_a_dry_run(tmp_path, capsys, monkeypatch):
    import argparse
    monkeypatch.setattr(cli_load, "real_syscalls", lambda: pytest.fail("reached the kernel"))
    args = argparse.Namespace(yes=True, json=False, log=str(tmp_path / "log"),
                              no_audit_log=False)
    assert cli_load.unload(args, live=False, where="snapshot two-nodes") == 0
    assert "nothing was unloaded" in capsys.readouterr().out
    assert not (tmp_path / "log").exists()


APP_CHILD = textwrap.dedent("""
    import asyncio, os, sys, time
    sys.path.insert(0, {repo!r})
    from khotui.load import audit, lock
    from khotui.load.audit import AuditSink
    from khotui.tui.app import KhotuiApp
    from khotui.tui.viewmodel import PlanInput, Source
    lock.LOCK_DIR = {lock_dir!r}
    audit.SYSLOG_SOCKET = {devlog!r}

    {slow_kernel}
    async def main():
        src = Source({root!r}, syscalls=SlowKernel(), dry_run=False,
                     sink=AuditSink({log!r}, syslog=None))
        app = KhotuiApp(src)
        async with app.run_test(size=(80, 24)) as pilot:
            plan = src.plan(PlanInput({kernel!r}, {initrd!r}, {cmdline!r}))
            files, _ = src.open_files(plan)
            app.start_load(plan, files)        # what the confirmation's Load button does
            for _ in range(600):
                if app.return_code is not None:
                    break
                await pilot.pause(0.05)
        print(app.return_code, file=sys.stderr)
        sys.exit(app.return_code if app.return_code is not None else 3)

    asyncio.run(main())
""")


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM])
def test_the_app_lets_a_load_finish_and_audit_before_a_hangup_ends_it(two_nodes, tmp_path, sig):
    # issue #10, the app's side: its load runs in a worker thread, which can only mask itself;
    # a SIGHUP (the SSH link drops) delivered to the main thread killed the process between
    # the attempt record and the result record
    marker = tmp_path / "in-syscall"
    log = tmp_path / "khotui.log"
    script = APP_CHILD.format(
        repo=str(REPO), lock_dir=str(tmp_path / "lockdir"), devlog=str(tmp_path / "devlog"),
        slow_kernel=slow_kernel(two_nodes / "sys/kernel/kexec_loaded", marker),
        root=str(two_nodes), log=str(log), kernel=str(BZIMAGE), initrd=str(_initrd(tmp_path)),
        cmdline=(CAPTURES / "two-nodes/load/cmdline").read_text())
    child, out, err = signal_inside_syscall(script, marker, sig)
    assert child.returncode == 130, (child.returncode, out[-2000:], err[-2000:])
    attempt, result = records(log)
    assert attempt["phase"] == "attempt" and result["phase"] == "result"
    assert result["result"] == "ok"


def test_the_app_unloads_only_holding_the_load_lock(two_nodes, tmp_path):
    # issue #10, finding 9, the app's side: `khotui unload` held the lock, the app's did not
    from khotui.tui.viewmodel import Source
    fake = FakeKernel()
    src = Source(two_nodes, syscalls=fake, dry_run=False, sink=AuditSink(tmp_path / "l", None))
    with lock.LoadLock.acquire():          # another khotui is loading
        result = src.unload()
    assert result.title == "Not unloaded" and "khotui" in result.message.lower()
    assert fake.calls == []
    assert src.unload().title == "Unloaded" and len(fake.calls) == 1


def test_a_load_the_plan_refuses_says_why_before_asking_for_an_audit_log(tmp_path, capsys):
    # found by the VM tier: with the audit log checked first, a load that could never happen
    # (EADDRNOTAVAIL: the initrd fits in no scratch region) was answered "cannot open the audit
    # log", hiding the real reason; the plan's refusal changes nothing and needs no record
    root = copy_tree(CAPTURES / "scratch-too-small" / "sysroot", tmp_path / "small")
    initrd = tmp_path / "initrd-64m"
    subprocess.run([sys.executable, str(CAPTURES / "make-initrd"), str(64 << 20), str(initrd)],
                   check=True)
    fake = FakeKernel()
    unusable = tmp_path / "no-such-dir" / "khotui.log"
    code, out, err = run(["load", "--yes", "--json", "--root", str(root), "--kernel", str(BZIMAGE),
                          "--initrd", str(initrd), "--log", str(unusable),
                          "--cmdline", (CAPTURES / "scratch-too-small/load/cmdline").read_text()],
                         capsys, fake)
    assert code == 1 and fake.calls == []
    doc = json.loads(out)
    assert doc["errno"] == "EADDRNOTAVAIL" and "refused" in doc["note"]
    # a load the plan allows still refuses without a usable log, before anything is loaded
    argv = load_argv(copy_tree(CAPTURES / "two-nodes" / "sysroot", tmp_path / "two"),
                     tmp_path, "--yes")
    argv[argv.index("--log") + 1] = str(unusable)
    code, out, err = run(argv, capsys, fake)
    assert code == 2 and fake.calls == [] and "audit log" in err
