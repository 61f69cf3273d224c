"""Boot the KHO kernel under QEMU and run shell steps inside the guest as root.

The guest has no disk image: its root file system is the host's own `/`, shared read-only over
9p, so it runs the host's Python and this checkout's `.venv` at the same paths. A second,
writable 9p share (mounted at `/mnt` in the guest) brings results back. The guest's init is a
bash script this module writes into the run directory (a host path the guest sees unchanged).

A run has one or more *stages*. Stage 1 runs in the cold-booted kernel; every later stage runs
in the kernel that the previous stage kexec'ed into. The kernel command line carries
`khostage=N` so the same init script knows where it is. Inside the guest each step is one bash
command line, run from the checkout with `.venv/bin` first on PATH; its stdout, stderr, exit
code and wall time land in `/mnt/stageN/NN.{cmd,out,err,rc,time}`. After the last step of a
stage the init script copies the kernel log (`/dev/kmsg`) to `/mnt/stageN/kmsg.txt`; then, if
another stage follows, it executes the loaded kernel (`reboot(LINUX_REBOOT_CMD_KEXEC)`), else it
powers off (`echo o > /proc/sysrq-trigger`).

Loading the next kernel is a step the test writes (with `guestutil.py load` or `khotui load`);
the guest exports `KHO_NEXT_CMDLINE` = this kernel's command line with `khostage=N+1`, which is
the command line the next kernel must get for the init script to find its stage.

    run = boot([["cat /sys/kernel/debug/kho/out/scratch_phys"]])
    run.assert_steps_ok()
    print(run.step(1, 0).stdout)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SHARED = Path(os.environ.get("KHOTUI_SHARED", REPO.parent / "shared"))
VM_DIR = SHARED / "vm"


def _find_kernel() -> Path:
    """$KHOTUI_VM_KERNEL, else ../shared/vm's kernel, else the one tests/vm/build-kernel made."""
    if os.environ.get("KHOTUI_VM_KERNEL"):
        return Path(os.environ["KHOTUI_VM_KERNEL"]).resolve()
    built = HERE / "build" / "bzImage-kho-7.3.4"
    shared = VM_DIR / "bzImage-kho-7.3.4"
    return built if built.is_file() and not shared.is_file() else shared


KERNEL = _find_kernel()
MAKE_INITRD = SHARED / "kho" / "make-initrd"
VENV_BIN = REPO / ".venv" / "bin"
GUESTUTIL = HERE / "guestutil.py"
QEMU = os.environ.get("KHOTUI_QEMU", "qemu-system-x86_64")
# How guest steps (and the host-side `--help` probe) invoke the CLI under test.
KHOTUI_CLI = os.environ.get("KHOTUI_VM_CLI", "python -m khotui")
SSHD = shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/sbin/sshd")
                                     if os.access(p, os.X_OK)), None)
OVMF_CANDIDATES = ("/usr/share/ovmf/OVMF.fd", "/usr/share/OVMF/OVMF.fd", "/usr/share/qemu/OVMF.fd")

# Guest-side constants, also handy for tests.
LINUX_REBOOT_CMD_KEXEC = 0x45584543
SYS_KEXEC_FILE_LOAD = 320
KEXEC_FILE_NO_INITRAMFS = 0x4
KEXEC_FILE_DEBUG = 0x8

BASE_APPEND = (
    "console=ttyS0 root=hostroot rootfstype=9p "
    "rootflags=trans=virtio,version=9p2000.L,msize=262144 ro panic=-1"
)
DEFAULT_TIMEOUT = float(os.environ.get("KHOTUI_VM_TIMEOUT", "600"))
STEP_TIMEOUT = int(os.environ.get("KHOTUI_VM_STEP_TIMEOUT", "300"))


class GuestError(AssertionError):
    """The guest misbehaved (timeout, crash, step failed). An AssertionError so pytest fails."""


@dataclass
class Step:
    stage: int
    index: int
    cmd: str
    name: str
    rc: int | None  # None: the step never finished (guest died or was killed mid-step)
    stdout: str
    stderr: str
    seconds: float | None

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def json(self):
        """stdout parsed as JSON (raises GuestError with the step's output if it is not)."""
        try:
            return json.loads(self.stdout)
        except ValueError as e:
            raise GuestError(f"stage {self.stage} step {self.index} `{self.cmd}`: stdout is not "
                             f"JSON ({e})\n{self.describe()}") from None

    def describe(self) -> str:
        label = f"{self.index} {self.name}" if self.name else str(self.index)
        return (f"[stage {self.stage} step {label}] $ {self.cmd}\n  rc={self.rc} "
                f"({self.seconds}s)\n  stdout: {_clip(self.stdout)}\n  stderr: {_clip(self.stderr)}")


@dataclass
class GuestRun:
    run_dir: Path
    out: Path  # the writable share: everything the guest wrote
    serial: str  # the whole serial console log (both kernels)
    qemu_rc: int | None
    timed_out: bool
    seconds: float  # wall time of the QEMU process (boot .. power-off, all stages)
    nstages: int
    steps: dict[int, list[Step]] = field(default_factory=dict)
    qemu_cmd: list[str] = field(default_factory=list)
    qemu_stderr: str = ""

    def step(self, stage: int, index: int) -> Step:
        try:
            return self.steps[stage][index]
        except (KeyError, IndexError):
            raise GuestError(f"stage {stage} step {index} did not run\n{self.summary()}") from None

    def named(self, name: str) -> Step:
        """The step given as (name, command); GuestError if it never ran."""
        for steps in self.steps.values():
            for st in steps:
                if st.name == name:
                    return st
        raise GuestError(f"step {name!r} did not run\n{self.summary()}")

    def reached(self, stage: int) -> bool:
        return (self.out / f"stage{stage}" / "started").exists()

    def finished(self, stage: int) -> bool:
        return (self.out / f"stage{stage}" / "done").exists()

    def kmsg(self, stage: int) -> str:
        p = self.out / f"stage{stage}" / "kmsg.txt"
        return p.read_text(errors="replace") if p.exists() else ""

    def file(self, rel: str) -> Path:
        return self.out / rel

    def assert_stage(self, stage: int) -> None:
        """Stage `stage` ran to its end (all its steps, whatever their exit codes)."""
        if not self.finished(stage):
            what = "never started" if not self.reached(stage) else "did not finish"
            raise GuestError(f"stage {stage} {what}\n{self.summary()}")

    def assert_completed(self) -> None:
        """Every stage started and finished, QEMU exited by itself in time."""
        problems = []
        if self.timed_out:
            problems.append(f"QEMU killed after the timeout ({self.seconds:.0f}s)")
        for s in range(1, self.nstages + 1):
            if not self.reached(s):
                problems.append(f"stage {s} never started")
                break
            if not self.finished(s):
                problems.append(f"stage {s} did not finish")
                break
        if "Kernel panic" in self.serial:
            problems.append("kernel panic in the serial log")
        if problems:
            raise GuestError("; ".join(problems) + "\n" + self.summary())

    def assert_steps_ok(self) -> None:
        self.assert_completed()
        bad = [st for steps in self.steps.values() for st in steps if not st.ok]
        if bad:
            raise GuestError("guest steps failed:\n" + "\n".join(b.describe() for b in bad)
                             + "\n" + self.summary(steps=False))

    def summary(self, steps: bool = True) -> str:
        lines = [f"run dir {self.run_dir} (qemu rc={self.qemu_rc}, {self.seconds:.1f}s, "
                 f"timed_out={self.timed_out})"]
        if steps:
            for s in sorted(self.steps):
                for st in self.steps[s]:
                    lines.append(st.describe())
        if self.qemu_stderr.strip():
            lines.append("qemu stderr: " + _clip(self.qemu_stderr, 800))
        tail = "\n".join(self.serial.splitlines()[-40:])
        lines.append("serial log (last 40 lines):\n" + tail)
        return "\n".join(lines)


def ok_step(run: GuestRun, name: str) -> Step:
    """The named step, which must have exited 0: GuestError with its output otherwise."""
    st = run.named(name)
    if not st.ok:
        raise GuestError(f"step {name!r} failed\n{st.describe()}")
    return st


def _clip(s: str, n: int = 2000) -> str:
    s = s.rstrip("\n")
    return s if len(s) <= n else s[: n // 2] + f"\n... [{len(s) - n} chars] ...\n" + s[-n // 2:]


# ---------------------------------------------------------------------------------------------
# what can skip


def missing_prerequisite() -> str | None:
    """One-line reason why the VM tier cannot run here, or None if it can."""
    if os.environ.get("KHOTUI_SKIP_VM") == "1":
        return "KHOTUI_SKIP_VM=1"
    if sys.platform != "linux":
        return "the VM tier needs a Linux host (the guest uses the host's root file system)"
    if shutil.which(QEMU) is None:
        return f"no {QEMU} on PATH (Debian: apt-get install qemu-system-x86)"
    if not KERNEL.is_file():
        return (f"no KHO kernel at {KERNEL}: build one with tests/vm/build-kernel "
                f"(~13 min on 2 cores; or set KHOTUI_VM_KERNEL)")
    if not os.path.lexists(VENV_BIN / "python"):
        return f"no {VENV_BIN}/python: run `make venv` first"
    # The guest reads the host's / through QEMU's 9p server, i.e. with this user's permissions
    # (security_model=none): as root it reads everything; otherwise the venv's interpreter and
    # the checkout must be readable (a pyenv Python under /root, mode 0700, is not).
    if os.geteuid() != 0:
        real = os.path.realpath(VENV_BIN / "python")
        for p in (real, str(REPO / "khotui"), str(HERE / "guestutil.py")):
            if not os.access(p, os.R_OK):
                return (f"not root, and {p} is not readable by uid {os.geteuid()}: the guest "
                        f"reads the host's / over 9p with QEMU's permissions")
    return None


# ---------------------------------------------------------------------------------------------
# the CLI under test (it lands in pieces: a test needing a missing command skips with this reason)


@cache
def khotui_command_missing(cmd: str) -> str | None:
    """Why `python -m khotui CMD` cannot be used yet (None when `CMD --help` works in the venv)."""
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    line = f"{KHOTUI_CLI} {cmd} --help"
    try:
        p = subprocess.run(["bash", "-c", line], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`{line}` could not run in the host venv: {e}"
    if p.returncode != 0:
        said = (p.stderr or p.stdout).strip().splitlines()
        return (f"`{line}` failed in the host venv (rc={p.returncode}"
                f"{': ' + said[-1] if said else ''}): that CLI command has not landed yet")
    return None


def require_khotui(*cmds: str) -> None:
    for cmd in cmds:
        why = khotui_command_missing(cmd)
        if why:
            import pytest

            pytest.skip(why)


# ---------------------------------------------------------------------------------------------
# the guest init script

_INIT_HEAD = r"""#!/bin/bash
# Generated by tests/vm/guest.py: the init (PID 1) of a khotui VM test guest.
export PATH=@VENV_BIN@:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/var/tmp TMPDIR=/var/tmp PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8 TERM=dumb
export KHOTUI_REPO=@REPO@ GUESTUTIL=@GUESTUTIL@ KHO_RUN_DIR=@RUN_DIR@
say() { echo "khovm: $*" > /dev/console 2>/dev/null || echo "khovm: $*"; }
die() { say "FATAL: $*"; sync; echo o > /proc/sysrq-trigger; sleep 60; }
mnt() { mount "$@" || say "mount $* failed (rc $?)"; }
mnt -t proc proc /proc
mnt -t sysfs sysfs /sys
mountpoint -q /dev || mnt -t devtmpfs devtmpfs /dev  # CONFIG_DEVTMPFS_MOUNT may have done it
@MOUNT_DEBUGFS@mnt -t debugfs debugfs /sys/kernel/debug
mnt -t securityfs securityfs /sys/kernel/security
mnt -t tmpfs -o mode=0755 tmpfs /run
# Not /tmp: the host's /tmp (seen through the root share) may hold this script and its run dir.
mnt -t tmpfs -o mode=1777 tmpfs /var/tmp
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 out /mnt || die "cannot mount the out share"
STAGE=$(sed -n 's/.*\bkhostage=\([0-9][0-9]*\).*/\1/p' /proc/cmdline)
STAGE=${STAGE:-1}
export KHO_STAGE=$STAGE
export KHO_NEXT_CMDLINE="$(sed "s/\bkhostage=$STAGE\b/khostage=$((STAGE + 1))/" /proc/cmdline)"
D=/mnt/stage$STAGE
mkdir -p "$D" || die "cannot write to the out share"
date +%s.%N > "$D/started"
cat /proc/uptime > "$D/uptime-start"
say "stage $STAGE started (uptime $(cut -d' ' -f1 /proc/uptime)s)"

step() {  # step INDEX COMMAND
    local i=$1 cmd=$2 t0 t1 rc
    printf '%s\n' "$cmd" > "$D/$i.cmd"
    say "stage $STAGE step $i: $cmd"
    t0=$(date +%s.%N)
    ( cd "$KHOTUI_REPO" && timeout -k 5 @STEP_TIMEOUT@ bash -c "$cmd" ) \
        > "$D/$i.out" 2> "$D/$i.err" < /dev/null
    rc=$?
    t1=$(date +%s.%N)
    echo "$rc" > "$D/$i.rc"
    echo "$t0 $t1" > "$D/$i.time"
    say "stage $STAGE step $i: rc=$rc"
}

finish() {  # copy the kernel log, mark the stage done
    python3 "$GUESTUTIL" kmsg "$D/kmsg.txt" || dmesg > "$D/kmsg.txt" 2>&1
    cat /proc/uptime > "$D/uptime-end"
    date +%s.%N > "$D/done"
    sync
}

poweroff() {
    say "stage $STAGE done, powering off"
    umount /mnt 2>/dev/null
    sync
    echo o > /proc/sysrq-trigger
    sleep 60
}

kexec_next() {
    say "stage $STAGE done, executing the loaded kernel (kexec_loaded=$(cat /sys/kernel/kexec_loaded))"
    sync
    python3 "$GUESTUTIL" kexec > "$D/kexec.err" 2>&1
    say "kexec did not happen: $(cat "$D/kexec.err")"
    sync
    poweroff
}

case "$STAGE" in
"""


def _init_script(run_dir: Path, stages: Sequence[Sequence[str]], debugfs: bool = True) -> str:
    # Without debugfs the guest is a host that never mounted it (no sys/kernel/debug/kho view).
    head = (_INIT_HEAD.replace("@MOUNT_DEBUGFS@", "" if debugfs else "# no debugfs: ")
            .replace("@VENV_BIN@", str(VENV_BIN)).replace("@REPO@", shlex.quote(str(REPO)))
            .replace("@GUESTUTIL@", shlex.quote(str(GUESTUTIL)))
            .replace("@RUN_DIR@", shlex.quote(str(run_dir)))
            .replace("@STEP_TIMEOUT@", str(STEP_TIMEOUT)))
    body = []
    for n, steps in enumerate(stages, start=1):
        body.append(f"{n})")
        for i, (_name, cmd) in enumerate(_normalize(steps)):
            body.append(f"    step {i:02d} {shlex.quote(cmd)}")
        body.append("    finish")
        body.append("    kexec_next" if n < len(stages) else "    poweroff")
        body.append("    ;;")
    body.append('*)\n    say "unexpected stage $STAGE"\n    finish\n    poweroff\n    ;;\nesac\n'
                'poweroff\n')
    return head + "\n".join(body)


# Serving mode: every stage brings up the network and sshd, then waits for the host to drive it.
_SERVE_BODY = r"""*)
    serve
    ;;
esac
poweroff
"""

_SERVE_FUNC = r"""
serve() {  # network, sshd, then wait: the host drives this kernel over SSH
    mkdir -p /dev/pts
    mountpoint -q /dev/pts || mnt -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts /dev/pts
    # the virtio NIC: no udev renames it, so the kernel's eth0 (sit0 & co. may exist too)
    local nic
    nic=$(cd /sys/class/net && ls -d eth* en* 2>/dev/null | head -n1)
    { ip link set lo up && ip link set "$nic" up && ip addr add 10.0.2.15/24 dev "$nic" \
        && ip route add default via 10.0.2.2; } > "$D/net.log" 2>&1 \
        || say "network setup failed: $(tr '\n' ' ' < "$D/net.log")"
    # The 9p share may not keep modes, and sshd refuses a private key others can read: copy the
    # throwaway keys to a tmpfs. /run/sshd is the privilege separation directory (user `sshd`
    # from the host's /etc/passwd, seen through the root share).
    local S=/run/khovm-ssh
    mkdir -m 0700 -p "$S" /run/sshd && chmod 0755 /run/sshd
    cp @SSH_DIR@/host_ed25519 @SSH_DIR@/authorized_keys @SSH_DIR@/sshd_config "$S/" \
        || die "cannot copy the ssh keys from @SSH_DIR@"
    chmod 0600 "$S"/*
    # bash reads ~/.bashrc for an SSH command too: the host's /root/.bashrc (seen read-only
    # here) may set up tools that try to write below /root (pyenv: "cannot rehash") and would
    # put its noise into every command's stderr; a guest root without rc files is a plain host
    [ -f /root/.bashrc ] && mount --bind /dev/null /root/.bashrc
    @SSHD@ -f "$S/sshd_config" -E "$D/sshd.log" || die "sshd did not start (see $D/sshd.log)"
    date +%s.%N > "$D/serving"
    say "stage $STAGE serving ssh on $nic (uptime $(cut -d' ' -f1 /proc/uptime)s)"
    local waited=0
    # the host asks for the end with a file on the share; a kexec driven over SSH ends it too
    while [ ! -e /mnt/poweroff ] && [ "$waited" -lt @SERVE_TIMEOUT@ ]; do
        sleep 1
        waited=$((waited + 1))
    done
    [ -e /mnt/poweroff ] || say "stage $STAGE: no poweroff request in @SERVE_TIMEOUT@ s"
    finish
    poweroff
}
"""


def _serve_script(run_dir: Path, ssh_dir: Path, serve_timeout: int, debugfs: bool = True) -> str:
    """The init script of a serving guest: every stage runs `serve` (network, sshd, wait)."""
    stub = _init_script(run_dir, [[]], debugfs)
    head = stub[: stub.index('case "$STAGE" in')]
    func = (_SERVE_FUNC.replace("@SSH_DIR@", shlex.quote(str(ssh_dir)))
            .replace("@SSHD@", shlex.quote(SSHD or "sshd"))
            .replace("@SERVE_TIMEOUT@", str(int(serve_timeout))))
    return head + func + 'case "$STAGE" in\n' + _SERVE_BODY


# ---------------------------------------------------------------------------------------------
# host side


def make_initrd(size: int, path: Path) -> Path:
    """An uncompressed newc cpio archive of exactly `size` bytes (shared/kho/make-initrd)."""
    subprocess.run([sys.executable, str(MAKE_INITRD), str(size), str(path)], check=True)
    return path


def qemu_command(run_dir: Path, out: Path, *, numa: Sequence[int], append: str,
                 efi: bool, smp: int, ssh_port: int | None = None) -> list[str]:
    total = sum(numa)
    cmd = [QEMU, "-accel", "tcg,thread=single", "-m", f"{total}M", "-smp", str(smp),
           "-nographic", "-nodefaults", "-no-reboot"]
    for nid, mib in enumerate(numa):
        cmd += ["-object", f"memory-backend-ram,id=m{nid},size={mib}M",
                "-numa", f"node,nodeid={nid},memdev=m{nid}"]
    cmd += ["-serial", f"file:{run_dir / 'serial.log'}",
            "-fsdev", "local,id=rootfs,path=/,security_model=none,readonly=on",
            "-device", "virtio-9p-pci,fsdev=rootfs,mount_tag=hostroot",
            "-fsdev", f"local,id=outfs,path={out},security_model=none",
            "-device", "virtio-9p-pci,fsdev=outfs,mount_tag=out",
            "-kernel", str(KERNEL), "-append", append]
    if ssh_port is not None:
        # user-mode networking: the guest is 10.0.2.15 behind QEMU's NAT, its port 22 forwarded
        # to 127.0.0.1:ssh_port on the host only
        cmd += ["-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
                "-device", "virtio-net-pci,netdev=n0"]
    if efi:
        fw = next((p for p in OVMF_CANDIDATES if Path(p).is_file()), None)
        if fw is None:
            raise GuestError("efi=True but no OVMF firmware (Debian: apt-get install ovmf)")
        cmd += ["-bios", fw]
    return cmd


def _run_dirs(run_dir: Path | str | None) -> tuple[Path, Path]:
    """The run directory (a new temporary one by default) and its `out` share, made."""
    run = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="khovm-"))
    run = run.resolve()
    run.mkdir(parents=True, exist_ok=True)
    (run / "out").mkdir(exist_ok=True)
    return run, run / "out"


def _first_cmdline(init: Path, append: str, kho_scratch: str | None) -> str:
    """Stage 1's command line: the known-good base, the caller's, the scratch override, the
    stage marker."""
    parts = [BASE_APPEND, f"init={init}", append]
    if kho_scratch:
        parts.append(f"kho_scratch={kho_scratch}")
    parts.append("khostage=1")
    return " ".join(p for p in parts if p)


def boot(stages: Sequence[Sequence[StepSpec]], *, numa: Sequence[int] = (1024, 1024),
         append: str = "kho=on", kho_scratch: str | None = None, efi: bool = False,
         smp: int = 2, timeout: float | None = None, run_dir: Path | str | None = None,
         debugfs: bool = True) -> GuestRun:
    """Boot the KHO kernel, run `stages` (a list of lists of steps), return the results.

    A step is a bash command line or a (name, command line) pair. `numa` lists the NUMA nodes'
    sizes in MiB (the guest's RAM is their sum); `append` is added to the known-good command
    line, then `kho_scratch=` if given, then `khostage=1`. `efi` boots through OVMF.
    `debugfs=False`: the init script does not mount debugfs (in any stage).

    Stage N+1 only runs if stage N loaded a kernel (with KHO_NEXT_CMDLINE) before it ended.
    Never raises for guest misbehaviour: check `assert_completed()` / `assert_steps_ok()`.
    """
    if not stages:
        raise ValueError("boot() needs at least one stage")
    run_dir, out = _run_dirs(run_dir)
    init = run_dir / "init.sh"
    init.write_text(_init_script(run_dir, stages, debugfs))
    init.chmod(0o755)
    cmdline = _first_cmdline(init, append, kho_scratch)
    cmd = qemu_command(run_dir, out, numa=numa, append=cmdline, efi=efi, smp=smp)
    (run_dir / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    t0 = time.monotonic()
    timed_out = False
    with open(run_dir / "qemu.stderr", "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            rc = proc.wait()
        except BaseException:  # KeyboardInterrupt etc.: never leave a QEMU behind
            proc.kill()
            proc.wait()
            raise
    seconds = time.monotonic() - t0
    serial_path = run_dir / "serial.log"
    run = GuestRun(run_dir=run_dir, out=out,
                   serial=serial_path.read_text(errors="replace") if serial_path.exists() else "",
                   qemu_rc=rc, timed_out=timed_out, seconds=seconds, nstages=len(stages),
                   qemu_cmd=cmd,
                   qemu_stderr=(run_dir / "qemu.stderr").read_text(errors="replace"))
    for n, steps in enumerate(stages, start=1):
        run.steps[n] = _collect(out / f"stage{n}", n, steps)
    _record_timing(run)
    return run


def run_in_guest(steps_stage1: Sequence[StepSpec], steps_stage2: Sequence[StepSpec] | None = None,
                 **kw) -> GuestRun:
    stages = [list(steps_stage1)] + ([list(steps_stage2)] if steps_stage2 is not None else [])
    return boot(stages, **kw)


StepSpec = "str | tuple[str, str]"  # for annotations only


# ---------------------------------------------------------------------------------------------
# serving mode: a guest driven from the host over SSH (the fleet playbook's VM test)

SERVE_READY_TIMEOUT = float(os.environ.get("KHOTUI_VM_READY_TIMEOUT", "300"))


def missing_ssh_prerequisite() -> str | None:
    """One-line reason why a serving guest cannot run here (beyond missing_prerequisite())."""
    if SSHD is None:
        return "no sshd on this host (Debian: apt-get install openssh-server; .ci/run installs it)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH (Debian: apt-get install openssh-client)"
    return None


@dataclass
class ServedGuest:
    """A running guest serving SSH on 127.0.0.1:`port` as root, with the client key `key`.

    `cmdline` is the command line the guest was booted with (stage 1's /proc/cmdline);
    `next_cmdline(n)` is it with `khostage=n`, the one a kexec'd kernel needs to be stage n.
    What the guest writes lands in `out` (`/mnt` in the guest; `out/stageN/` per kernel)."""

    run_dir: Path
    out: Path
    port: int
    key: Path
    known_hosts: Path
    cmdline: str
    proc: subprocess.Popen
    started: float = field(default_factory=time.monotonic)

    def ssh_options(self) -> list[str]:
        """OpenSSH options for this throwaway guest (its host key is not worth checking)."""
        return ["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20"]

    def ssh_argv(self, command: str) -> list[str]:
        return ["ssh", *self.ssh_options(), "-i", str(self.key), "-p", str(self.port),
                "root@127.0.0.1", command]

    def ssh(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `command` in the guest as root (a non-zero exit is returned, not raised)."""
        return subprocess.run(self.ssh_argv(command), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=timeout)

    def next_cmdline(self, stage: int) -> str:
        return re.sub(r"\bkhostage=\d+\b", f"khostage={stage}", self.cmdline)

    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def serial(self) -> str:
        p = self.run_dir / "serial.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def serving(self, stage: int) -> bool:
        return (self.out / f"stage{stage}" / "serving").exists()

    def wait_ready(self, stage: int = 1, timeout: float | None = None) -> float:
        """Wait until kernel `stage` serves SSH (a `true` over SSH works there); the seconds
        waited. GuestError if QEMU exits or the time runs out."""
        timeout = SERVE_READY_TIMEOUT if timeout is None else timeout
        t0 = time.monotonic()
        deadline = t0 + timeout
        last = "not serving yet"
        while time.monotonic() < deadline:
            if not self.alive():
                raise GuestError(f"QEMU exited (rc={self.proc.returncode}) before stage {stage} "
                                 f"served SSH\n{self.summary()}")
            if self.serving(stage):
                try:
                    p = self.ssh("true", timeout=60)
                except subprocess.TimeoutExpired:
                    last = "ssh `true` timed out"
                else:
                    if p.returncode == 0:
                        return time.monotonic() - t0
                    last = f"ssh `true` exited {p.returncode}: {p.stderr.strip()[-300:]}"
            time.sleep(1)
        raise GuestError(f"stage {stage} did not serve SSH within {timeout:.0f}s ({last})\n"
                         f"{self.summary()}")

    def summary(self) -> str:
        lines = [f"run dir {self.run_dir} (serving guest on port {self.port}, "
                 f"{time.monotonic() - self.started:.0f}s, qemu rc={self.proc.poll()})"]
        for log in sorted(self.out.glob("stage*/sshd.log")):
            lines.append(f"{log.relative_to(self.out)}: " + _clip(log.read_text(errors="replace"), 800))
        qerr = self.run_dir / "qemu.stderr"
        if qerr.exists() and qerr.read_text(errors="replace").strip():
            lines.append("qemu stderr: " + _clip(qerr.read_text(errors="replace"), 800))
        lines.append("serial log (last 40 lines):\n" + "\n".join(self.serial.splitlines()[-40:]))
        return "\n".join(lines)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ssh_keys(ssh_dir: Path) -> tuple[Path, Path]:
    """Throwaway host and client keys and an sshd_config in `ssh_dir`: (client key, known_hosts)."""
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in ("host_ed25519", "client_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"khovm-{name}",
                        "-f", str(ssh_dir / name)], check=True, stdin=subprocess.DEVNULL)
    (ssh_dir / "authorized_keys").write_text((ssh_dir / "client_ed25519.pub").read_text())
    # Paths are the guest's: the init script copies these files to /run/khovm-ssh (a tmpfs).
    (ssh_dir / "sshd_config").write_text(
        "Port 22\nListenAddress 0.0.0.0\nHostKey /run/khovm-ssh/host_ed25519\n"
        "AuthorizedKeysFile /run/khovm-ssh/authorized_keys\nPidFile /run/khovm-ssh/sshd.pid\n"
        "PermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nPrintMotd no\nPrintLastLog no\nUseDNS no\n"
        "LogLevel VERBOSE\nSubsystem sftp internal-sftp\n")
    for f in ssh_dir.iterdir():
        f.chmod(0o600)
    return ssh_dir / "client_ed25519", ssh_dir / "known_hosts"


@contextlib.contextmanager
def serving(*, numa: Sequence[int] = (1024, 1024), append: str = "kho=on",
            kho_scratch: str | None = None, efi: bool = False, smp: int = 2,
            timeout: float | None = None, run_dir: Path | str | None = None,
            debugfs: bool = True, wait: bool = True) -> Iterator[ServedGuest]:
    """Boot the KHO kernel as a guest that serves SSH instead of running steps.

        with guest.serving(append="kho=on") as g:
            g.ssh("cat /proc/cmdline")            # root in the guest, on 127.0.0.1:g.port

    Each kernel (the cold-booted one, and every one a command over SSH kexecs into) brings up
    a virtio NIC behind QEMU's user-mode NAT, starts sshd with throwaway keys made here, and
    waits for the host; it powers off when the host leaves the `with` block (a file on the
    share) or after `timeout` seconds per kernel. Leaving the block always ends QEMU (killed
    if it does not power off in 60 s). `wait`: return once stage 1 serves SSH. Options as boot().
    """
    run_dir, out = _run_dirs(run_dir)
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    port = _free_port()
    key, known_hosts = _ssh_keys(run_dir / "ssh")
    init = run_dir / "init.sh"
    init.write_text(_serve_script(run_dir, run_dir / "ssh", int(timeout), debugfs))
    init.chmod(0o755)
    cmdline = _first_cmdline(init, append, kho_scratch)
    cmd = qemu_command(run_dir, out, numa=numa, append=cmdline, efi=efi, smp=smp, ssh_port=port)
    (run_dir / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
    t0 = time.monotonic()
    with open(run_dir / "qemu.stderr", "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                start_new_session=True)
    served = ServedGuest(run_dir=run_dir, out=out, port=port, key=key, known_hosts=known_hosts,
                         cmdline=cmdline, proc=proc, started=t0)
    try:
        if wait:
            served.wait_ready(1)
        yield served
    finally:
        (out / "poweroff").touch()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        finally:
            if proc.poll() is None:  # KeyboardInterrupt in the wait: never leave a QEMU behind
                proc.kill()
                proc.wait()
        seconds = time.monotonic() - t0
        stages = sorted(int(p.name[5:]) for p in out.glob("stage*") if p.name[5:].isdigit())
        info = {"run_dir": str(run_dir), "seconds": round(seconds, 1), "mode": "serving",
                "stages": max(stages, default=0), "qemu_rc": proc.returncode}
        (run_dir / "timing.json").write_text(json.dumps(info, indent=1) + "\n")
        log = os.environ.get("KHOTUI_VM_TIMINGS")
        if log:
            with open(log, "a") as f:
                f.write(json.dumps(info) + "\n")


def _normalize(steps) -> list[tuple[str, str]]:
    """Steps are bash command lines, or (name, command line) pairs to find them by name."""
    out = []
    for st in steps:
        if isinstance(st, str):
            out.append(("", st))
        else:
            name, cmd = st
            out.append((name, cmd))
    return out


def _collect(d: Path, stage: int, cmds) -> list[Step]:
    steps = []
    for i, (name, cmd) in enumerate(_normalize(cmds)):
        base = d / f"{i:02d}"
        if not Path(f"{base}.cmd").exists():
            break

        def rd(ext: str, base: Path = base) -> str:
            p = Path(f"{base}.{ext}")
            return p.read_text(errors="replace") if p.exists() else ""

        rc_s = rd("rc").strip()
        secs = None
        t = rd("time").split()
        if len(t) == 2:
            secs = round(float(t[1]) - float(t[0]), 2)
        steps.append(Step(stage, i, cmd, name, int(rc_s) if rc_s else None, rd("out"), rd("err"), secs))
    return steps


def _record_timing(run: GuestRun) -> None:
    """Append one line per boot to $KHOTUI_VM_TIMINGS (if set) and write timing.json."""
    info = {"run_dir": str(run.run_dir), "seconds": round(run.seconds, 1), "stages": run.nstages,
            "timed_out": run.timed_out, "qemu_rc": run.qemu_rc,
            "stage_uptime": {}}
    for s in range(1, run.nstages + 1):
        d = run.out / f"stage{s}"
        with contextlib.suppress(OSError, ValueError, IndexError):
            info["stage_uptime"][s] = [float((d / f).read_text().split()[0])
                                       for f in ("uptime-start", "uptime-end")]
    (run.run_dir / "timing.json").write_text(json.dumps(info, indent=1) + "\n")
    log = os.environ.get("KHOTUI_VM_TIMINGS")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(info) + "\n")


# ---------------------------------------------------------------------------------------------
# parsing what the guest brings back

_SEG_RE = re.compile(r"kexec_file: segment\[(\d+)\]: buf=\S+ bufsz=(0x[0-9a-f]+) "
                     r"mem=(0x[0-9a-f]+) memsz=(0x[0-9a-f]+)")


def kexec_segments(log: str) -> list[dict]:
    """The last load's `KEXEC_FILE_DEBUG` segment lines as [{index, bufsz, mem, memsz}]."""
    segs: list[dict] = []
    for line in log.splitlines():
        m = _SEG_RE.search(line)
        if not m:
            continue
        idx = int(m.group(1))
        if idx == 0:
            segs = []  # a new load starts over
        segs.append({"index": idx, "bufsz": int(m.group(2), 16), "mem": int(m.group(3), 16),
                     "memsz": int(m.group(4), 16)})
    return segs


def hex_lines(text: str) -> list[int]:
    return [int(x, 16) for x in text.split()]
