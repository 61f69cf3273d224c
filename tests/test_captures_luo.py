"""A real LUO handover, read back from its capture (issue #12 items 1, 2, 4 on real data).

tests/fixtures/captures/luo-session was recorded by tests/vm/test_vm_luo.py in the KHO+LUO guest
(Linux 7.3.4, `kho=on liveupdate=on`; tests/vm/record-luo-capture): `before/` is the `khotui
snapshot` of the cold-booted host while a holder (pid 78, python3) held /dev/liveupdate and the
session `khotui-vm` with a preserved memfd; `after/` the snapshot of the kernel the load
executed; `receipt.json` the load's receipt; `guest/` what the guest printed. Nothing synthetic.

luo-session-freed is the same scenario in another boot (holder pid 81), where the kernel had
already reused the page of the incoming `struct luo_ser`: luo_early_startup() frees it after
reading it (kho_restore_free(), kernel/liveupdate/luo_core.c) and debugfs kho/in/sub_fdts/LUO
keeps showing that page, here 32 zero bytes. In luo-session the page still held the struct.
"""

from __future__ import annotations

import json

import pytest

from khotui.cli import main as cli
from tests.conftest import VM
from tests.fixtures.trees import copy_tree
from tests.fixtures.where import GROUND_TRUTH

CAPTURE = GROUND_TRUTH / "luo-session"
BEFORE, AFTER, RECEIPT = CAPTURE / "before", CAPTURE / "after", CAPTURE / "receipt.json"
FREED = GROUND_TRUTH / "luo-session-freed"
BOTH = pytest.mark.parametrize("capture", [CAPTURE, FREED], ids=["luo-session", "freed"])
HOLDER = {"pid": 78, "comm": "python3", "unit": None}   # no systemd in the guest: cgroup "0::/"
PAYLOAD = "khotui LUO payload: this memfd was preserved across the kexec"


def run(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().out


def status(capsys, root) -> dict:
    code, out = run(capsys, "--root", str(root), "status", "--json")
    assert code in (0, 1), out
    return json.loads(out)


def test_status_before_lists_the_real_session_and_its_holder(capsys):
    luo = status(capsys, BEFORE)["luo"]
    assert luo["enabled"] is True and luo["device_present"] is True
    assert luo["device_holder"] == HOLDER
    assert luo["sessions"] == [{"name": "khotui-vm", **HOLDER}]
    assert luo["scan"]["source"] == "record"     # the snapshot's khotui-luo.json
    # what the kernel wrote at boot (luo_state_setup()): number 1 for the next kernel, no
    # sessions serialised yet (sessions_pa is set by liveupdate_reboot())
    assert luo["outgoing"]["compatible"] == "luo-v5"
    assert luo["outgoing"]["liveupdate_number"] == 1
    assert luo["outgoing"]["sessions_pa"] == 0 and luo["outgoing"]["size"] == 32
    assert luo["incoming"] is None


def test_status_text_before_shows_the_session_and_holder(capsys):
    _, out = run(capsys, "--root", str(BEFORE), "status")
    assert "luo      on; /dev/liveupdate held by python3 (pid 78, no unit); 1 session\n" in out
    assert "  session 'khotui-vm' pid 78 python3 no unit\n" in out
    assert "  outgoing LUO blob: luo-v5, live update #1\n" in out


def test_status_after_decodes_the_real_incoming_luo_blob(capsys):
    doc = status(capsys, AFTER)
    luo = doc["luo"]
    assert luo["incoming"]["compatible"] == "luo-v5"
    assert luo["incoming"]["liveupdate_number"] == 1
    assert luo["incoming"]["sessions_pa"] != 0      # the session block went over
    assert luo["incoming"]["source"] == "blob" and luo["incoming"]["warnings"] == []
    assert luo["outgoing"]["liveupdate_number"] == 2
    # nobody retrieved the session yet when the snapshot was taken: no session fd is open
    assert luo["sessions"] == [] and luo["device_holder"] is None


def test_status_after_a_freed_incoming_blob_gives_the_number_the_kernel_kept(capsys):
    assert (FREED / "after/sys/kernel/debug/kho/in/sub_fdts/LUO").read_bytes() == bytes(32)
    luo = status(capsys, FREED / "after")["luo"]
    # not the zeros debugfs shows: the outgoing blob's number minus one (luo_state_setup())
    assert luo["incoming"]["compatible"] == "luo-v5"
    assert luo["incoming"]["liveupdate_number"] == 1
    assert luo["incoming"]["source"] == "outgoing"
    assert luo["incoming"]["sessions_pa"] is None and luo["incoming"]["flbs_pa"] is None
    assert "kho_restore_free" in luo["incoming"]["warnings"][0]
    assert luo["outgoing"]["liveupdate_number"] == 2
    _, out = run(capsys, "--root", str(FREED / "after"), "status")
    assert ("incoming LUO blob: luo-v5, live update #1 (the outgoing number minus one: the "
            "kernel freed kho/in's copy at boot)") in out
    # and the kernel's own log says the same number
    assert ("luo: Retrieved live update data, liveupdate number: 1"
            in (FREED / "after/dmesg").read_text())


@BOTH
def test_verify_of_the_real_receipt_after_the_kexec_passes(capsys, capture):
    code, out = run(capsys, "verify", "--receipt", str(capture / "receipt.json"), "--root",
                    str(capture / "after"))
    assert code == 0, out
    for check in ("kho-booted", "kexec-metadata", "kernel", "cmdline", "blobs", "luo"):
        assert any(line.split()[:2] == ["ok", check] for line in out.splitlines()), out
    assert "the live-update number rose by one (now 1, " in out
    # a snapshot keeps no boot id: skipped, with why, not guessed
    assert "skip rebooted" in " ".join(out.split())
    assert out.rstrip().endswith("verified: everything the receipt recorded arrived")


@BOTH
def test_verify_of_the_real_receipt_before_the_kexec_names_what_did_not_arrive(capsys, capture):
    code, out = run(capsys, "verify", "--receipt", str(capture / "receipt.json"), "--root",
                    str(capture / "before"), "--json")
    assert code == 1, out
    doc = json.loads(out)
    assert doc["ok"] is False
    assert doc["failed"] == ["kho-booted", "kexec-metadata", "cmdline", "blobs", "luo"]
    checks = {c["id"]: c["message"] for c in doc["checks"]}
    assert "missing from kho/in/sub_fdts: LUO, kexec-metadata, kho_test" in checks["blobs"]
    assert "the LUO blob did not arrive" in checks["luo"]


def test_without_an_outgoing_blob_verify_takes_the_number_from_the_kernel_log(capsys, tmp_path):
    """The freed capture as if the new kernel had no liveupdate=on: no outgoing blob to derive
    the number from, kho/in's page holds zeros; the kernel's own log line still has it."""
    root = copy_tree(FREED / "after", tmp_path / "after", writable=True)
    (root / "sys/kernel/debug/kho/out/sub_fdts/LUO").unlink()
    luo = status(capsys, root)["luo"]
    assert luo["incoming"]["source"] == "unknown"
    assert luo["incoming"]["liveupdate_number"] is None and luo["incoming"]["compatible"] is None
    receipt = str(FREED / "receipt.json")
    code, out = run(capsys, "verify", "--receipt", receipt, "--root", str(root))
    assert code == 0, out
    assert ("the live-update number rose by one (now 1, the kernel log line \"luo: Retrieved "
            "live update data\")") in out
    dmesg = root / "dmesg"
    dmesg.write_text("".join(line for line in dmesg.read_text().splitlines(keepends=True)
                             if "Retrieved live update data" not in line))
    code, out = run(capsys, "verify", "--receipt", receipt, "--root", str(root), "--json")
    assert code == 1, out
    luo_check = {c["id"]: c for c in json.loads(out)["checks"]}["luo"]
    assert luo_check["status"] == "fail" and "is unknown" in luo_check["message"]


@pytest.mark.skipif(not (VM / "bzImage-kho-7.3.4").is_file(), reason="no ../shared/vm kernel")
def test_plan_on_the_real_host_fails_without_liveupdate_on(capsys):
    cmdline = (AFTER / "proc/cmdline").read_text().strip()   # the loaded one: liveupdate=on
    kernel = str(VM / "bzImage-kho-7.3.4")
    code, out = run(capsys, "--root", str(BEFORE), "plan", "--kernel", kernel, "--cmdline",
                    cmdline.replace(" liveupdate=on", ""), "--json")
    assert code == 1, out
    checks = {c["id"]: c for c in json.loads(out)["checks"]}
    assert checks["cmdline-liveupdate"]["status"] == "fail"
    assert "the 1 open LUO session's data" in checks["cmdline-liveupdate"]["message"]
    assert "liveupdate=on" in checks["cmdline-liveupdate"]["fix"]
    assert 'session "khotui-vm" is held by pid 78' in checks["luo-session-holder"]["message"]
    code, out = run(capsys, "--root", str(BEFORE), "plan", "--kernel", kernel, "--cmdline",
                    cmdline, "--json")
    assert code == 0, out
    assert {c["id"]: c["status"] for c in json.loads(out)["checks"]}["cmdline-liveupdate"] == "ok"


def test_the_guest_saw_the_same_verdict_and_got_the_memfd_back():
    """What the guest itself printed: the live verify (with the boot id) and the retrieve."""
    live = json.loads((CAPTURE / "guest/verify.json").read_text())
    assert live["ok"] is True
    assert {c["id"]: c["status"] for c in live["checks"]}["rebooted"] == "pass"
    got = json.loads((CAPTURE / "guest/luo-retrieve.json").read_text())
    assert got == {"session": "khotui-vm", "token": 0x5EED, "size": len(PAYLOAD),
                   "content": PAYLOAD}


def test_the_app_handover_warns_that_the_incoming_luo_page_was_freed():
    from khotui.tui.viewmodel.handover import _sub_blob
    kho = FREED / "after/sys/kernel/debug/kho"
    incoming = _sub_blob("LUO", (kho / "in/sub_fdts/LUO").read_bytes(),
                         "/sys/kernel/debug/kho/in/sub_fdts/LUO")
    assert any("freed this page" in w for w in incoming.warnings), incoming.warnings
    outgoing = _sub_blob("LUO", (kho / "out/sub_fdts/LUO").read_bytes(),
                         "/sys/kernel/debug/kho/out/sub_fdts/LUO")
    assert not any("freed" in w for w in outgoing.warnings), outgoing.warnings
    assert ("liveupdate_num", "2") in outgoing.fields
