"""kexec state, sysctls, lockdown and privileges."""

from __future__ import annotations

import pytest

from khotui.host.state import parse_cap_eff, parse_lockdown, read_kexec_state
from khotui.host.sysroot import Sysroot
from tests.conftest import CAPTURES


def capture(name: str) -> Sysroot:
    root = CAPTURES / name
    if not root.is_dir():
        pytest.skip(f"{root} is missing: the real KHO captures are needed for this test")
    return Sysroot(root)


def test_before_and_after_a_load():
    before = read_kexec_state(capture("two-nodes/sysroot"))
    after = read_kexec_state(capture("two-nodes/load/sysroot"))
    assert before.loaded is False and after.loaded is True
    assert after.crash_loaded is False and after.crash_size == 0
    assert after.kexec_load_disabled is False
    assert after.kexec_load_limit_reboot == -1 and after.kexec_load_limit_panic == -1
    assert after.loads_left is None
    assert after.lockdown == "none" and after.lockdown_modes == ["none", "integrity", "confidentiality"]
    assert after.euid is None and after.cap_sys_boot is None and "snapshot" in after.privileges_reason


def test_failed_load_leaves_nothing_loaded():
    assert read_kexec_state(capture("scratch-too-small/load/sysroot")).loaded is False


def _write(root, files):
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return Sysroot(root)


def test_falls_back_to_sys_kernel_kexec(tmp_path):
    sysroot = _write(tmp_path, {"sys/kernel/kexec/loaded": "1\n",
                                "sys/kernel/kexec/crash_size": "268435456\n",
                                "proc/sys/kernel/kexec_load_disabled": "1\n",
                                "proc/sys/kernel/kexec_load_limit_reboot": "3\n",
                                "sys/kernel/security/lockdown": "none [integrity] confidentiality\n"})
    state = read_kexec_state(sysroot)
    assert state.loaded is True and state.crash_size == 256 << 20 and state.crash_loaded is None
    assert state.kexec_load_disabled is True and state.loads_left == 3
    assert state.lockdown == "integrity"


def test_no_lockdown_lsm(tmp_path):
    state = read_kexec_state(_write(tmp_path, {"proc/cmdline": "x\n"}))
    assert state.lockdown is None and "lockdown" in state.lockdown_reason
    assert state.loaded is None and state.kexec_load_limit_reboot is None


def test_garbage_sysctl_is_unknown_not_a_crash(tmp_path):
    state = read_kexec_state(_write(tmp_path, {"proc/sys/kernel/kexec_load_disabled": "what\n"}))
    assert state.kexec_load_disabled is None


def test_parse_lockdown():
    assert parse_lockdown("[none] integrity confidentiality\n") == \
        ("none", ["none", "integrity", "confidentiality"])
    assert parse_lockdown("none integrity")[0] is None


def test_parse_cap_eff():
    assert parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n") is True
    assert parse_cap_eff("CapEff:\t0000000000000000\n") is False
    assert parse_cap_eff("CapEff:\t0000000000400000\n") is True  # bit 22 only
    assert parse_cap_eff("Name: x\n") is None


def test_live_privileges():
    state = read_kexec_state(Sysroot("/"))
    import os
    assert state.euid == os.geteuid() and state.privileges_reason is None
    assert state.cap_sys_boot in (True, False)
