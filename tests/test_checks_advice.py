"""Item 7 of issue #11: Secure Boot enforcing kexec signatures through the IMA arch policy, the
scratch advice on a host that booted through KHO, and a lowmem kho_scratch= that disables KHO;
on copies of real captures plus synthetic files."""

from __future__ import annotations

import errno
import gzip
from pathlib import Path

from khotui.load.explain import ExplainContext, explain
from khotui.plan import PlanRequest, plan_load
from khotui.plan.checks import check_lockdown, check_scratch_request
from khotui.plan.status import context_for, host_status
from tests.conftest import CAPTURES, VM
from tests.fixtures.trees import copy_tree

SB_VAR = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e0f62e5b4e8c"


def secure_boot_host(tmp: Path, *, on: bool = True, kexec_sig: bool = True) -> Path:
    root = copy_tree(CAPTURES / "efi-two-nodes" / "sysroot", tmp / "sysroot", writable=True)
    cfg = root / "proc/config.gz"
    text = gzip.decompress(cfg.read_bytes()).decode()
    text += "\nCONFIG_IMA_ARCH_POLICY=y\n" + ("CONFIG_KEXEC_SIG=y\n" if kexec_sig else "")
    if not kexec_sig:
        text = text.replace("CONFIG_KEXEC_SIG=y", "# CONFIG_KEXEC_SIG is not set")
    cfg.write_bytes(gzip.compress(text.encode()))
    var = root / SB_VAR
    var.parent.mkdir(parents=True, exist_ok=True)
    var.write_bytes(b"\x06\x00\x00\x00" + (b"\x01" if on else b"\x00"))
    return root


def test_secure_boot_with_the_arch_policy_fails_an_unsigned_kernel_even_without_lockdown(tmp_path):
    root = secure_boot_host(tmp_path)
    result = plan_load(root, PlanRequest(kernel=str(VM / "bzImage-kho-7.3.4")))
    lock = next(f for f in result.findings if f.id == "lockdown")
    assert lock.status == "fail"
    assert "Secure Boot with the IMA arch policy" in lock.message
    assert "signed" in (lock.fix or "")
    assert not result.would_succeed


def test_secure_boot_off_keeps_lockdown_none_ok(tmp_path):
    root = secure_boot_host(tmp_path, on=False)
    ctx = context_for(host_status(root))
    assert ctx.secure_boot is False
    assert check_lockdown(ctx)[0].status == "ok"


def test_secure_boot_from_the_kernel_log_when_efivars_are_absent(tmp_path):
    root = secure_boot_host(tmp_path)
    (root / SB_VAR).unlink()
    dmesg = root / "dmesg"
    dmesg.write_text((dmesg.read_text() if dmesg.exists() else "")
                     + "[    0.500000] integrity: secureboot mode enabled\n")
    assert context_for(host_status(root)).secure_boot is True


def test_an_image_whose_signature_cannot_be_told_is_a_warning(tmp_path):
    ctx = context_for(host_status(secure_boot_host(tmp_path)))
    ctx.planning, ctx.kernel_signed = True, None
    assert check_lockdown(ctx)[0].status == "warn"
    ctx.kernel_signed = True
    assert check_lockdown(ctx)[0].status == "ok"


def test_without_kexec_sig_the_arch_policy_asks_an_ima_signature(tmp_path):
    ctx = context_for(host_status(secure_boot_host(tmp_path, kexec_sig=False)))
    found = check_lockdown(ctx)[0]
    assert found.status == "warn" and "security.ima" in found.message


def test_after_a_kho_boot_the_advice_is_a_cold_boot_not_kho_scratch_on_a_kexec(tmp_path):
    booted = CAPTURES / "two-nodes" / "next-kernel" / "sysroot"
    assert context_for(host_status(booted)).kho_booted
    assert not context_for(host_status(CAPTURES / "two-nodes" / "sysroot")).kho_booted
    ex = explain(errno.EADDRNOTAVAIL, ExplainContext(kho_enabled=True, kho_booted=True,
                                                     failing_segment="initrd"))
    assert "booted through KHO" in ex.fix and "cold boot" in ex.fix
    assert "kho_scratch= on this or the next command line does nothing" in ex.fix


def test_the_plan_of_a_scratch_too_small_capture_gives_the_same_advice(tmp_path):
    cap = CAPTURES / "scratch-too-small"
    rd = tmp_path / "initrd"
    rd.write_bytes(b"070701" + b"\0" * ((64 << 20) - 6))
    result = plan_load(cap / "sysroot", PlanRequest(kernel=str(VM / "bzImage-kho-7.3.4"),
                                                    initrd=str(rd),
                                                    cmdline=(cap / "load/cmdline").read_text().strip()))
    fit = next(f for f in result.findings if f.id == "segments-fit")
    assert fit.status == "fail" and "cold boot" in (fit.fix or "")


def test_a_lowmem_scratch_that_cannot_fit_below_4g_warns(tmp_path):
    ctx = context_for(host_status(CAPTURES / "two-nodes" / "sysroot"))
    ctx.cmdline = "kho=on kho_scratch=8G,8M,8M"
    found = check_scratch_request(ctx)
    assert found and found[0].status == "warn" and "disables KHO" in found[0].message
    ctx.cmdline = "kho=on kho_scratch=48M,8M,8M"
    assert check_scratch_request(ctx) == []
