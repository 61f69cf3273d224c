"""The fleet layer (ansible/live-update.yml and the khotui.fleet collection) under real Ansible.

A fleet of 12 `ansible_connection=local` hosts, each with a `khotui_root` snapshot copied from a
real capture: 9 of two-nodes (the 7.3.4 KHO kernel fits) and 3 of scratch-too-small with its
64 MiB initrd (EADDRNOTAVAIL, as the capture's own load failed). The playbook runs as an
operator runs it, `ansible-playbook -i INVENTORY ansible/live-update.yml`, and the tests read
what the operator reads: the exit code, the play's output (the per-host table, the stop
message) and the report JSON.

The live path (load -> `systemctl kexec` -> verify) runs with a stand-in khotui and systemctl
(tests/fleet/fake_khotui.py): nothing is loaded on this machine. One host is reached over a
real sshd on 127.0.0.1 (skipped with the reason where sshd is missing). The real path runs in
the VM tier (tests/vm/test_vm_fleet.py: the playbook over SSH against the KHO guest).

Ansible needs Python >= 3.12 on the controller: under an older venv every test here skips
with that reason (`make venv` picks a Python >= 3.12 when one is installed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CAPTURES, REPO, VM
from tests.fixtures.trees import copy_tree

BIN = Path(sys.executable).parent
PLAYBOOK = REPO / "ansible" / "live-update.yml"
TIMER_PLAYBOOK = REPO / "ansible" / "check-timer.yml"
KERNEL = VM / "bzImage-kho-7.3.4"
FITS, SMALL = CAPTURES / "two-nodes" / "sysroot", CAPTURES / "scratch-too-small" / "sysroot"
N_FIT, N_SMALL = 9, 3

if sys.version_info < (3, 12) or not (BIN / "ansible-playbook").exists():
    pytest.skip(f"ansible-core needs Python >= 3.12 on the controller; this venv runs "
                f"{sys.version.split()[0]}{'' if sys.version_info < (3, 12) else ' without it'}:"
                " `make clean venv` with a Python >= 3.12 installed", allow_module_level=True)


@dataclass
class Run:
    rc: int
    out: str
    report: dict[str, Any]
    seconds: float = 0.0    # timed_playbook(), in the perf test only

    def verdict(self, host: str) -> str:
        return str(self.report["hosts"][host]["verdict"])


def ansible_env(home: Path) -> dict[str, str]:
    """Ansible isolated from this machine's configuration and ~/.ansible."""
    cfg = home / "ansible.cfg"
    if not cfg.exists():
        home.mkdir(parents=True, exist_ok=True)
        cfg.write_text("[defaults]\n")
    return {**os.environ, "ANSIBLE_CONFIG": str(cfg), "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_REMOTE_TMP": str(home / "remote"),
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_HOST_KEY_CHECKING": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "0", "PYTHONWARNINGS": "ignore"}


def playbook(inventory: Path, report: Path, *extra: str, book: Path = PLAYBOOK,
             cwd: Path | None = None) -> Run:
    env = ansible_env(inventory.parent / "ansible-home")
    p = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(book),
                        "-e", f"khotui_report={report}", *extra],
                       capture_output=True, text=True, env=env, cwd=cwd or inventory.parent,
                       stdin=subprocess.DEVNULL, timeout=300)
    data = json.loads(report.read_text()) if report.exists() else {}
    return Run(p.returncode, p.stdout + p.stderr, data)


def timed_playbook(inventory: Path, report: Path, *extra: str) -> Run:
    """playbook() and its wall time."""
    start = time.monotonic()
    run = playbook(inventory, report, *extra)
    run.seconds = time.monotonic() - start
    return run


def host_line(name: str, **hostvars: str) -> str:
    return name + "".join(f" {k}={v}" for k, v in hostvars.items())


def local_vars(khotui_bin: Path) -> list[str]:
    return ["ansible_connection=local", f"ansible_python_interpreter={sys.executable}",
            f"khotui_bin={khotui_bin}"]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 12-host snapshot inventory; an unreachable 13th host when an ssh client exists."""
    for path in (KERNEL, FITS, SMALL):
        if not path.exists():
            pytest.skip(f"{path} is missing: the fleet tests read the real captures and kernel")
    d = tmp_path_factory.mktemp("fleet")
    fit = copy_tree(FITS, d / "snap-two-nodes")
    small = copy_tree(SMALL, d / "snap-scratch-too-small")
    # the size of the capture's own initrd (scenario.txt: 67108864 bytes, made by make-initrd)
    initrd = d / "initrd-64M"
    subprocess.run([sys.executable, str(CAPTURES / "make-initrd"), str(64 << 20), str(initrd)],
                   check=True)
    lines = ["[fleet]"]
    lines += [host_line(f"fit{i:02}", khotui_root=str(fit)) for i in range(1, N_FIT + 1)]
    lines += [host_line(f"small{i}", khotui_root=str(small), khotui_initrd=str(initrd))
              for i in range(1, N_SMALL + 1)]
    lines += ["[fleet:vars]", *local_vars(BIN / "khotui"), f"khotui_kernel={KERNEL}"]
    (d / "inventory.ini").write_text("\n".join(lines) + "\n")
    return d / "inventory.ini"


@pytest.fixture(scope="module")
def stopped(fleet: Path) -> Run:
    """The default khotui_max_fail_percentage (0) with 3 of 12 hosts failing: the gate stops."""
    return playbook(fleet, fleet.parent / "report-stop.json")


@pytest.fixture(scope="module")
def went_ahead(fleet: Path) -> Run:
    """25% fail, 30% allowed: the 9 fitting hosts load (dry runs) in batches of 4."""
    return playbook(fleet, fleet.parent / "report-go.json",
                    "-e", "khotui_max_fail_percentage=30", "-e", "khotui_batch=4")


FIT_HOSTS = [f"fit{i:02}" for i in range(1, N_FIT + 1)]
SMALL_HOSTS = [f"small{i}" for i in range(1, N_SMALL + 1)]


def _would_fail_as_captured(run: Run) -> None:
    for h in SMALL_HOSTS:
        entry = run.report["hosts"][h]
        assert entry["verdict"] == "would-fail"
        assert entry["errno"] == "EADDRNOTAVAIL"
        assert entry["checks_failed"] == ["segments-fit"]
        assert entry["dry_run"] is True
        assert "kho_scratch" in entry["message"], "the report keeps the fix khotui gave"


def test_the_playbook_passes_ansibles_syntax_check_from_the_repository_root(fleet: Path) -> None:
    for book in ("ansible/live-update.yml", "ansible/check-timer.yml"):
        p = subprocess.run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(fleet),
                            book], capture_output=True, text=True, cwd=REPO,
                           env=ansible_env(fleet.parent / "ansible-home"),
                           stdin=subprocess.DEVNULL, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "Traceback" not in p.stdout + p.stderr


@pytest.mark.parametrize(("module", "options"), [
    ("khotui_plan", ("kernel", "initrd", "append", "cmdline", "root", "khotui_bin")),
    ("khotui_load", ("kernel", "initrd", "cmdline", "receipt", "log", "khotui_bin")),
    ("khotui_verify", ("receipt", "root", "khotui_bin")),
])
def test_ansible_doc_documents_every_module(tmp_path: Path, module: str,
                                            options: tuple[str, ...]) -> None:
    # what an operator reads first; a YAML slip in DOCUMENTATION leaves them an error instead
    env = {**ansible_env(tmp_path / "ansible-home"),
           "ANSIBLE_COLLECTIONS_PATH": str(REPO / "ansible" / "collections")}
    p = subprocess.run([str(BIN / "ansible-doc"), "--json", f"khotui.fleet.{module}"],
                       capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(p.stdout)[f"khotui.fleet.{module}"]["doc"]
    assert set(options) <= set(doc["options"]), sorted(doc["options"])


def test_too_many_failing_hosts_stop_the_rollout_before_any_load(stopped: Run) -> None:
    assert stopped.rc != 0, "the play must fail when the gate stops it"
    assert "Traceback" not in stopped.out and "DEPRECATION" not in stopped.out
    # no load task ran anywhere: the load play had no host
    assert "Load (khotui load" not in stopped.out
    assert {stopped.verdict(h) for h in FIT_HOSTS} == {"not-loaded"}
    _would_fail_as_captured(stopped)
    s = stopped.report["summary"]
    assert s["gate"]["go"] is False and s["gate"]["failing"] == N_SMALL
    assert s["gate"]["hosts"] == N_FIT + N_SMALL
    assert s["verdicts"]["would-fail"] == N_SMALL and s["verdicts"]["loaded"] == 0
    assert s["batches"] == 0
    # the stop message in the play output names every failing host, its errno and its check
    fail_line = next(line for line in stopped.out.splitlines() if "FAILED!" in line)
    for h in SMALL_HOSTS:
        assert f"{h} (would-fail: EADDRNOTAVAIL: segments-fit)" in fail_line
    assert "khotui_max_fail_percentage 0%" in fail_line


def test_within_the_allowed_failures_fitting_hosts_load_as_dry_runs_in_batches(
        went_ahead: Run) -> None:
    assert went_ahead.rc == 0, went_ahead.out[-3000:]
    assert "Traceback" not in went_ahead.out
    assert "DEPRECATION" not in went_ahead.out
    for h in FIT_HOSTS:
        entry = went_ahead.report["hosts"][h]
        assert entry["verdict"] == "loaded"
        assert entry["dry_run"] is True and entry["receipt"] is None
        assert "nothing was loaded" in entry["note"]
    _would_fail_as_captured(went_ahead)
    batches = went_ahead.report["batches"]
    assert [b["hosts"] for b in batches] == [FIT_HOSTS[0:4], FIT_HOSTS[4:8], FIT_HOSTS[8:]]
    assert all(b["failed"] == [] for b in batches)
    assert [went_ahead.report["hosts"][h]["batch"] for h in FIT_HOSTS] == [1] * 4 + [2] * 4 + [3]
    s = went_ahead.report["summary"]
    assert s["stopped"] is None and s["gate"]["go"] is True
    assert s["verdicts"] == {"would-fail": 3, "not-loaded": 0, "loaded": 9, "verified": 0,
                             "failed-verify": 0, "unreachable": 0}
    assert s["dry_run"] == 12


def test_the_play_output_has_a_table_of_every_host(went_ahead: Run) -> None:
    rows = {line.strip().strip('",').split()[0]: line for line in went_ahead.out.splitlines()
            if line.strip().startswith(('"fit', '"small'))}
    assert sorted(rows) == sorted(FIT_HOSTS + SMALL_HOSTS)
    assert all("loaded" in rows[h] and "dry run" in rows[h] for h in FIT_HOSTS)
    assert all("would-fail" in rows[h] and "EADDRNOTAVAIL" in rows[h] for h in SMALL_HOSTS)


def test_check_mode_runs_the_preflight_only(fleet: Path) -> None:
    run = playbook(fleet, fleet.parent / "report-check.json", "--check",
                   "-e", "khotui_max_fail_percentage=30")
    assert run.rc == 0, run.out[-3000:]
    assert "Traceback" not in run.out
    assert "Load (khotui load" not in run.out
    assert run.report["summary"]["check_mode"] is True
    assert {run.verdict(h) for h in FIT_HOSTS} == {"not-loaded"}
    assert all("check mode" in run.report["hosts"][h]["note"] for h in FIT_HOSTS)
    _would_fail_as_captured(run)


# -- the live path, with a stand-in khotui and systemctl ---------------------------------------


@pytest.fixture(scope="module")
def live_fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("live")
    fake = d / "khotui"
    fake.write_text(f"#!/bin/sh\nexec {sys.executable} {REPO / 'tests/fleet/fake_khotui.py'} "
                    '"$@"\n')
    systemctl = d / "systemctl"
    # a kexec starts a new boot: a new boot id, which the playbook waits for before verifying
    (d / "boot_id").write_text("boot-0\n")
    systemctl.write_text(f"#!/bin/sh\necho \"$@\" >> {d / 'systemctl.log'}\n"
                         f"echo boot-$$ > {d / 'boot_id'}\n")
    for f in (fake, systemctl):
        f.chmod(0o755)
    kernels = {"live1": "ok", "live2": "verify-fails", "live3": "ok", "live4": "ok"}
    lines = ["[live]"] + [host_line(h, khotui_kernel=f"/fake/{k}",
                                    khotui_receipt=str(d / f"receipt-{h}.json"))
                          for h, k in kernels.items()]
    # khotui_systemctl: the stand-in; the real one would kexec this machine
    lines += ["[live:vars]", *local_vars(fake), "khotui_exec=true",
              f"khotui_systemctl={systemctl}", "khotui_exec_delay=0",
              f"khotui_boot_id_command='cat {d / 'boot_id'}'"]
    (d / "inventory.ini").write_text("\n".join(lines) + "\n")
    return d / "inventory.ini"


def test_a_batch_failing_verification_stops_the_rollout_before_the_next(live_fleet: Path) -> None:
    inventory = live_fleet.read_text()
    assert f"khotui_systemctl={live_fleet.parent / 'systemctl'}" in inventory
    run = playbook(live_fleet, live_fleet.parent / "report.json", "-e", "khotui_batch=2")
    assert run.rc != 0
    assert "Traceback" not in run.out and "DEPRECATION" not in run.out
    assert run.verdict("live1") == "verified"
    assert run.verdict("live2") == "failed-verify"
    live2 = run.report["hosts"]["live2"]
    assert live2["checks_failed"] == ["kernel"]
    # the report says what did not arrive and what to do, not only the check's name
    assert [f["id"] for f in live2["failures"]] == ["kernel"] and live2["failures"][0]["message"]
    assert live2["error"]["fix"] and live2["error"]["path"] == live2["receipt"]
    assert run.report["hosts"]["live1"]["receipt"] == str(live_fleet.parent / "receipt-live1.json")
    for h in ("live3", "live4"):
        assert run.verdict(h) == "not-loaded"
        assert "stopped before batch 2" in run.report["hosts"][h]["note"]
        assert not (live_fleet.parent / f"receipt-{h}.json").exists(), "batch 2 must not load"
    # systemctl kexec ran on the first batch only, once per host
    assert (live_fleet.parent / "systemctl.log").read_text().splitlines() == ["kexec", "kexec"]
    stop = run.report["summary"]["stopped"]
    assert stop.startswith("batch 1 failed") and "live2 (failed-verify: kernel)" in stop
    assert all(e["dry_run"] is False for e in run.report["hosts"].values())


def test_a_host_still_in_its_old_boot_is_not_verified_there(live_fleet: Path,
                                                             tmp_path: Path) -> None:
    """systemd may take a while to stop services after `systemctl kexec`: the host still
    answers from the old kernel. The playbook waits for a new boot id instead of verifying
    there (which would fail `rebooted`); here the boot never changes, so it gives up."""
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(live_fleet.read_text()
                         .replace(f"khotui_systemctl={live_fleet.parent / 'systemctl'}",
                                  "khotui_systemctl=/bin/true")
                         .replace("khotui_exec_delay=0", "khotui_exec_delay=0\nkhotui_exec_timeout=2")
                         .replace(str(live_fleet.parent / "receipt-"), str(tmp_path / "receipt-")))
    run = playbook(inventory, tmp_path / "report.json", "-l", "live1,live3", "-e", "khotui_batch=1")
    assert run.rc != 0
    assert "Traceback" not in run.out
    live1 = run.report["hosts"]["live1"]
    assert live1["verdict"] == "unreachable" and live1["phase"] == "exec"
    assert "still the boot from before the kexec" in live1["error"]["message"]
    assert run.verdict("live3") == "not-loaded", "the rollout stops after batch 1"
    assert "stopped before the next batch" in run.out.split("Fail the run when")[-1]


def test_a_host_without_systemd_kexecs_with_its_exec_command(live_fleet: Path,
                                                            tmp_path: Path) -> None:
    """khotui_exec_command replaces `systemctl kexec` (the VM tier's guest has no systemd):
    it runs instead, once, and systemctl does not run at all."""
    log, boot_id, kexec = tmp_path / "exec.log", tmp_path / "boot_id", tmp_path / "kexec"
    boot_id.write_text("boot-0\n")
    kexec.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\necho boot-$$ > {boot_id}\n")
    kexec.chmod(0o755)
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(live_fleet.read_text()
                         .replace(f"khotui_systemctl={live_fleet.parent / 'systemctl'}",
                                  f"khotui_systemctl=/bin/false\nkhotui_exec_command='{kexec} -e'")
                         .replace("khotui_exec_delay=0", "khotui_exec_delay=0\nkhotui_exec_timeout=5")
                         .replace(str(live_fleet.parent / "boot_id"), str(boot_id))
                         .replace(str(live_fleet.parent / "receipt-"), str(tmp_path / "receipt-")))
    run = playbook(inventory, tmp_path / "report.json", "-l", "live1")
    assert run.rc == 0, run.out[-3000:]
    assert "Traceback" not in run.out
    assert run.verdict("live1") == "verified"
    assert log.read_text().splitlines() == ["-e"]


# -- one host over real SSH --------------------------------------------------------------------


def test_a_host_over_real_ssh(tmp_path: Path) -> None:
    from tests.tui.realterm import Sshd
    if not KERNEL.exists() or not FITS.exists():
        pytest.skip("the real captures and kernel are needed")
    sshd = Sshd(tmp_path)
    try:
        snap = copy_tree(FITS, tmp_path / "snap")
        args = (f"-F /dev/null -o IdentitiesOnly=yes -o BatchMode=yes "
                f"-o UserKnownHostsFile={tmp_path / 'known'} -o StrictHostKeyChecking=no")
        (tmp_path / "inventory.ini").write_text(
            f"far ansible_connection=ssh ansible_host=127.0.0.1 ansible_port={sshd.port} "
            f"ansible_user={os.environ.get('USER') or 'root'} "
            f"ansible_ssh_private_key_file={sshd.client_key} "
            f"ansible_ssh_common_args='{args}' ansible_python_interpreter={sys.executable} "
            f"khotui_bin={BIN / 'khotui'} khotui_kernel={KERNEL} khotui_root={snap}\n")
        run = playbook(tmp_path / "inventory.ini", tmp_path / "report.json")
    finally:
        sshd.stop()
    assert run.rc == 0, run.out[-3000:]
    assert "Traceback" not in run.out
    assert run.verdict("far") == "loaded" and run.report["hosts"]["far"]["dry_run"] is True


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client to fail to connect with")
def test_an_unreachable_host_fails_the_preflight(tmp_path: Path, fleet: Path) -> None:
    closed = tmp_path / "inventory.ini"
    # port 9 (discard) on loopback: nothing listens, the connection is refused at once
    closed.write_text(fleet.read_text().replace(
        "[fleet:vars]", "gone ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=9 "
                        f"ansible_python_interpreter={sys.executable}\n[fleet:vars]"))
    run = playbook(closed, tmp_path / "report.json", "-l", "fit01,fit02,gone",
                   "-e", "khotui_max_fail_percentage=50")
    assert run.rc == 0, run.out[-3000:]
    assert "Traceback" not in run.out
    assert run.verdict("gone") == "unreachable"
    assert [run.verdict(h) for h in ("fit01", "fit02")] == ["loaded", "loaded"]
    assert run.report["summary"]["gate"]["failing_hosts"] == ["gone"]
    # the report play ran under --limit too (it prints the table and the report's path)
    assert f"report: {tmp_path / 'report.json'}" in run.out


# -- the check timer ---------------------------------------------------------------------------


def test_the_check_timer_installs_into_a_root(tmp_path: Path, fleet: Path) -> None:
    """Into a temp root (no systemd here: khotui_check_enable=false); --check first writes none."""
    real = REPO / "contrib" / "systemd"
    units = real if (real / "khotui-check.timer").exists() else tmp_path / "units"
    if units != real:   # the units come with the prometheus work; stand-ins until then
        units.mkdir()
        (units / "khotui-check.service").write_text("[Service]\nType=oneshot\n")
        (units / "khotui-check.timer").write_text("[Timer]\nOnCalendar=daily\n")
    dest = tmp_path / "root" / "etc" / "systemd" / "system"
    dest.mkdir(parents=True)
    args = ("-l", "fit01,fit02", "-e", f"khotui_unit_dir={dest}", "-e", f"khotui_units_src={units}",
            "-e", "khotui_check_enable=false")
    checked = playbook(fleet, tmp_path / "unused.json", "--check", *args, book=TIMER_PLAYBOOK)
    assert checked.rc == 0, checked.out[-3000:]
    assert list(dest.iterdir()) == []
    run = playbook(fleet, tmp_path / "unused.json", *args, book=TIMER_PLAYBOOK)
    assert run.rc == 0, run.out[-3000:]
    assert "Traceback" not in checked.out + run.out
    for name in ("khotui-check.service", "khotui-check.timer"):
        assert (dest / name).read_bytes() == (units / name).read_bytes()
        assert (dest / name).stat().st_mode & 0o777 == 0o644


# -- time --------------------------------------------------------------------------------------


@pytest.mark.perf
def test_both_paths_take_under_a_minute_of_ansible_time(fleet: Path) -> None:
    """Issue 14's bound, an absolute one (not a ratio to a baseline like the other perf tests:
    the issue states it in seconds): both paths over the 12 snapshot hosts in under 60 s of
    ansible-playbook wall time on the 2-core machine."""
    stop = timed_playbook(fleet, fleet.parent / "report-stop-timed.json")
    go = timed_playbook(fleet, fleet.parent / "report-go-timed.json",
                        "-e", "khotui_max_fail_percentage=30", "-e", "khotui_batch=4")
    assert stop.rc != 0 and go.rc == 0
    total = stop.seconds + go.seconds
    print(f"ansible time: stop path {stop.seconds:.1f} s, go-ahead path {go.seconds:.1f} s, "
          f"total {total:.1f} s")
    assert total < 60, f"stop {stop.seconds:.1f} s + go-ahead {go.seconds:.1f} s"
