"""LUO (the Live Update Orchestrator), read-only: `status --json`'s `luo`, the snapshot's
record, and the plan's checks (issue #12 items 1 and 2).

The trees are copies of the two-nodes capture (CONFIG_LIVEUPDATE=y, booted without
liveupdate=on) made to look like a LUO host: `liveupdate=on` on proc/cmdline, a dev/liveupdate
node stand-in, proc/<pid>/fd/<n> links whose texts are what the kernel shows, and a SYNTHETIC
`LUO` sub-blob: the 32-byte packed `struct luo_ser` of include/linux/kho/abi/luo.h (7.3 writes
it raw through kho_add_subtree(), not as an FDT), built here, not captured.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from khotui.host.luo import RECORD, parse_record, read_luo, unit_of
from khotui.host.snapshot import write_snapshot
from khotui.host.sysroot import Sysroot
from khotui.plan import checks
from khotui.plan.checks import CheckContext
from khotui.plan.status import context_for, host_status
from khotui.types import FAIL, OK, WARN
from tests.conftest import CAPTURES, REPO
from tests.fixtures.trees import copy_tree

TWO_NODES = CAPTURES / "two-nodes" / "sysroot"


def luo_ser(number: int, sessions_pa: int = 0, flbs_pa: int = 0x1234000) -> bytes:
    """A synthetic `struct luo_ser` (luo_state_setup(), kernel/liveupdate/luo_core.c)."""
    return b"luo-v5\0\0" + struct.pack("<QQQ", number, sessions_pa, flbs_pa)


def add_process(root: Path, pid: int, comm: str, cgroup: str, links: dict[int, str]) -> None:
    proc = root / "proc" / str(pid)
    (proc / "fd").mkdir(parents=True, exist_ok=True)
    (proc / "comm").write_text(comm + "\n")
    (proc / "cgroup").write_text(cgroup + "\n")
    for fd, target in links.items():
        os.symlink(target, proc / "fd" / str(fd))   # dangling, as the kernel's own texts are


def luo_tree(tmp_path: Path, *, cmdline_extra: str = " liveupdate=on", holder: bool = True,
             device: bool = True, blob: bool = True, incoming: bool = False) -> Path:
    root = copy_tree(TWO_NODES, tmp_path / "sysroot", writable=True)
    cmdline = root / "proc" / "cmdline"
    cmdline.write_text(cmdline.read_text().rstrip("\n") + cmdline_extra + "\n")
    if device:
        (root / "dev").mkdir()
        (root / "dev" / "liveupdate").write_text("")   # a stand-in: only its presence is read
    kho = root / "sys/kernel/debug/kho"
    if blob:
        (kho / "out/sub_fdts/LUO").write_bytes(luo_ser(3))
    if incoming:
        (kho / "in/sub_fdts").mkdir(parents=True)
        (kho / "in/sub_fdts/LUO").write_bytes(luo_ser(2, sessions_pa=0x7f000))
    add_process(root, 1, "systemd", "0::/init.scope", {0: "/dev/null", 3: "anon_inode:[eventpoll]"})
    add_process(root, 812, "vmm", "0::/system.slice/vmm.service",
                {0: "/dev/null", 7: "anon_inode:[luo_session] vm-42",
                 8: "anon_inode:[luo_session] vm 43", 9: "/memfd:guest (deleted)"})
    add_process(root, 900, "luod", "0::/system.slice/luod.service",
                {3: "/dev/liveupdate" if holder else "/dev/null",
                 4: "anon_inode:[luo_session] agent"})
    add_process(root, 1500, "bash", "0::/user.slice/user-0.slice/session-1.scope",
                {0: "/dev/pts/0"})
    return root


def status_json(root: Path) -> dict:
    result = subprocess.run([sys.executable, "-m", "khotui", "status", "--json", "--root", str(root)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


# --- item 1: status --json -------------------------------------------------------------------

def test_status_json_shows_luo_sessions_holder_and_blobs(tmp_path):
    luo = status_json(luo_tree(tmp_path, incoming=True))["luo"]
    assert luo["enabled"] is True
    assert any("/dev/liveupdate exists" in e for e in luo["evidence"])
    assert luo["device_holder"] == {"pid": 900, "comm": "luod", "unit": "luod.service"}
    assert luo["sessions"] == [
        {"name": "vm 43", "pid": 812, "comm": "vmm", "unit": "vmm.service"},
        {"name": "vm-42", "pid": 812, "comm": "vmm", "unit": "vmm.service"},
        {"name": "agent", "pid": 900, "comm": "luod", "unit": "luod.service"}]
    assert luo["outgoing"]["compatible"] == "luo-v5"
    assert luo["outgoing"]["liveupdate_number"] == 3
    assert luo["incoming"]["liveupdate_number"] == 2
    assert luo["incoming"]["sessions_pa"] == 0x7f000
    assert luo["scan"] == {"source": "proc", "processes": 4, "unreadable": 0, "complete": True,
                           "note": None}


def test_real_capture_without_liveupdate_on_says_luo_is_off():
    luo = status_json(TWO_NODES)["luo"]
    assert luo["enabled"] is False
    assert "no liveupdate=on" in luo["off_reason"]
    assert luo["outgoing"] is None and luo["sessions"] == []
    assert luo["scan"]["source"] is None and "not scanned" in luo["scan"]["note"]


def test_the_scan_is_bounded_and_says_so(tmp_path, monkeypatch):
    import khotui.host.luo as luo_mod
    root = luo_tree(tmp_path)
    monkeypatch.setattr(luo_mod, "MAX_PROCESSES", 2)
    luo = host_status(root).luo
    assert luo.complete is False and "stopped after 2 processes" in luo.note
    monkeypatch.setattr(luo_mod, "MAX_PROCESSES", 100)
    monkeypatch.setattr(luo_mod, "MAX_LINKS_PER_PROCESS", 2)
    assert host_status(root).luo.complete is False
    # an incomplete scan may hide the holder: no "held by nothing" warning on it
    ctx = context_for(host_status(luo_tree(tmp_path / "b", holder=False)))
    ctx.cmdline = "kho=on liveupdate=on"
    assert ctx.luo_scan_complete is False
    assert by_id(checks.check_luo(ctx), "luo-device-holder") == []


def test_luo_off_when_kho_is_off(tmp_path):
    root = luo_tree(tmp_path, cmdline_extra=" liveupdate=on kho=off", blob=False)
    import shutil
    shutil.rmtree(root / "sys/kernel/debug/kho")    # as a kho=off kernel shows it
    luo = status_json(root)["luo"]
    assert luo["enabled"] is False and "KHO is off" in luo["off_reason"]


def test_liveupdate_on_but_no_device_nor_blob_is_off(tmp_path):
    luo = status_json(luo_tree(tmp_path, blob=False, device=False))["luo"]
    # no dev/ at all in a tree: presence unknown, so not a guess either way
    assert luo["enabled"] is None and "not known" in luo["off_reason"]
    root = luo_tree(tmp_path / "b", blob=False, device=False)
    (root / "dev").mkdir()
    luo = status_json(root)["luo"]
    assert luo["enabled"] is False and "luo_late_startup" in luo["off_reason"]


def test_unit_from_cgroup():
    assert unit_of("0::/system.slice/luod.service\n") == "luod.service"
    assert unit_of("0::/init.scope\n") == "init.scope"
    assert unit_of("0::/user.slice/user-1000.slice/user@1000.service/app.slice/x.service") \
        == "user@1000.service"
    assert unit_of("0::/\n") is None
    assert unit_of("12:pids:/x\n1:name=systemd:/system.slice/a.service\n") == "a.service"


def test_the_device_is_never_opened(tmp_path, monkeypatch):
    """A FIFO at dev/liveupdate would block any open forever: the read still finishes."""
    root = luo_tree(tmp_path)
    (root / "dev" / "liveupdate").unlink()
    os.mkfifo(root / "dev" / "liveupdate")
    luo = host_status(root).luo
    assert luo.device_present is True and luo.enabled is True


# --- hostile trees ---------------------------------------------------------------------------

def test_link_loops_and_garbage_fd_dirs_are_skipped(tmp_path):
    root = luo_tree(tmp_path)
    bad = root / "proc" / "2000"
    bad.mkdir()
    os.symlink("fd", bad / "fd")                     # a directory link to itself: ELOOP
    (root / "proc" / "2001").mkdir()
    os.symlink("/etc", root / "proc" / "2001" / "fd")   # leads out of the root: refused
    (root / "proc" / "2002").mkdir()
    (root / "proc" / "2002" / "fd").write_text("not a directory")
    loop = root / "proc" / "812" / "fd" / "50"
    os.symlink("50", loop)                           # a link to itself: its text is just "50"
    luo = host_status(root).luo
    assert [s.name for s in luo.sessions] == ["vm 43", "vm-42", "agent"]
    assert luo.unreadable == 3


def test_session_name_bytes_that_are_not_utf8_are_escaped(tmp_path):
    root = luo_tree(tmp_path)
    os.symlink(b"anon_inode:[luo_session] x\xff", os.fsencode(root / "proc" / "900" / "fd" / "5"))
    names = [s.name for s in host_status(root).luo.sessions]
    assert "x\\xff" in names
    json.dumps(host_status(root).as_dict())    # printable, no lone surrogates


# --- snapshots -------------------------------------------------------------------------------

def test_snapshot_records_sessions_and_holder(tmp_path):
    src = luo_tree(tmp_path, incoming=True)
    out = tmp_path / "snap"
    write_snapshot(Sysroot(src), out)
    assert (out / RECORD.lstrip("/")).stat().st_mode & 0o777 == 0o600
    assert not (out / "proc" / "812").exists()      # /proc is not copied whole
    before, after = status_json(src)["luo"], status_json(out)["luo"]
    assert after["scan"]["source"] == "record"
    for key in ("enabled", "device_holder", "sessions", "outgoing", "incoming", "device_present"):
        assert after[key] == before[key], key


def test_hostile_records_are_refused_by_name(tmp_path):
    src = luo_tree(tmp_path)
    out = tmp_path / "snap"
    write_snapshot(Sysroot(src), out)
    record = out / RECORD.lstrip("/")
    cases = {
        "huge": b"[" * (2 << 20),
        "garbage": b"\x00\xffnot json",
        "deep": b"[" * 100_000 + b"]" * 100_000,
        "foreign": json.dumps({"format": "other"}).encode(),
        "bad pid": json.dumps({"format": "khotui-luo/1", "device_present": True,
                               "device_holders": [{"pid": -1}], "sessions": [],
                               "processes_scanned": 1, "unreadable": 0, "complete": True}).encode(),
        "too many": json.dumps({"format": "khotui-luo/1", "device_present": True,
                                "device_holders": [], "processes_scanned": 1, "unreadable": 0,
                                "complete": True,
                                "sessions": [{"name": "s", "pid": 5}] * 5000}).encode(),
    }
    for what, data in cases.items():
        record.chmod(0o600)
        record.write_bytes(data)
        status = status_json(out)
        assert "luo" in status["errors"], what
        assert "khotui-luo.json" in status["errors"]["luo"], what
        assert status["luo"]["sessions"] == [] and status["luo"]["scan"]["complete"] is False
    record.unlink()
    os.symlink("khotui-luo.json", record)   # a loop
    assert "luo" in status_json(out)["errors"]


def test_record_parser_takes_what_it_writes(tmp_path):
    src = luo_tree(tmp_path)
    state = read_luo(Sysroot(src), kho_enabled=True, out_blobs={}, in_blobs={},
                     cmdline="liveupdate=on", config={}, config_source=None)
    from khotui.host.luo import record_of
    rec = parse_record(record_of(state), "x")
    assert [s.name for s in rec.sessions] == [s.name for s in state.sessions]
    assert rec.holders == state.device_holders


# --- item 2: checks on the plan --------------------------------------------------------------

def plan_context(root: Path, cmdline: str) -> CheckContext:
    ctx = context_for(host_status(root))
    ctx.planning, ctx.cmdline = True, cmdline
    return ctx


def by_id(findings, ident):
    return [f for f in findings if f.id == ident]


def test_next_cmdline_without_liveupdate_on_fails_with_the_fix(tmp_path):
    ctx = plan_context(luo_tree(tmp_path), "console=ttyS0 kho=on")
    [f] = by_id(checks.check_luo(ctx), "cmdline-liveupdate")
    assert f.status == FAIL and "3 open LUO sessions" in f.message
    assert f.fix_for("cli") == "add liveupdate=on to the next kernel's command line (--append liveupdate=on)"
    assert "--append" not in f.fix_for("app") and "press e" in f.fix_for("app")
    ctx.cmdline = "kho=on liveupdate=on"
    [f] = by_id(checks.check_luo(ctx), "cmdline-liveupdate")
    assert f.status == OK
    ctx.cmdline = "kho=on liveupdate=on liveupdate=off"   # the last accepted value wins
    assert by_id(checks.check_luo(ctx), "cmdline-liveupdate")[0].status == FAIL


def test_sessions_in_units_systemctl_kexec_stops_are_named(tmp_path):
    root = luo_tree(tmp_path)
    add_process(root, 1, "systemd", "0::/init.scope", {9: "anon_inode:[luo_session] pid1-kept"})
    ctx = plan_context(root, "kho=on liveupdate=on")
    warned = by_id(checks.check_luo(ctx), "luo-session-holder")
    assert [f.status for f in warned] == [WARN] * 3
    text = " ".join(f.message for f in warned)
    assert '"vm-42"' in text and '"vm 43"' in text and '"agent"' in text
    assert "pid1-kept" not in text                           # PID 1's init.scope survives
    assert "vmm.service" in text and "systemctl kexec" in text
    assert all("FileDescriptorStorePreserve=" in f.fix and "kexec -e" in f.fix for f in warned)


def test_sessions_without_a_device_holder_warn(tmp_path):
    ctx = plan_context(luo_tree(tmp_path, holder=False), "kho=on liveupdate=on")
    [f] = by_id(checks.check_luo(ctx), "luo-device-holder")
    assert f.status == WARN and "no process holds /dev/liveupdate" in f.message
    ctx = plan_context(luo_tree(tmp_path / "b"), "kho=on liveupdate=on")
    assert by_id(checks.check_luo(ctx), "luo-device-holder") == []


def test_no_luo_checks_when_luo_is_off():
    ctx = plan_context(TWO_NODES, "kho=on")
    assert checks.check_luo(ctx) == []


@pytest.mark.parametrize("flag", ["--cmdline", "--append"])
def test_plan_cli_reports_the_failing_check(tmp_path, flag):
    from tests.conftest import VM
    kernel = VM / "bzImage-kho-7.3.4"
    if not kernel.exists():
        pytest.skip(f"{kernel} is missing")
    root = luo_tree(tmp_path)
    text = "console=ttyS0 kho=on" if flag == "--cmdline" else "liveupdate=off"
    result = subprocess.run([sys.executable, "-m", "khotui", "plan", "--json", "--root", str(root),
                             "--kernel", str(kernel), flag, text],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    found = {c["id"]: c for c in json.loads(result.stdout)["checks"]}
    assert found["cmdline-liveupdate"]["status"] == FAIL
    assert "--append liveupdate=on" in found["cmdline-liveupdate"]["fix"]


def test_status_text_lists_each_session_and_its_holder(tmp_path):
    result = subprocess.run([sys.executable, "-m", "khotui", "status", "--root",
                             str(luo_tree(tmp_path, holder=False))],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "luo      on; /dev/liveupdate held by nothing; 3 sessions" in result.stdout
    assert "  session 'vm-42' pid 812 vmm vmm.service" in result.stdout
    assert "outgoing LUO blob: luo-v5, live update #3" in result.stdout


def test_a_snapshot_of_a_host_without_luo_reads_as_the_host_did(tmp_path):
    # the VM tier compares `status` live and on its own snapshot: with LUO off (no
    # liveupdate=on) the record must not make the snapshot's `luo` differ from the live one
    src = copy_tree(TWO_NODES, tmp_path / "src", writable=True)
    (src / "dev").mkdir()
    out = tmp_path / "snap"
    write_snapshot(Sysroot(src), out)
    assert (out / RECORD.lstrip("/")).is_file()
    live, snap = host_status(src).as_dict()["luo"], host_status(out).as_dict()["luo"]
    assert live["enabled"] is False and snap == live
