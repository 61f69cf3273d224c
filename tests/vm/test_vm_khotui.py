"""khotui inside a real KHO guest, run as an operator would (issue #3).

Three QEMU runs, steps grouped per boot (each boot costs 30-90 s of software emulation):

  handover (kho=on, 2 NUMA nodes of 1 GiB, 8 MiB initrd), two kernels:
    stage 1: status --json vs debugfs; snapshot + status --root vs live; plan --json;
             load --yes --json; /sys/kernel/kexec_loaded 0 -> 1; kexec
    stage 2: status --json shows the incoming handover (kho/in); `KHO restore succeeded`
  scratch-too-small (kho_scratch=48M,8M,8M, 64 MiB initrd): plan exits 1 naming
    EADDRNOTAVAIL and the segment; load --yes fails the same way; kexec_loaded stays 0
  kho-off (kho=off, 1 node): status --json says KHO is off and why

Each test skips (with the reason) while `python -m khotui <cmd> --help` fails in the host venv,
so the file turns itself on as the CLI lands. Once the commands exist, a guest or khotui that
misbehaves is a failure.

The JSON these tests read is small and kept in the accessors below (one place to adjust):
  status: {"kho": {"enabled": bool, "abi": "kho-v4", "off_reason": str (when off),
                   "scratch": [{"addr": N, "size": N}, ...]  (kho_scratch[] order),
                   "incoming": bool                          (kho/in on a KHO boot)}, ...}
  plan: {"segments": [{"mem": N, "memsz": N, "bufsz": N}, ...], ...}  (predicted, segment order)
  load: the plan plus {"load": {"ok", "errno", "actual": [...], "matches_prediction"}}
Numbers may be ints or "0x..." strings; `addr`/`size` are accepted for `phys`/`len`.
"""

from __future__ import annotations

import json
from pathlib import Path

import guest
import pytest
from guest import ok_step, require_khotui

pytestmark = pytest.mark.vm

KHOTUI = guest.KHOTUI_CLI  # "python -m khotui" (KHOTUI_VM_CLI overrides, for harness work)
INITRD_SIZE = 8 << 20
SMALL_SCRATCH = "48M,8M,8M"
BIG_INITRD_SIZE = 64 << 20
KHO = "/sys/kernel/debug/kho"
# Keys that may legitimately differ between a live read and a read of its snapshot.
VOLATILE = {"root", "source", "snapshot", "time", "timestamp", "generated", "generated_at",
            "live", "host", "hostname"}


def have(cmd: str) -> bool:
    return guest.khotui_command_missing(cmd) is None


# ---------------------------------------------------------------------------------------------
# accessors for khotui's JSON (the contract these tests assume, see the module docstring)


def num(v) -> int:
    if isinstance(v, bool):
        raise TypeError(v)
    return v if isinstance(v, int) else int(str(v), 0)


def kho_of(status: dict) -> dict:
    k = status.get("kho")
    assert isinstance(k, dict), f"status JSON has no `kho` object: {json.dumps(status)[:1500]}"
    return k


def scratch_of(status: dict) -> list[tuple[int, int]]:
    regs = kho_of(status).get("scratch")
    assert isinstance(regs, list), f"status JSON has no kho.scratch list: {kho_of(status)}"
    out = []
    for r in regs:
        phys = r.get("phys", r.get("addr"))
        length = r.get("len", r.get("size"))
        out.append((num(phys), num(length)))
    return out


def incoming_of(status: dict):
    k = kho_of(status)
    return k.get("incoming", k.get("in"))


def segments_of(doc: dict) -> list[tuple[int, int, int]]:
    segs = doc.get("segments")
    assert isinstance(segs, list) and segs, f"no `segments` list in {json.dumps(doc)[:1500]}"
    return [(num(s["mem"]), num(s["memsz"]), num(s["bufsz"])) for s in segs]


def strip_volatile(v):
    if isinstance(v, dict):
        return {k: strip_volatile(x) for k, x in v.items() if k not in VOLATILE}
    if isinstance(v, list):
        return [strip_volatile(x) for x in v]
    return v


def text(step: guest.Step) -> str:
    return step.stdout + "\n" + step.stderr


# ---------------------------------------------------------------------------------------------
# the three boots (module scope: booted once, on first use, only with the steps that can run)


def load_args(initrd: Path) -> str:
    return f'--kernel {guest.KERNEL} --initrd {initrd} --cmdline "$KHO_NEXT_CMDLINE"'


@pytest.fixture(scope="module")
def handover(vm_dirs) -> guest.GuestRun:
    if not (have("status") or (have("plan") and have("load"))):
        pytest.skip("neither `khotui status` nor `khotui plan`+`load` exist yet: nothing to boot for")
    d = vm_dirs("khotui-handover")
    initrd = guest.make_initrd(INITRD_SIZE, d / "initrd.img")
    s1 = [("debugfs-scratch", "python3 $GUESTUTIL scratch"),
          ("loaded-before", "cat /sys/kernel/kexec_loaded")]
    if have("status"):
        s1.append(("status-live", f"{KHOTUI} status --json"))
        if have("snapshot"):
            s1 += [("snapshot", f"{KHOTUI} snapshot /var/tmp/snap && "
                                "python3 $GUESTUTIL copytree /var/tmp/snap /mnt/snapshot"),
                   ("status-snap", f"{KHOTUI} status --root /var/tmp/snap --json")]
    if have("plan"):
        s1.append(("plan", f"{KHOTUI} plan {load_args(initrd)} --json"))
    if have("load"):
        # the guest's root is read-only: the receipt and the audit log go to /var/tmp (the
        # receipt in a directory khotui makes 0700: /var/tmp itself is 1777, which it refuses)
        s1.append(("load", f"{KHOTUI} load --yes {load_args(initrd)} --json "
                           "--receipt /var/tmp/khotui/receipt.json --log /var/tmp/khotui.log"))
    else:  # still reach stage 2, so `status` can be checked on a KHO boot
        s1.append(("guestutil-load", f"python3 $GUESTUTIL load {guest.KERNEL} --initrd {initrd}"))
    s1.append(("loaded-after", "cat /sys/kernel/kexec_loaded"))
    s2 = [("kho-in", f"ls {KHO}/in")]
    if have("status"):
        s2.append(("status-in", f"{KHOTUI} status --json"))
    run = guest.boot([s1, s2], numa=[1024, 1024], append="kho=on", run_dir=d)
    print(f"\nhandover boot cycle (2 kernels): {run.seconds:.1f}s")
    return run


@pytest.fixture(scope="module")
def scratch_too_small(vm_dirs) -> guest.GuestRun:
    if not (have("plan") or have("load")):
        pytest.skip("neither `khotui plan` nor `khotui load` exist yet: nothing to boot for")
    d = vm_dirs("khotui-scratch-too-small")
    initrd = guest.make_initrd(BIG_INITRD_SIZE, d / "initrd.img")
    steps = [("debugfs-scratch", "python3 $GUESTUTIL scratch")]
    if have("plan"):
        steps.append(("plan", f"{KHOTUI} plan {load_args(initrd)} --json"))
    if have("load"):
        steps.append(("load", f"{KHOTUI} load --yes {load_args(initrd)} --json "
                              "--receipt /var/tmp/khotui/receipt.json"))
        # past the refusal, so the kernel's own errno and khotui's explanation of it are tested
        steps.append(("load-forced", f"{KHOTUI} load --yes --force {load_args(initrd)} --json "
                                     "--receipt /var/tmp/khotui/receipt.json "
                                     "--log /var/tmp/khotui.log"))
    steps.append(("loaded-after", "cat /sys/kernel/kexec_loaded"))
    run = guest.boot([steps], numa=[1024, 1024], append="kho=on", kho_scratch=SMALL_SCRATCH,
                     run_dir=d)
    print(f"\nscratch-too-small boot: {run.seconds:.1f}s")
    return run


@pytest.fixture(scope="module")
def kho_off(vm_dirs) -> guest.GuestRun:
    if not have("status"):
        pytest.skip(guest.khotui_command_missing("status"))
    d = vm_dirs("khotui-kho-off")
    steps = [("kho-dir", f"test ! -e {KHO} && echo absent"),
             ("status", f"{KHOTUI} status --json")]
    run = guest.boot([steps], numa=[1024], append="kho=off", run_dir=d)
    print(f"\nkho-off boot: {run.seconds:.1f}s")
    return run


# ---------------------------------------------------------------------------------------------
# handover boot, stage 1


def test_status_live_matches_debugfs(request):
    require_khotui("status")
    run = request.getfixturevalue("handover")
    run.assert_stage(1)
    debugfs = [(r["phys"], r["len"]) for r in ok_step(run, "debugfs-scratch").json()]
    status = ok_step(run, "status-live").json()
    k = kho_of(status)
    assert k.get("enabled") is True, k
    assert k.get("abi") == "kho-v4", k
    assert scratch_of(status) == debugfs, (scratch_of(status), debugfs)
    assert not incoming_of(status), "a cold boot has no incoming handover"


def test_snapshot_reads_like_live(request):
    require_khotui("status", "snapshot")
    run = request.getfixturevalue("handover")
    run.assert_stage(1)
    ok_step(run, "snapshot")
    snap = run.file("snapshot")
    assert (snap / "sys/kernel/debug/kho/out/scratch_phys").is_file(), \
        f"snapshot has no KHO debugfs: {sorted(p.name for p in snap.iterdir())}"
    live = ok_step(run, "status-live").json()
    from_snap = ok_step(run, "status-snap").json()
    # privileges are a property of the process reading the live host, not of the host's state
    for doc in (live, from_snap):
        doc["checks"] = [c for c in doc["checks"] if c["id"] != "privileges"]
    assert strip_volatile(from_snap) == strip_volatile(live)


def test_plan_then_load_places_as_predicted(request):
    require_khotui("plan", "load")
    run = request.getfixturevalue("handover")
    run.assert_stage(1)
    assert run.named("loaded-before").stdout.strip() == "0"
    plan = ok_step(run, "plan")
    load = ok_step(run, "load")
    assert run.named("loaded-after").stdout.strip() == "1", "kexec_loaded did not become 1"
    predicted = segments_of(plan.json())
    result = load.json()["load"]
    assert result["ok"] is True and result["matches_prediction"] is True, result
    actual = segments_of({"segments": result["actual"]})
    assert actual == predicted, "placement differs from the prediction:\n" + "\n".join(
        f"  [{i}] predicted {p and tuple(map(hex, p))}  actual {a and tuple(map(hex, a))}"
        for i, (p, a) in enumerate(zip(predicted + [None] * len(actual),
                                       actual + [None] * len(predicted), strict=True))
        if p or a)
    # ... and both are what the kernel itself logged (KEXEC_FILE_DEBUG), not just each other.
    kernel = [(s["mem"], s["memsz"], s["bufsz"]) for s in guest.kexec_segments(run.kmsg(1))]
    assert actual == kernel, (actual, kernel)


# ---------------------------------------------------------------------------------------------
# handover boot, stage 2 (the kernel that stage 1 loaded and executed)


def test_new_kernel_shows_incoming_handover(request):
    require_khotui("status")
    run = request.getfixturevalue("handover")
    run.assert_completed()
    assert "fdt" in run.named("kho-in").stdout.split()
    status = ok_step(run, "status-in").json()
    assert kho_of(status).get("enabled") is True
    assert incoming_of(status), f"status does not show kho/in: {kho_of(status)}"
    log = run.kmsg(2)
    assert "KHO: exec from: 7.3.4 (count 1)" in log
    assert "KHO restore succeeded" in log


# ---------------------------------------------------------------------------------------------
# scratch too small: the initrd fits in no scratch region


def test_plan_names_eaddrnotavail_and_segment(request):
    require_khotui("plan")
    run = request.getfixturevalue("scratch_too_small")
    run.assert_completed()
    assert len(ok_step(run, "debugfs-scratch").json()) == 4
    plan = run.named("plan")
    assert plan.rc == 1, plan.describe()
    assert "EADDRNOTAVAIL" in text(plan), plan.describe()
    assert "initrd" in text(plan).lower(), plan.describe()


def test_load_refuses_with_same_explanation(request):
    require_khotui("load")
    run = request.getfixturevalue("scratch_too_small")
    run.assert_completed()
    load = run.named("load")
    assert load.rc != 0, load.describe()
    assert "EADDRNOTAVAIL" in text(load), load.describe()
    assert "initrd" in text(load).lower(), load.describe()
    forced = run.named("load-forced")
    assert forced.rc == 1, forced.describe()
    result = forced.json()["load"]
    assert result["ok"] is False and result["errno"] == "EADDRNOTAVAIL", result
    assert "initrd" in result["explanation"]["cause"], result
    assert run.named("loaded-after").stdout.strip() == "0", "a kernel got loaded anyway"


# ---------------------------------------------------------------------------------------------
# kho=off


def test_status_says_kho_off_and_why(request):
    require_khotui("status")
    run = request.getfixturevalue("kho_off")
    run.assert_completed()
    assert run.named("kho-dir").stdout.strip() == "absent"
    k = kho_of(ok_step(run, "status").json())
    assert k.get("enabled") is False, k
    reason = k.get("off_reason") or ""
    assert "kho=off" in reason, f"status should say why KHO is off (kho=off): {k}"
