"""The fleet playbook (ansible/live-update.yml) against a real KHO guest over SSH (issue #14).

One QEMU run, three kernels, `guest.serving()`: each kernel brings up a virtio NIC (QEMU's
user-mode NAT, its port 22 forwarded to 127.0.0.1 on the host) and sshd with throwaway keys,
then waits. On the host, the venv's ansible-playbook runs the playbook as an operator would,
with an inventory of that one guest (ansible_user=root, the throwaway key):

  run 1, stage 1 -> 2: khotui_kernel = the guest's own kernel, khotui_cmdline = its command line
         with khostage=2, khotui_exec: preflight (khotui plan), gate, load (khotui load --yes
         --receipt), the exec phase fires the kexec (khotui_exec_command: the guest has no
         systemd, so a sleep, SIGTERM to every process as systemd-shutdown sends, and
         guestutil.py's reboot(LINUX_REBOOT_CMD_KEXEC)),
         wait_for_connection, the new-boot wait, then khotui verify against the receipt in the
         new kernel. The play succeeds, the report says `verified`, the guest runs stage 2.
  run 2, stage 2 -> 3: the same, from the kernel that run 1 kexec'd into, with `kho=off` on the
         next command line: the plan warns (cmdline-kho: an explicit kho=off is the operator's
         choice), the load and the kexec go ahead, and the new kernel, which ignores the
         handover, fails verify honestly (kho-booted: no kho/in; the kexec metadata and the
         blobs did not arrive). The report says `failed-verify` naming those checks, the run
         fails (a batch failing verification stops the rollout), the guest runs stage 3.

Both receipts are written to the writable share (/mnt/khotui, made 0700 by khotui), since the
guest's /var/tmp is a tmpfs the kexec loses and its root is read-only; khotui's audit log is
/mnt/khotui-audit.log (khotui makes no directory for its log). Ansible's remote and async temp
directories are on the guest's /var/tmp tmpfs.
Skips (one line): the VM tier's reasons (conftest.py), no ansible-core in the venv (it needs
Python >= 3.12), no sshd / ssh / ssh-keygen on the host.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import guest
import pytest
from guest import GuestError, require_khotui

pytestmark = pytest.mark.vm

PLAYBOOK = guest.REPO / "ansible" / "live-update.yml"
ANSIBLE_PLAYBOOK = guest.VENV_BIN / "ansible-playbook"
HOST = "kho-guest"
# The guest has no systemd: the exec phase's command does what `systemctl kexec` does. It
# sleeps first, so that the SSH session firing it (asynchronously) gets its answer back; then,
# as systemd-shutdown does, it sends SIGTERM to every other process (sshd's sessions close their
# connections: an SSH client whose server just vanished in a kexec sees no FIN and hangs, a
# ControlPersist master with it); then reboot(LINUX_REBOOT_CMD_KEXEC).
EXEC_COMMAND = (f"sh -c 'sleep 3; kill -TERM -1; sleep 1; "
                f"exec /usr/bin/python3 {guest.GUESTUTIL} kexec'")
SHARE = "/mnt/khotui"
PLAYBOOK_TIMEOUT = 900


def missing_fleet_prerequisite() -> str | None:
    if not ANSIBLE_PLAYBOOK.exists():
        return (f"no {ANSIBLE_PLAYBOOK}: ansible-core (the test extra) needs Python >= 3.12 on "
                "the controller; `make clean venv` with one installed")
    if not PLAYBOOK.exists():
        return f"no {PLAYBOOK} (the fleet playbook has not landed on this branch)"
    return guest.missing_ssh_prerequisite()


@dataclass
class PlayRun:
    rc: int
    out: str                           # ansible-playbook's stdout and stderr
    report: dict[str, Any]
    cmdline_given: str                 # khotui_cmdline
    cmdline_after: str                 # the guest's /proc/cmdline when the play ended
    seconds: float                     # the play's wall time (recorded, never asserted)
    receipt: str

    @property
    def host(self) -> dict[str, Any]:
        hosts = self.report.get("hosts") or {}
        if HOST not in hosts:
            raise GuestError(f"no {HOST} in the report {self.report!r}\n{self.out[-4000:]}")
        return dict(hosts[HOST])

    def describe(self) -> str:
        return (f"ansible-playbook rc={self.rc} ({self.seconds:.0f}s)\nreport: "
                f"{json.dumps(self.report, indent=1)[:3000]}\noutput (tail):\n{self.out[-5000:]}")


@dataclass
class FleetVM:
    served: guest.ServedGuest
    ready_seconds: float
    runs: dict[str, PlayRun] = field(default_factory=dict)
    serial: str = ""
    seconds: float = 0.0


def ansible_env(home: Path) -> dict[str, str]:
    """Ansible isolated from this machine's configuration and ~/.ansible; pipelining on (fewer
    SSH round trips per task, as operators configure it)."""
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "ansible.cfg"
    cfg.write_text("[defaults]\n[ssh_connection]\npipelining = True\n")
    return {**os.environ, "ANSIBLE_CONFIG": str(cfg), "ANSIBLE_HOME": str(home),
            "ANSIBLE_LOCAL_TEMP": str(home / "tmp"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_RETRY_FILES_ENABLED": "0", "PYTHONWARNINGS": "ignore"}


def inventory(g: guest.ServedGuest, cmdline: str, receipt: str) -> dict[str, Any]:
    """The one-guest inventory (YAML is a superset of JSON: written with json.dumps)."""
    hostvars = {
        "ansible_connection": "ssh", "ansible_host": "127.0.0.1", "ansible_port": g.port,
        "ansible_user": "root", "ansible_ssh_private_key_file": str(g.key),
        # a throwaway guest: its host key is not checked (and not remembered in ~/.ssh)
        "ansible_ssh_common_args": shlex.join(g.ssh_options()),
        "ansible_python_interpreter": "/usr/bin/python3",
        # the guest's root (the host's /, over 9p) is read-only: Ansible's temp files go to
        # its /var/tmp tmpfs
        "ansible_remote_tmp": "/var/tmp/ansible", "ansible_async_dir": "/var/tmp/ansible-async",
        "khotui_bin": str(guest.VENV_BIN / "khotui"),
        "khotui_kernel": str(guest.KERNEL), "khotui_cmdline": cmdline,
        "khotui_exec": True, "khotui_exec_command": EXEC_COMMAND,
        "khotui_exec_delay": 3, "khotui_exec_timeout": 300,
        "khotui_receipt": receipt, "khotui_log": "/mnt/khotui-audit.log",
    }
    return {"all": {"hosts": {HOST: hostvars}}}


def run_playbook(g: guest.ServedGuest, work: Path, cmdline: str, receipt: str) -> PlayRun:
    work.mkdir(parents=True, exist_ok=True)
    inv = work / "inventory.yml"
    inv.write_text(json.dumps(inventory(g, cmdline, receipt), indent=1) + "\n")
    report = work / "report.json"
    argv = [str(ANSIBLE_PLAYBOOK), "-i", str(inv), str(PLAYBOOK), "-e", f"khotui_report={report}"]
    t0 = time.monotonic()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, cwd=work, stdin=subprocess.DEVNULL,
                           env=ansible_env(work / "ansible-home"), timeout=PLAYBOOK_TIMEOUT)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = -1, f"ansible-playbook killed after {PLAYBOOK_TIMEOUT}s\n{e.stdout!r}{e.stderr!r}"
    seconds = time.monotonic() - t0
    (work / "ansible.out").write_text(out)
    try:
        after = g.ssh("cat /proc/cmdline", timeout=120).stdout.strip()
    except subprocess.TimeoutExpired:
        after = ""
    data = json.loads(report.read_text()) if report.exists() else {}
    return PlayRun(rc, out, data, cmdline, after, seconds, receipt)


@pytest.fixture(scope="module")
def fleet_vm(vm_dirs) -> FleetVM:
    why = missing_fleet_prerequisite()
    if why:
        pytest.skip(why)
    require_khotui("plan", "load", "verify")
    d = vm_dirs("khotui-fleet")
    t0 = time.monotonic()
    with guest.serving(numa=[1024, 1024], append="kho=on", run_dir=d / "guest", timeout=1800) as g:
        vm = FleetVM(served=g, ready_seconds=time.monotonic() - t0)
        vm.runs["verified"] = ok = run_playbook(g, d / "verified", g.next_cmdline(2),
                                                f"{SHARE}/receipt.json")
        # the failure path only means something from the kernel the first run kexec'd into
        if "khostage=2" in ok.cmdline_after.split():
            off = g.next_cmdline(3).replace("kho=on", "kho=off")
            vm.runs["kho-off"] = run_playbook(g, d / "kho-off", off, f"{SHARE}/receipt-kho-off.json")
    vm.serial, vm.seconds = g.serial, time.monotonic() - t0
    timings = {"boot_to_ssh": round(vm.ready_seconds, 1), "qemu": round(vm.seconds, 1),
               **{f"play_{k}": round(r.seconds, 1) for k, r in vm.runs.items()}}
    (d / "fleet-timing.json").write_text(json.dumps(timings) + "\n")
    return vm


def test_the_playbook_loads_kexecs_and_verifies_a_kho_guest_over_ssh(fleet_vm: FleetVM) -> None:
    run = fleet_vm.runs["verified"]
    assert run.rc == 0, run.describe()
    host = run.host
    assert host["verdict"] == "verified", run.describe()
    assert host["dry_run"] is False and not host["checks_failed"], run.describe()
    # the guest runs the kernel the play loaded, with the command line it gave
    assert run.cmdline_after == run.cmdline_given, run.describe()
    assert "khostage=2" in run.cmdline_after.split()
    assert run.report["summary"]["stopped"] is None, run.describe()
    # the receipt the load wrote survived the kexec on the share, made by the kernel before it
    share = fleet_vm.served.out / "khotui"
    receipt = json.loads((share / "receipt.json").read_text())
    assert receipt["cmdline"] == run.cmdline_given
    assert oct(share.stat().st_mode & 0o777) == oct(0o700)
    # the operator's table names the host and its verdict
    assert any(HOST in line and "verified" in line for line in run.out.splitlines()), run.out[-3000:]
    assert "Traceback" not in run.out + json.dumps(run.report)


def test_a_next_kernel_without_kho_fails_verification_in_the_report(fleet_vm: FleetVM) -> None:
    if "kho-off" not in fleet_vm.runs:
        raise GuestError("the verified path did not reach stage 2; no failure path to run\n"
                         + fleet_vm.runs["verified"].describe())
    run = fleet_vm.runs["kho-off"]
    host = run.host
    assert host["verdict"] == "failed-verify", run.describe()
    # what a kernel booted with kho=off cannot show: the handover never arrived
    assert "kho-booted" in host["checks_failed"], run.describe()
    assert "kexec-metadata" in host["checks_failed"], run.describe()
    assert {f["id"] for f in host["failures"]} == set(host["checks_failed"]), run.describe()
    # the exec itself happened: the guest runs the loaded kernel (stage 3, kho=off)
    assert "khostage=3" in run.cmdline_after.split() and "kho=off" in run.cmdline_after.split()
    # a batch failing verification stops the rollout: the run fails, after the report
    assert run.rc != 0, run.describe()
    assert run.report["summary"]["stopped"], run.describe()
    assert "Traceback" not in run.out + json.dumps(run.report)


def test_no_traceback_in_the_guests_console(fleet_vm: FleetVM) -> None:
    assert fleet_vm.serial, "no serial log"
    assert "Traceback" not in fleet_vm.serial
    assert "Kernel panic" not in fleet_vm.serial
