"""KHO debugfs reading: the real captures first, then synthetic trees for what they lack."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from khotui.errors import KhotuiError, explain_os_error
from khotui.host import kho as kho_mod
from khotui.host.kho import (
    LAYOUT_LEGACY,
    LAYOUT_STATELESS,
    OFF_CMDLINE,
    OFF_DEBUGFS_OFF,
    OFF_DEFAULT,
    OFF_NOT_BUILT,
    OFF_SCRATCH_FAILED,
    OFF_UNKNOWN,
    UNREAD_DEBUGFS_NOT_MOUNTED,
    UNREAD_NO_DEBUGFS_CONFIG,
    UNREAD_PERMISSION,
    UNREAD_UNKNOWN_LAYOUT,
    read_kho,
)
from khotui.host.sysroot import Sysroot
from tests.conftest import CAPTURES


def all_sysroots() -> list[Path]:
    if not CAPTURES.is_dir():
        return []
    return sorted(p for p in CAPTURES.glob("**/sysroot") if p.is_dir())


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for host, content in files.items():
        path = root / host.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def capture(name: str) -> Sysroot:
    root = CAPTURES / name
    if not root.is_dir():
        pytest.skip(f"{root} is missing: the real KHO captures are needed for this test")
    return Sysroot(root)


# --- the captures ---------------------------------------------------------------------------

@pytest.mark.parametrize("root", all_sysroots(), ids=lambda p: str(p.relative_to(CAPTURES)))
def test_every_capture_reads_and_is_json_ready(root):
    import json
    state = read_kho(Sysroot(root))
    json.dumps(state.as_dict())
    if "kho-off" in str(root):
        assert not state.enabled
    else:
        assert state.enabled and state.layout == LAYOUT_STATELESS and state.finalized is None
        kinds = [s.kind for s in state.scratch]
        assert kinds[:2] == ["lowmem", "global"] and set(kinds[2:]) == {"node"}
        assert [s.index for s in state.scratch] == list(range(len(state.scratch)))
        assert state.scratch_notes == []


def test_two_nodes_scratch_and_blobs():
    state = read_kho(capture("two-nodes/sysroot"))
    got = [(s.index, s.kind, s.node, s.addr, s.size) for s in state.scratch]
    assert got == [
        (0, "lowmem", None, 0x76C00000, 0x8000000),
        (1, "global", None, 0x7EC00000, 0),          # global may be empty
        (2, "node", 0, 0x3C800000, 0x2400000),
        (3, "node", 1, 0x71000000, 0x5C00000),
    ]
    assert len(state.out_fdt) == 233                  # the debugfs blob kept its boot-time size
    assert state.out_fdt[:4] == bytes.fromhex("d00dfeed")
    assert int.from_bytes(state.out_fdt[4:8], "big") == 293
    assert sorted(state.out_sub_fdts) == ["kexec-metadata", "kho_test"]
    assert len(state.out_sub_fdts["kexec-metadata"]) == 73
    assert state.in_fdt is None and state.in_sub_fdts == {}
    assert not state.kho_booted
    assert state.out_fdt_path == "/sys/kernel/debug/kho/out/fdt"


def test_next_kernel_has_in_fdt_and_no_out_fdt():
    state = read_kho(capture("two-nodes/next-kernel/sysroot"))
    assert state.enabled
    assert state.out_fdt is None and state.out_fdt_path is None
    assert len(state.in_fdt) == 293 and state.in_fdt_path == "/sys/kernel/debug/kho/in/fdt"
    assert sorted(state.in_sub_fdts) == ["kexec-metadata", "kho_test"]
    assert state.kho_booted
    # the inherited scratch regions are those of the previous kernel
    before = read_kho(capture("two-nodes/sysroot"))
    assert [s.as_dict() for s in state.scratch] == [s.as_dict() for s in before.scratch]


def test_one_node_has_three_regions():
    state = read_kho(capture("one-node-no-initrd/sysroot"))
    assert [(s.kind, s.node) for s in state.scratch] == [("lowmem", None), ("global", None), ("node", 0)]


def test_arm64_next_kernel_chosen_properties():
    state = read_kho(capture("two-nodes-arm64/next-kernel/sysroot"))
    assert state.dt_kho_fdt == (0x41FC7000, 0x1000)           # PAGE_SIZE
    assert state.dt_kho_scratch == (0xBC7F0000, 0x40)         # 16 x 4 regions
    assert state.kho_booted


def test_kho_off_capture_says_cmdline():
    state = read_kho(capture("kho-off/sysroot"))
    assert not state.enabled
    assert state.off_reason == OFF_CMDLINE
    assert "kho=off" in state.off_message and "command line" in state.off_message
    assert "kho=on" in state.fix
    assert state.kernel_enabled is False
    assert state.scratch == [] and state.out_fdt is None


# --- synthetic trees ------------------------------------------------------------------------

BASE = {
    "/proc/cmdline": "console=ttyS0 kho=on\n",
    "/proc/sys/kernel/osrelease": "6.18.0\n",
    "/sys/devices/system/node/has_memory": "0-1\n",
    "/sys/kernel/debug/kho/out/scratch_phys": "0x7c000000\n0x17c000000\n0x3c000000\n0x13c000000\n",
    "/sys/kernel/debug/kho/out/scratch_len": "0x4000000\n0x1000000\n0x800000\n0x800000\n",
}


@pytest.mark.parametrize("value,finalized", [("0\n", False), ("1\n", True)])
def test_legacy_layout_with_finalize(tmp_path, value, finalized):
    root = write(tmp_path, {**BASE, "/sys/kernel/debug/kho/out/finalize": value})
    state = read_kho(Sysroot(root))
    assert state.layout == LAYOUT_LEGACY and state.finalized is finalized
    assert [s.node for s in state.scratch] == [None, None, 0, 1]
    assert state.out_fdt is None  # 6.16: no out/fdt before finalize


def test_finalize_garbage(tmp_path):
    root = write(tmp_path, {**BASE, "/sys/kernel/debug/kho/out/finalize": "yes\n"})
    with pytest.raises(KhotuiError) as err:
        read_kho(Sysroot(root))
    assert "finalize" in err.value.path and err.value.fix


def test_mismatched_scratch_line_counts(tmp_path):
    root = write(tmp_path, {**BASE, "/sys/kernel/debug/kho/out/scratch_len": "0x4000000\n0x0\n"})
    with pytest.raises(KhotuiError) as err:
        read_kho(Sysroot(root))
    assert err.value.path.endswith("scratch_len") and err.value.fix
    assert "2 lines" in err.value.message and "4" in err.value.message


def test_non_hex_scratch(tmp_path):
    root = write(tmp_path, {**BASE, "/sys/kernel/debug/kho/out/scratch_phys":
                            "0x7c000000\nbanana\n0x1\n0x2\n"})
    with pytest.raises(KhotuiError) as err:
        read_kho(Sysroot(root))
    assert err.value.path.endswith("scratch_phys") and "line 2" in err.value.message


def test_missing_companion_scratch_file(tmp_path):
    files = dict(BASE)
    del files["/sys/kernel/debug/kho/out/scratch_len"]
    with pytest.raises(KhotuiError) as err:
        read_kho(Sysroot(write(tmp_path, files)))
    assert err.value.path.endswith("scratch_len")


def test_node_count_mismatch_is_a_note_not_an_error(tmp_path):
    root = write(tmp_path, {**BASE, "/sys/devices/system/node/has_memory": "0\n"})
    state = read_kho(Sysroot(root))
    assert [s.node for s in state.scratch] == [None, None, None, None]
    assert any("node ids left unknown" in n for n in state.scratch_notes)


def test_node_ids_follow_n_memory_order_with_gaps(tmp_path):
    root = write(tmp_path, {**BASE, "/sys/devices/system/node/has_memory": "1,3\n"})
    assert [s.node for s in read_kho(Sysroot(root)).scratch] == [None, None, 1, 3]


def test_node_ids_from_node_dirs_without_has_memory(tmp_path):
    files = {k: v for k, v in BASE.items() if "has_memory" not in k}
    files.update({"/sys/devices/system/node/node0/memory0": "",
                  "/sys/devices/system/node/node1/cpulist": "0\n",
                  "/sys/devices/system/node/node2/memory8": ""})
    # node1 has no memory blocks: it is not in N_MEMORY
    assert [s.node for s in read_kho(Sysroot(write(tmp_path, files))).scratch] == [None, None, 0, 2]


def test_in_blobs_are_read(tmp_path):
    root = write(tmp_path, {**BASE, "/sys/kernel/debug/kho/in/fdt": b"\xd0\x0d\xfe\xed" + b"\0" * 60,
                            "/sys/kernel/debug/kho/in/sub_fdts/LUO": b"x" * 32})
    state = read_kho(Sysroot(root))
    assert len(state.in_fdt) == 64 and state.in_sub_fdts == {"LUO": b"x" * 32}
    assert state.kho_booted


def test_x86_setup_data_evidence(tmp_path):
    root = write(tmp_path, {**BASE, "/sys/kernel/boot_params/setup_data/0/type": "0x9\n",
                            "/sys/kernel/boot_params/setup_data/1/type": "0xa\n",
                            "/sys/kernel/boot_params/setup_data/1/data": b"\0" * 32})
    state = read_kho(Sysroot(root))
    assert [(s.index, s.type, s.data_size) for s in state.setup_data] == [(0, 9, None), (1, 0xA, 32)]
    assert state.kho_booted


def test_setup_data_garbage(tmp_path):
    root = write(tmp_path, {**BASE, "/sys/kernel/boot_params/setup_data/0/type": "ten\n"})
    with pytest.raises(KhotuiError) as err:
        read_kho(Sysroot(root))
    assert err.value.path.endswith("setup_data/0/type")


def test_short_chosen_property(tmp_path):
    root = write(tmp_path, {**BASE, "/sys/firmware/devicetree/base/chosen/linux,kho-fdt": b"\0" * 8})
    with pytest.raises(KhotuiError) as err:
        read_kho(Sysroot(root))
    assert "linux,kho-fdt" in err.value.path


# --- why KHO is off --------------------------------------------------------------------------

def _config(tmp_path: Path, lines: list[str]) -> None:
    write(tmp_path, {"/boot/config-6.18.0": "\n".join(lines) + "\n"})


FULL = ["CONFIG_KEXEC_HANDOVER=y", "CONFIG_KEXEC_HANDOVER_DEBUG=y", "CONFIG_KEXEC_HANDOVER_DEBUGFS=y",
        "CONFIG_DEBUG_FS=y", "# CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT is not set"]


def _off(tmp_path, cmdline, config, **extra):
    write(tmp_path, {"/proc/cmdline": cmdline + "\n", "/proc/sys/kernel/osrelease": "6.18.0\n", **extra})
    if config is not None:
        _config(tmp_path, config)
    state = read_kho(Sysroot(tmp_path))
    assert not state.enabled and state.fix and state.off_message
    return state


def test_off_no_kho_on_and_default_off(tmp_path):
    state = _off(tmp_path, "console=ttyS0", FULL)
    assert state.off_reason == OFF_DEFAULT
    assert "no kho=on" in state.off_message and "ENABLE_DEFAULT" in state.off_message


def test_off_default_on_but_kho_off(tmp_path):
    state = _off(tmp_path, "kho=on quiet kho=0", [*FULL[:-1], "CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT=y"])
    assert state.off_reason == OFF_CMDLINE  # the last kho= wins


def test_kho_after_double_dash_is_for_init(tmp_path):
    state = _off(tmp_path, "quiet -- kho=on", FULL)
    assert state.off_reason == OFF_DEFAULT


def test_off_not_built(tmp_path):
    state = _off(tmp_path, "kho=on", ["CONFIG_DEBUG_FS=y", "# CONFIG_KEXEC_HANDOVER is not set"])
    assert state.off_reason == OFF_NOT_BUILT and "/boot/config-6.18.0" in state.off_message


def _on_unread(tmp_path, cmdline, config):
    """KHO on by command line and build, but no kho/ to read: enabled, scratch unknown, a fix."""
    write(tmp_path, {"/proc/cmdline": cmdline + "\n", "/proc/sys/kernel/osrelease": "6.18.0\n"})
    if config is not None:
        _config(tmp_path, config)
    state = read_kho(Sysroot(tmp_path))
    assert state.enabled and not state.scratch_known and state.scratch == []
    assert state.scratch_message and state.scratch_fix and state.off_reason is None
    return state


def test_kho_on_without_kho_debugfs_config(tmp_path):
    state = _on_unread(tmp_path, "kho=on", ["CONFIG_KEXEC_HANDOVER=y", "CONFIG_KEXEC_HANDOVER_DEBUG=y",
                                            "CONFIG_DEBUG_FS=y"])
    assert state.scratch_reason == UNREAD_NO_DEBUGFS_CONFIG
    assert "cannot read the scratch regions on this build" in state.scratch_message
    assert "CONFIG_KEXEC_HANDOVER_DEBUGFS=y" in state.scratch_fix and "--force" in state.scratch_fix


def test_kho_on_without_debugfs_at_all(tmp_path):
    state = _on_unread(tmp_path, "kho=on", ["CONFIG_KEXEC_HANDOVER=y"])
    assert state.scratch_reason == UNREAD_NO_DEBUGFS_CONFIG and "CONFIG_DEBUG_FS" in state.scratch_message


def test_kho_on_debugfs_missing_in_snapshot(tmp_path):
    state = _on_unread(tmp_path, "kho=on", FULL)
    assert state.scratch_reason == UNREAD_DEBUGFS_NOT_MOUNTED and "mount -t debugfs" in state.scratch_fix


def test_kho_on_debugfs_empty_in_snapshot(tmp_path):
    (tmp_path / "sys/kernel/debug").mkdir(parents=True)
    state = _on_unread(tmp_path, "kho=on", FULL)
    assert state.scratch_reason == UNREAD_DEBUGFS_NOT_MOUNTED


def test_kho_on_debugfs_not_mounted_live(tmp_path, monkeypatch):
    # a live host whose /sys/kernel/debug is an empty mount point
    write(tmp_path, {"/proc/cmdline": "kho=on\n", "/proc/sys/kernel/osrelease": "6.18.0\n"})
    _config(tmp_path, FULL)
    (tmp_path / "sys/kernel/debug").mkdir(parents=True)
    monkeypatch.setattr(Sysroot, "is_live", property(lambda self: True))
    state = read_kho(Sysroot(tmp_path))
    assert state.enabled and state.scratch_reason == UNREAD_DEBUGFS_NOT_MOUNTED
    assert "not mounted" in state.scratch_message
    assert state.scratch_fix == "mount -t debugfs none /sys/kernel/debug"


@pytest.mark.parametrize("mounted", [True, False])
def test_live_debugfs_mount_is_read_from_proc_mounts(tmp_path, monkeypatch, mounted):
    """Live: /proc/self/mounts says whether debugfs is mounted. Mounted without kho/ means
    kho_init() turned KHO off; not mounted means KHO is on and the fix is the mount."""
    line = "debugfs /sys/kernel/debug debugfs rw,relatime 0 0\n" if mounted else ""
    write(tmp_path, {"/proc/cmdline": "kho=on\n", "/proc/sys/kernel/osrelease": "6.18.0\n",
                     "/proc/self/mounts": "proc /proc proc rw 0 0\n" + line,
                     "/sys/kernel/debug/tracing/x": "1\n"})
    _config(tmp_path, FULL)
    monkeypatch.setattr(Sysroot, "is_live", property(lambda self: True))
    monkeypatch.setattr(kho_mod, "read_kernel_log", lambda sysroot: None)
    state = read_kho(Sysroot(tmp_path))
    if mounted:
        assert not state.enabled and state.off_reason == OFF_UNKNOWN
    else:
        assert state.enabled and state.scratch_reason == UNREAD_DEBUGFS_NOT_MOUNTED


def test_kho_on_debugfs_mounted_without_kho_dir_means_kho_init_failed(tmp_path):
    # debugfs is there (other subsystems' files) and kho/ is not: kho_init() turned KHO off
    write(tmp_path, {"/sys/kernel/debug/block/x": "1\n"})
    state = _off(tmp_path, "kho=on", FULL)
    assert state.off_reason == OFF_UNKNOWN and "kho_init()" in state.off_message


def test_scratch_reservation_failure_in_the_log_turns_kho_off(tmp_path):
    # kho_reserve_scratch() logs this and sets kho_enable = false (kexec_handover.c)
    log = ("[    0.000000] KHO: Failed to reserve lowmem scratch buffer\n"
           "[    0.000000] KHO: Failed to reserve scratch area, disabling kexec handover\n")
    state = _off(tmp_path, "kho=on kho_scratch=8G,1G,1G", FULL, **{"/dmesg": log})
    assert state.off_reason == OFF_SCRATCH_FAILED
    assert "lowmem scratch buffer" in state.off_message and "kho_bootmem=" in state.fix


def test_off_permission_denied(tmp_path, monkeypatch):
    write(tmp_path, {"/proc/cmdline": "kho=on\n", "/sys/kernel/debug/kho/out/scratch_phys": "0x1\n"})
    real_listdir = Sysroot.listdir

    def denied(self, host_path):
        if host_path.startswith("/sys/kernel/debug"):
            # what Sysroot.listdir raises for a non-root reader of the 0700 debugfs
            raise explain_os_error(PermissionError(13, "Permission denied"), host_path, what="directory")
        return real_listdir(self, host_path)

    if os.geteuid() != 0:
        (tmp_path / "sys/kernel/debug").chmod(0o000)
    else:  # root reads through chmod 000: simulate what a non-root reader meets
        monkeypatch.setattr(Sysroot, "listdir", denied)
    try:
        state = read_kho(Sysroot(tmp_path))
    finally:
        (tmp_path / "sys/kernel/debug").chmod(0o755)
    # kho=on and no config saying otherwise: KHO is on, its regions are what cannot be read
    assert state.enabled and state.scratch_reason == UNREAD_PERMISSION and "root" in state.scratch_fix


@pytest.mark.parametrize("param", ["debugfs=off", "debugfs=no-mount", "debugfs=on debugfs=off"])
def test_debugfs_off_turns_kho_off(tmp_path, param):
    """kho_init() -> kho_debugfs_init() fails when debugfs is off (debugfs_start_creating(),
    fs/debugfs/inode.c: -EPERM) and kho_init() sets kho_enable = false: KHO is off, and the fix is
    a reboot, not a mount. `no-mount` is an alias of `off` in 7.3 (debugfs_kernel())."""
    state = _off(tmp_path, f"kho=on {param}", FULL)
    assert state.off_reason == OFF_DEBUGFS_OFF and "debugfs=" in state.off_message
    assert "reboot without debugfs=off" in state.fix and "mount -t" not in state.fix


def test_debugfs_off_then_on_leaves_kho_on(tmp_path):
    state = _on_unread(tmp_path, "kho=on debugfs=off debugfs=on", FULL)   # the last one wins
    assert state.scratch_reason == UNREAD_DEBUGFS_NOT_MOUNTED


def test_debugfs_allow_none_config_turns_kho_off(tmp_path):
    state = _off(tmp_path, "kho=on", [*FULL, "CONFIG_DEBUG_FS_ALLOW_NONE=y"])
    assert state.off_reason == OFF_DEBUGFS_OFF and "CONFIG_DEBUG_FS_ALLOW_NONE" in state.off_message


def test_debugfs_off_without_kho_debugfs_leaves_kho_on(tmp_path):
    # without CONFIG_KEXEC_HANDOVER_DEBUGFS kho_debugfs_init() is a stub returning 0
    state = _on_unread(tmp_path, "kho=on debugfs=off", ["CONFIG_KEXEC_HANDOVER=y",
                                                         "CONFIG_KEXEC_HANDOVER_DEBUG=y",
                                                         "CONFIG_DEBUG_FS=y"])
    assert state.scratch_reason == UNREAD_NO_DEBUGFS_CONFIG


def test_invalid_kho_value_leaves_the_earlier_one(tmp_path):
    # kstrtobool() rejects "maybe" and kho_parse_enable() leaves kho_enable as it was
    state = _on_unread(tmp_path, "kho=on kho=maybe", FULL)
    assert state.evidence and any("kho=" in e for e in state.evidence)


@pytest.mark.parametrize("files", [
    {"/sys/kernel/debug/kho/out/bootmem_phys": "0x1000\n", "/sys/kernel/debug/kho/out/fdt": b"x"},
    {"/sys/kernel/debug/kho/outgoing/scratch_phys": "0x1000\n"},
])
def test_unknown_debugfs_layout_is_refused_by_name(tmp_path, files):
    write(tmp_path, {"/proc/cmdline": "kho=on\n", **files})
    state = read_kho(Sysroot(tmp_path))
    assert state.enabled and state.scratch == [] and state.scratch_reason == UNREAD_UNKNOWN_LAYOUT
    assert state.scratch_message.startswith("unknown KHO debugfs layout: files ")
    assert "khotui knows 6.16–7.3" in state.scratch_message
    name = next(iter(files)).removeprefix("/sys/kernel/debug/kho/")
    assert name in state.scratch_message


def test_extra_files_beside_the_known_ones_are_a_note(tmp_path):
    write(tmp_path, {**BASE, "/sys/kernel/debug/kho/out/bootmem_phys": "0x1\n"})
    state = read_kho(Sysroot(tmp_path))
    assert state.scratch_known and any("out/bootmem_phys" in n for n in state.scratch_notes)


def test_unreadable_blob_is_a_khotui_error(tmp_path, monkeypatch):
    root = write(tmp_path, {**BASE, "/sys/kernel/debug/kho/out/fdt": b"\xd0\x0d\xfe\xed"})
    monkeypatch.setattr(kho_mod, "MAX_BLOB_BYTES", 2)
    with pytest.raises(KhotuiError) as err:
        read_kho(Sysroot(root))
    assert err.value.path.endswith("out/fdt")



@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0x123abcfgX\n -", max_size=60))
def test_any_scratch_text_parses_or_raises_khotui_error(text):
    try:
        values = kho_mod.parse_scratch_lines(text, path="/sys/kernel/debug/kho/out/scratch_phys")
    except KhotuiError as err:
        assert err.path.endswith("scratch_phys") and err.fix
    else:
        assert all(v >= 0 for v in values)
