"""The receipt a load writes, and `khotui verify` after the kexec, on the real captures.

two-nodes and one-node-no-initrd were loaded and executed: their `sysroot/` is the host before,
`next-kernel/sysroot/` the host after the kexec. The receipt is made by a load of the
pre-kexec capture against the fake kernel (tests/fakes.py), then verified against both.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
from pathlib import Path

import pytest

from khotui.cli import main as cli
from khotui.host.snapshot import write_snapshot
from khotui.host.sysroot import Sysroot
from khotui.load import receipt
from khotui.load.verify import banner_matches
from tests.conftest import CAPTURES, VM
from tests.fakes import FakeKernel, logs_like
from tests.fixtures.trees import copy_tree
from tests.test_load_cli import initrd, run

KERNEL = VM / "bzImage-kho-7.3.4"
NEXT = CAPTURES / "two-nodes/next-kernel/sysroot"
BEFORE = CAPTURES / "two-nodes/sysroot"


@pytest.fixture(autouse=True)
def quiet(tmp_path, monkeypatch):
    """The load lock in the test's directory, syslog into a socket nobody reads (as
    tests/test_load_cli.py's quiet_host)."""
    import socket

    from khotui.load import audit, lock
    monkeypatch.setattr(lock, "LOCK_DIR", str(tmp_path / "run-khotui"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "devlog"))
    monkeypatch.setattr(audit, "SYSLOG_SOCKET", str(tmp_path / "devlog"))
    yield
    sock.close()


@pytest.fixture
def host(tmp_path):
    """A copy of a capture's pre-kexec sysroot and a fake kernel standing for its kernel."""
    def make(capture: str) -> tuple[Path, FakeKernel]:
        root = tmp_path / capture
        copy_tree(CAPTURES / capture / "sysroot", root)
        return root, FakeKernel(0, on_load=logs_like(capture, root))
    return make


def _load(host, tmp_path, capsys, capture="two-nodes", *, rc_file: Path | None = None,
          extra: tuple[str, ...] = ()) -> tuple[int, str, str, Path]:
    root, fake = host(capture)
    path = rc_file or tmp_path / "state" / "khotui" / "receipt.json"
    args = ["load", "--yes", "--root", str(root), "--kernel", str(KERNEL),
            "--cmdline", (CAPTURES / capture / "load/cmdline").read_text(),
            "--log", str(tmp_path / "audit.log"), "--receipt", str(path), *extra]
    if capture == "two-nodes":
        args += ["--initrd", str(initrd(tmp_path, 8 << 20))]
    code, out, err = run(args, capsys, fake)
    assert len(fake.calls) == 1
    return code, out, err, path


def _verify(capsys, rc_file: Path, root: Path = NEXT, *more: str) -> tuple[int, str, str]:
    code = cli.main(["verify", "--receipt", str(rc_file), "--root", str(root), *more])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def made(host, tmp_path, capsys) -> Path:
    code, out, err, path = _load(host, tmp_path, capsys)
    assert code == 0, out + err
    return path


# -- the receipt ---------------------------------------------------------------------------------

def test_load_writes_a_private_receipt_of_what_it_handed_over(host, tmp_path, capsys):
    code, out, err, path = _load(host, tmp_path, capsys)
    assert code == 0, out + err
    assert f"receipt: {path}" in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["receipt.json"]   # no temporary left
    rec = json.loads(path.read_text())
    assert rec["schema"] == "khotui.receipt/1"
    assert rec["host"]["release"] == "7.3.4"
    assert rec["kexec"] == {"count_before": 0, "count_next": 1, "previous_release": None}
    assert rec["kho"]["compatible"] == "kho-v4"
    out_dir = BEFORE / "sys/kernel/debug/kho/out/sub_fdts"
    assert rec["kho"]["blobs"] == [
        {"name": p.name, "size": p.stat().st_size,
         "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "stable": True}
        for p in sorted(out_dir.iterdir())]
    assert rec["kernel"]["sha256"] == hashlib.sha256(KERNEL.read_bytes()).hexdigest()
    assert rec["kernel"]["version"].startswith("7.3.4 (root@vm) #2 SMP")
    assert len(rec["initrd"]["sha256"]) == 64 and rec["initrd"]["size"] == 8 << 20
    assert rec["cmdline"] == (CAPTURES / "two-nodes/load/cmdline").read_text()
    placement = rec["placement"]
    assert placement["matches_prediction"] is True
    assert [s["mem"] for s in placement["actual"]] == [s["mem"] for s in placement["predicted"]]
    assert rec["luo"] is None
    assert rec["written_at"].endswith("+00:00")


def test_the_default_receipt_path_is_used_without_the_option(host, tmp_path, capsys):
    root, fake = host("one-node-no-initrd")
    code, out, _ = run(["load", "--yes", "--root", str(root), "--kernel", str(KERNEL),
                        "--log", str(tmp_path / "log")], capsys, fake)
    assert code == 0 and Path(receipt.DEFAULT_PATH).is_file()   # conftest: under tmp_path
    assert f"receipt: {receipt.DEFAULT_PATH}" in out


def test_a_dry_run_writes_no_receipt_and_says_so(tmp_path, capsys):
    path = tmp_path / "r" / "receipt.json"
    code = cli.main(["load", "--yes", "--root", str(BEFORE), "--kernel", str(KERNEL),
                     "--receipt", str(path), "--log", str(tmp_path / "log")])
    out = capsys.readouterr().out
    assert code == 0 and "no receipt was written" in out and not path.exists()
    assert not path.parent.exists()


def test_the_receipt_is_never_written_through_a_planted_link(host, tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "receipt.json").symlink_to(victim)
    code, out, err, _ = _load(host, tmp_path, capsys, rc_file=state / "receipt.json")
    assert code == 1, "the image is loaded, but without its receipt the run is not a success"
    assert "the image IS loaded, but its receipt was not written" in out
    assert "symbolic link" in out and "fix:" in out and "Traceback" not in out + err
    assert victim.read_text() == "keep me" and (state / "receipt.json").is_symlink()


def _linked(tmp_path: Path) -> tuple[Path, Path]:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "linked").symlink_to(elsewhere)
    return tmp_path / "linked", elsewhere


def _shared(tmp_path: Path) -> tuple[Path, Path]:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    return shared, shared


def _others(tmp_path: Path) -> tuple[Path, Path]:
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 65534, 65534)
    return other, other


@pytest.mark.parametrize(("make", "words"), [
    (_linked, "never written through a link"),
    (_shared, "writable by others (mode 0777)"),
    (_others, "owned by uid 65534"),
])
def test_nor_into_a_linked_or_shared_directory(host, tmp_path, capsys, make, words):
    given, real = make(tmp_path)
    code, out, _, _ = _load(host, tmp_path, capsys, rc_file=given / "receipt.json")
    assert code == 1 and words in out and "the image IS loaded" in out
    assert list(real.iterdir()) == []


def test_load_json_names_the_receipt(host, tmp_path, capsys):
    code, out, _, path = _load(host, tmp_path, capsys, extra=("--json",))
    obj = json.loads(out)
    assert code == 0 and obj["load"]["receipt"] == str(path)
    assert obj["load"]["receipt_problem"] is None


# -- verify --------------------------------------------------------------------------------------

def test_verify_after_the_kexec_passes(made, capsys):
    code, out, err = _verify(capsys, made)
    assert code == 0, out + err
    assert "verified: everything the receipt recorded arrived" in out
    assert "exec from 7.3.4 (count 1)" in out
    assert "LUO not on" in out
    code, out, _ = _verify(capsys, made, NEXT, "--json")
    obj = json.loads(out)
    assert obj["schema"] == "khotui.verify/1" and obj["ok"] is True and obj["failed"] == []
    assert {c["id"]: c["status"] for c in obj["checks"]} == {
        "kho-booted": "pass", "rebooted": "skip", "kexec-metadata": "pass", "kernel": "pass",
        "cmdline": "pass", "blobs": "pass", "luo": "skip"}


def test_verify_without_an_initrd_passes_too(host, tmp_path, capsys):
    code, out, err, path = _load(host, tmp_path, capsys, "one-node-no-initrd")
    assert code == 0, out + err
    assert json.loads(path.read_text())["initrd"] is None
    code, out, _ = _verify(capsys, path, CAPTURES / "one-node-no-initrd/next-kernel/sysroot")
    assert code == 0, out


def test_verify_before_the_kexec_names_what_did_not_arrive(made, capsys):
    code, out, _ = _verify(capsys, made, BEFORE, "--json")
    obj = json.loads(out)
    assert code == 1
    assert obj["failed"] == ["kho-booted", "kexec-metadata", "cmdline", "blobs"]
    blobs = next(c for c in obj["checks"] if c["id"] == "blobs")
    assert "kexec-metadata, kho_test" in blobs["message"]


def _tampered(made: Path, tmp_path: Path, change) -> Path:
    rec = json.loads(made.read_text())
    change(rec)
    out = tmp_path / "tampered.json"
    out.write_text(json.dumps(rec))
    return out


@pytest.mark.parametrize(("change", "failed", "words"), [
    (lambda r: r.update(cmdline=r["cmdline"] + " quiet"), "cmdline", "quiet"),
    (lambda r: r["host"].update(release="7.2.0"), "kexec-metadata", "'7.2.0'"),
    (lambda r: r["kexec"].update(count_before=3), "kexec-metadata", "expected 4"),
    (lambda r: r["kho"]["blobs"].append({"name": "memblock", "size": 512, "sha256": "0" * 64}),
     "blobs", "missing from kho/in/sub_fdts: memblock"),
    (lambda r: r["kho"]["blobs"][1].update(sha256="0" * 64), "blobs", "kho_test has other content"),
    (lambda r: r["kho"]["blobs"][0].update(size=74), "blobs", "kexec-metadata is 73 bytes"),
    (lambda r: r["kernel"].update(version="7.3.5 (root@vm) #1 SMP"), "kernel", "7.3.5"),
    (lambda r: r["host"].update(boot_id="1"), None, None),
])
def test_a_tampered_receipt_fails_the_named_check(made, tmp_path, capsys, change, failed, words):
    code, out, _ = _verify(capsys, _tampered(made, tmp_path, change), NEXT, "--json")
    obj = json.loads(out)
    if failed is None:   # a boot id here is unknown (the capture has none): skipped, not failed
        assert code == 0 and obj["checks"][1]["status"] == "skip"
        return
    assert code == 1 and obj["failed"] == [failed]
    assert words in next(c["message"] for c in obj["checks"] if c["id"] == failed)


def test_the_same_boot_id_means_no_kexec_happened(made, tmp_path, capsys):
    root = tmp_path / "after"
    copy_tree(NEXT, root)
    (root / "proc/sys/kernel/random").mkdir(parents=True)
    (root / "proc/sys/kernel/random/boot_id").write_text("b1\n")
    code, out, _ = _verify(capsys, _tampered(made, tmp_path,
                                             lambda r: r["host"].update(boot_id="b1")), root)
    assert code == 1 and "NOT verified: rebooted failed" in out
    code, out, _ = _verify(capsys, _tampered(made, tmp_path,
                                             lambda r: r["host"].update(boot_id="b0")), root)
    assert code == 0 and "the boot id changed" in out


def test_a_snapshot_taken_before_the_kexec_keeps_the_boot_id_verify_needs(made, tmp_path, capsys):
    # the operator's offline check: the receipt against a snapshot of the same boot must say the
    # kexec has not happened (rebooted), not skip it for want of the boot id
    live = tmp_path / "live"
    copy_tree(BEFORE, live)
    (live / "proc/sys/kernel/random").mkdir(parents=True, exist_ok=True)
    (live / "proc/sys/kernel/random/boot_id").write_text("b1\n")
    snap = tmp_path / "snap"
    write_snapshot(Sysroot(live), snap)
    code, out, _ = _verify(capsys, _tampered(made, tmp_path,
                                             lambda r: r["host"].update(boot_id="b1")), snap,
                           "--json")
    obj = json.loads(out)
    assert code == 1 and "rebooted" in obj["failed"]


def _luo_blob(number: int) -> bytes:
    # struct luo_ser, include/linux/kho/abi/luo.h: compatible[8], liveupdate_num, sessions_pa,
    # flbs_pa (packed, little-endian)
    return struct.pack("<8sQQQ", b"luo-v2", number, 0x1000, 0)


def test_the_luo_number_must_rise_by_one(made, tmp_path, capsys):
    root = tmp_path / "after"
    copy_tree(NEXT, root)
    (root / "sys/kernel/debug/kho/in/sub_fdts/LUO").write_bytes(_luo_blob(5))

    def with_luo(r):
        r["luo"] = {"compatible": "luo-v2", "outgoing_number": 5, "incoming_number": 4,
                    "sessions": ["vm-state"]}
        r["kho"]["blobs"].append({"name": "LUO", "size": 32, "stable": False,
                                  "sha256": hashlib.sha256(_luo_blob(5)[:16] + bytes(16))
                                  .hexdigest()})
    code, out, _ = _verify(capsys, _tampered(made, tmp_path, with_luo), root)
    assert code == 0, out    # LUO's hash is not compared: sessions_pa is set at reboot
    assert "the live-update number rose by one (now 5, kho/in/sub_fdts/LUO)" in out
    (root / "sys/kernel/debug/kho/in/sub_fdts/LUO").write_bytes(_luo_blob(1))
    code, out, _ = _verify(capsys, _tampered(made, tmp_path, with_luo), root)
    assert code == 1 and "the live-update number is 1 (kho/in/sub_fdts/LUO), expected 5" in out


@pytest.mark.parametrize(("content", "words"), [
    (None, "cannot read the receipt"),
    (b"\x00\xffgarbage", "is not JSON"),
    (b"[1, 2]", "is not a khotui receipt"),
    (b'{"schema": "khotui.status/1"}', "is not a khotui receipt (schema 'khotui.status/1'"),
    (b'{"schema": "khotui.receipt/1", "host": 3}', "is corrupt: host is missing"),
    (b'{"schema": "khotui.receipt/1", "host": {}, "kexec": {}, "kho": {"blobs": [1]}, '
     b'"kernel": {}, "cmdline": "", "placement": {}}', "kho.blobs is not a list"),
])
def test_a_missing_garbage_or_foreign_receipt_is_bad_input(tmp_path, capsys, content, words):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_bytes(content)
    code, out, err = _verify(capsys, path)
    assert code == 2 and words in err and str(path) in err and "fix:" in err
    assert "Traceback" not in out + err
    code, out, _ = _verify(capsys, path, NEXT, "--json")
    assert code == 2 and json.loads(out)["schema"] == "khotui.error/1"


def test_verify_is_documented():
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["verify"].format_help()
    for words in ("--receipt", "--root", "kexec-metadata", "Exit: 0", "LUO not on"):
        assert words in help_text


@pytest.mark.parametrize(("banner", "version", "same"), [
    ((NEXT / "proc/version").read_text(),
     "7.3.4 (root@vm) #2 SMP PREEMPT_DYNAMIC Fri Nov 27 02:37:38 UTC 2026", True),
    ((NEXT / "proc/version").read_text(),
     "7.3.4 (root@vm) #3 SMP PREEMPT_DYNAMIC Fri Nov 27 02:37:38 UTC 2026", False),
    ("Linux version 6.9 (a@b) (gcc 12) #1 SMP\n", "Linux version 6.9 (a@b) (gcc 12) #1 SMP", True),
    ("Linux version 6.9 (a@b) (gcc 12) #1 SMP\n", "Linux version 6.9 (a@b) (gcc 13) #1 SMP", False),
])
def test_the_banner_is_matched_against_the_images_version(banner, version, same):
    assert banner_matches(banner, version) is same


# -- the app's Overview ---------------------------------------------------------------------------

def _overview_row(made: Path, root: Path) -> str:
    import dataclasses

    from khotui.plan import host_status
    from khotui.tui.screens.overview import kho_content
    from khotui.tui.viewmodel.overview import kho_summary
    # the capture stands for the live host here: the Overview looks for a receipt only there
    status = dataclasses.replace(host_status(root), live=True)
    shown = kho_content(kho_summary(status))
    return next(line for line in str(shown).splitlines() if line.startswith("booted via KHO"))


def test_the_overview_shows_the_verdict_after_a_kho_boot(made, tmp_path, monkeypatch):
    monkeypatch.setattr(receipt, "DEFAULT_PATH", str(made))
    assert "receipt verified" in _overview_row(made, NEXT)
    bad = _tampered(made, tmp_path, lambda r: r.update(cmdline="other"))
    monkeypatch.setattr(receipt, "DEFAULT_PATH", str(bad))
    row = _overview_row(bad, NEXT)
    assert "NOT verified: cmdline (khotui verify)" in row and len(row) <= 78
    made.unlink()
    monkeypatch.setattr(receipt, "DEFAULT_PATH", str(made))
    assert _overview_row(made, NEXT).endswith("yes (kho/in present)")


def test_the_overview_says_nothing_of_a_receipt_before_the_kexec(made, monkeypatch):
    monkeypatch.setattr(receipt, "DEFAULT_PATH", str(made))
    assert _overview_row(made, BEFORE).endswith("no")


@pytest.mark.parametrize("luo", [
    None, {"sessions": [{"name": "vm-state", "pid": 7}]},
    type("Luo", (), {"sessions": [type("S", (), {"name": "vm-state"})()]})(),
])
def test_the_receipt_takes_the_session_names_from_whatever_status_luo_is(luo):
    status = type("Status", (), {"luo": luo})()
    assert receipt.luo_sessions(status) == ([] if luo is None else ["vm-state"])
