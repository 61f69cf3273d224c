"""Smoke test of the VM harness itself, without khotui: one guest, one KHO kexec.

Stage 1 (cold boot, kho=on, two NUMA nodes): read the scratch regions from debugfs, load the
same kernel with an 8 MiB initrd through kexec_file_load(2) with KEXEC_FILE_DEBUG (ctypes,
tests/vm/guestutil.py), see /sys/kernel/kexec_loaded go 0 -> 1, kexec.
Stage 2 (the kexec'ed kernel): KHO handed over: kho/in/fdt exists, `KHO restore succeeded`.
"""

from __future__ import annotations

import guest
import pytest

pytestmark = pytest.mark.vm

NODES = [1024, 1024]
INITRD_SIZE = 8 << 20


def test_kho_kexec_round_trip(vm_run_dir):
    initrd = guest.make_initrd(INITRD_SIZE, vm_run_dir / "initrd.img")
    stage1 = [
        ("scratch", "python3 $GUESTUTIL scratch"),
        ("loaded-before", "cat /sys/kernel/kexec_loaded"),
        ("load", f"python3 $GUESTUTIL load {guest.KERNEL} --initrd {initrd}"),
        ("loaded-after", "cat /sys/kernel/kexec_loaded"),
    ]
    stage2 = [
        # debugfs blobs stat as 0 bytes: read the file to see its length and FDT magic.
        ("kho-in", "python3 -c \"d = open('/sys/kernel/debug/kho/in/fdt', 'rb').read(); "
                   "print(len(d), d[:4].hex())\""),
        ("cmdline", "cat /proc/cmdline"),
    ]
    run = guest.run_in_guest(stage1, stage2, numa=NODES, append="kho=on", run_dir=vm_run_dir)
    print(f"boot cycle (2 kernels): {run.seconds:.1f}s; run dir {run.run_dir}")
    run.assert_steps_ok()

    # Stage 1: one scratch region per kho_scratch[] entry: lowmem, global, one per node.
    scratch = run.named("scratch").json()
    assert len(scratch) == 2 + len(NODES), scratch
    lowmem = scratch[0]
    assert lowmem["len"] > 0 and lowmem["phys"] + lowmem["len"] <= 1 << 32, scratch
    assert run.named("loaded-before").stdout.strip() == "0"
    loaded = run.named("load").json()
    assert loaded["errno"] == 0, loaded
    assert loaded["cmdline"].endswith("khostage=2"), loaded
    assert run.named("loaded-after").stdout.strip() == "1"

    # The kernel's own placement (KEXEC_FILE_DEBUG), every segment inside a scratch region:
    # the KHO scratch array, purgatory, boot params, kernel, initrd.
    segs = guest.kexec_segments(run.kmsg(1))
    assert len(segs) == 5, run.kmsg(1)[-3000:]
    assert segs[0]["bufsz"] == 16 * len(scratch)  # the scratch array: 16 bytes per region
    assert segs[-1]["bufsz"] == INITRD_SIZE
    for s in segs:
        assert any(r["phys"] <= s["mem"] and s["mem"] + s["memsz"] <= r["phys"] + r["len"]
                   for r in scratch), (s, scratch)

    # Stage 2: the new kernel received the handover.
    assert "khostage=2" in run.named("cmdline").stdout
    size, magic = run.named("kho-in").stdout.split()
    assert magic == "d00dfeed" and int(size) > 40, run.named("kho-in").describe()
    log2 = run.kmsg(2)
    assert "KHO: found kexec handover data." in log2
    assert "KHO: exec from: 7.3.4 (count 1)" in log2
    assert "KHO restore succeeded" in log2
    assert "KHO restore succeeded" in run.serial
