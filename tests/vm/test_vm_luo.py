"""Live update, end to end, in a real KHO+LUO guest (issue #12 item 5).

One QEMU run, two kernels, `kho=on liveupdate=on` (the 7.3.4 test kernel has CONFIG_LIVEUPDATE
and CONFIG_LIVEUPDATE_MEMFD):

  stage 1 (cold boot): a holder process (guestutil.py luo-hold: stdlib ioctls on
           /dev/liveupdate) creates the session `khotui-vm` and preserves a memfd with known
           content in it, and keeps both open; `status --json` sees the session, its holder and
           the device holder; a plan whose command line drops liveupdate=on fails the
           cmdline-liveupdate check (exit 1); a snapshot (for the offline verify); `load --yes
           --receipt` with $KHO_NEXT_CMDLINE (liveupdate=on kept); the holder still holds the
           session; then the init script's reboot(KEXEC), where liveupdate_reboot() serialises
           the session.
  stage 2 (the loaded kernel): `verify --receipt` exits 0, every check passing; `status
           --json` shows luo.incoming.liveupdate_number = the outgoing one + 1's successor
           (the receipt's); a snapshot; guestutil.py luo-retrieve gets the session and the
           memfd back and reads the content.
  host, offline: the receipt against the pre-kexec snapshot exits 1 naming kho-booted; against
           the post-kexec snapshot 0.

The receipt goes to /var/tmp/khotui (the guest's root is read-only; khotui makes that directory
0700) and is copied to the writable share, since /var/tmp is a tmpfs the kexec loses; stage 2
reads it from /mnt.
"""

from __future__ import annotations

import json
import os
import subprocess

import guest
import pytest
from guest import ok_step, require_khotui

pytestmark = pytest.mark.vm

KHOTUI = guest.KHOTUI_CLI
SESSION = "khotui-vm"
TOKEN = 0x5EED
PAYLOAD = "khotui LUO payload: this memfd was preserved across the kexec"
RECEIPT = "/var/tmp/khotui/receipt.json"
LOAD_ARGS = f'--kernel {guest.KERNEL} --cmdline "$KHO_NEXT_CMDLINE"'
# the same command line without liveupdate=on (bash pattern substitution in the guest)
NO_LIVEUPDATE = f'--kernel {guest.KERNEL} --cmdline "${{KHO_NEXT_CMDLINE/ liveupdate=on/}}"'


@pytest.fixture(scope="module")
def luo_run(vm_dirs) -> guest.GuestRun:
    require_khotui("status", "plan", "load", "snapshot", "verify")
    d = vm_dirs("khotui-luo")
    pid = "$(sed -n 's/.*\"pid\": \\([0-9]*\\).*/\\1/p' /var/tmp/luo-hold.json)"
    s1 = [
        ("luo-hold", f"python3 $GUESTUTIL luo-hold {SESSION} {TOKEN} '{PAYLOAD}' "
                     "| tee /var/tmp/luo-hold.json"),
        ("status-live", f"{KHOTUI} status --json; echo $? > /mnt/status-live.rc"),
        ("plan-no-liveupdate", f"{KHOTUI} plan {NO_LIVEUPDATE} --json"),
        ("snapshot", f"{KHOTUI} snapshot /var/tmp/snap && "
                     "python3 $GUESTUTIL copytree /var/tmp/snap /mnt/before"),
        ("load", f"{KHOTUI} load --yes {LOAD_ARGS} --json --receipt {RECEIPT} "
                 f"--log /var/tmp/khotui.log && cp {RECEIPT} /mnt/receipt.json"),
        # what the init script's reboot(KEXEC) will find: the holder and its session fd
        ("holder-alive", f"p={pid}; kill -0 $p && echo $p && "
                         "for f in /proc/$p/fd/*; do readlink $f; done"),
    ]
    s2 = [
        ("verify", f"{KHOTUI} verify --receipt /mnt/receipt.json --json"),
        ("status-in", f"{KHOTUI} status --json; echo $? > /mnt/status-in.rc"),
        ("snapshot-after", f"{KHOTUI} snapshot /var/tmp/snap && "
                           "python3 $GUESTUTIL copytree /var/tmp/snap /mnt/after"),
        ("luo-retrieve", f"python3 $GUESTUTIL luo-retrieve {SESSION} {TOKEN}"),
    ]
    run = guest.boot([s1, s2], numa=[1024, 1024], append="kho=on liveupdate=on", run_dir=d)
    print(f"\nLUO boot cycle (2 kernels): {run.seconds:.1f}s")
    return run


def holder_pid(run: guest.GuestRun) -> int:
    return int(ok_step(run, "luo-hold").json()["pid"])


def offline_verify(run: guest.GuestRun, snapshot: str) -> subprocess.CompletedProcess[str]:
    """`khotui verify --root SNAPSHOT` on this machine, as an operator would afterwards."""
    env = dict(os.environ, PATH=f"{guest.VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    return subprocess.run(
        ["bash", "-c", f"{KHOTUI} verify --receipt {run.file('receipt.json')} "
                       f"--root {run.file(snapshot)} --json"],
        cwd=guest.REPO, env=env, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------------------------
# stage 1: the host with a session


def test_status_lists_the_session_and_its_holder(luo_run):
    luo_run.assert_stage(1)
    pid = holder_pid(luo_run)
    luo = luo_run.named("status-live").json()["luo"]
    assert luo["enabled"] is True, luo
    assert luo["device_present"] is True, luo
    assert luo["device_holder"] is not None and luo["device_holder"]["pid"] == pid, luo
    assert [(s["name"], s["pid"]) for s in luo["sessions"]] == [(SESSION, pid)], luo
    assert luo["outgoing"]["compatible"] == "luo-v5", luo
    # a cold boot: nothing came in, and the next kernel gets number 1 (luo_state_setup())
    assert luo["incoming"] is None and luo["outgoing"]["liveupdate_number"] == 1, luo


def test_plan_without_liveupdate_on_fails_the_check(luo_run):
    luo_run.assert_stage(1)
    plan = luo_run.named("plan-no-liveupdate")
    assert plan.rc == 1, plan.describe()
    doc = plan.json()
    assert "liveupdate=on" not in doc["cmdline"], doc["cmdline"]
    check = {c["id"]: c for c in doc["checks"]}["cmdline-liveupdate"]
    assert check["status"] == "fail", check
    assert "1 open LUO session" in check["message"], check


def test_load_writes_the_receipt_and_the_holder_stays(luo_run):
    luo_run.assert_stage(1)
    load = ok_step(luo_run, "load").json()["load"]
    assert load["ok"] is True, load
    rec = json.loads(luo_run.file("receipt.json").read_text())
    assert rec["schema"] == "khotui.receipt/1"
    assert "liveupdate=on" in rec["cmdline"]
    assert rec["luo"]["outgoing_number"] == 1 and SESSION in json.dumps(rec["luo"]["sessions"])
    assert "LUO" in [b["name"] for b in rec["kho"]["blobs"]]
    alive = ok_step(luo_run, "holder-alive").stdout.split("\n")
    assert int(alive[0]) == holder_pid(luo_run)
    assert f"anon_inode:[luo_session] {SESSION}" in alive and "/dev/liveupdate" in alive, alive


# ---------------------------------------------------------------------------------------------
# stage 2: the new kernel


def test_verify_in_the_new_kernel_passes_every_check(luo_run):
    luo_run.assert_completed()
    v = luo_run.named("verify")
    assert v.rc == 0, v.describe()
    doc = v.json()
    assert doc["ok"] is True and doc["failed"] == [], doc
    assert {c["id"]: c["status"] for c in doc["checks"]} == {
        "kho-booted": "pass", "rebooted": "pass", "kexec-metadata": "pass", "kernel": "pass",
        "cmdline": "pass", "blobs": "pass", "luo": "pass"}, doc


def test_status_shows_the_incoming_live_update_number(luo_run):
    luo_run.assert_completed()
    luo = luo_run.named("status-in").json()["luo"]
    rec = json.loads(luo_run.file("receipt.json").read_text())
    assert luo["incoming"]["compatible"] == "luo-v5", luo
    assert luo["incoming"]["liveupdate_number"] == rec["luo"]["outgoing_number"] == 1, luo
    # The kernel frees the incoming struct luo_ser right after reading it (luo_early_startup()),
    # and debugfs kho/in/sub_fdts/LUO keeps showing that page: measured, it still held the
    # struct in one boot and read as zeros in the next. Either way status must give the number
    # the kernel read, and say where it took it from.
    if luo["incoming"]["source"] == "blob":   # the freed page still held the struct
        # the session went over: its block's physical address, set by liveupdate_reboot()
        assert luo["incoming"]["sessions_pa"] != 0, luo
    else:
        assert luo["incoming"]["source"] == "outgoing", luo
        assert "kho_restore_free" in " ".join(luo["incoming"]["warnings"]), luo
    raw = (luo_run.file("after") / "sys/kernel/debug/kho/in/sub_fdts/LUO").read_bytes()
    print(f"\nkho/in/sub_fdts/LUO in the post-kexec snapshot: {raw.hex()}; status took the "
          f"incoming number from: {luo['incoming']['source']}")
    assert luo["outgoing"]["liveupdate_number"] == 2, luo
    assert luo["enabled"] is True and luo["sessions"] == [], luo
    log = luo_run.kmsg(2)
    assert "Retrieved live update data, liveupdate number: 1" in log, log[-3000:]


def test_the_preserved_memfd_arrived(luo_run):
    luo_run.assert_completed()
    got = ok_step(luo_run, "luo-retrieve").json()
    assert got["content"] == PAYLOAD and got["size"] == len(PAYLOAD), got


# ---------------------------------------------------------------------------------------------
# offline, on this machine


def test_offline_verify_against_the_pre_kexec_snapshot_fails(luo_run):
    luo_run.assert_completed()
    ok_step(luo_run, "snapshot")
    p = offline_verify(luo_run, "before")
    assert p.returncode == 1, (p.stdout, p.stderr)
    doc = json.loads(p.stdout)
    assert {"kho-booted", "rebooted", "kexec-metadata", "cmdline", "luo"} <= set(doc["failed"]), doc


def test_offline_verify_against_the_post_kexec_snapshot_passes(luo_run):
    luo_run.assert_completed()
    ok_step(luo_run, "snapshot-after")
    p = offline_verify(luo_run, "after")
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert json.loads(p.stdout)["failed"] == []
