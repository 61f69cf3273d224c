"""Snapshots: every reader gives the same model on the source and on the copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import CAPTURES
from khotui.errors import KhotuiError
from khotui.host.boot import read_boot
from khotui.host.iomem import read_iomem
from khotui.host.kernels import find_kernels
from khotui.host.kho import read_kho
from khotui.host.memory import read_memory_blocks, read_topology
from khotui.host.state import read_kexec_state
from khotui.host.sysroot import Sysroot
from khotui.host.system import read_system
from khotui.snapshot import MANIFEST, read_kmsg, write_snapshot


def all_sysroots() -> list[Path]:
    if not CAPTURES.is_dir():
        return []
    return sorted(p for p in CAPTURES.glob("**/sysroot") if p.is_dir())


def models(sysroot: Sysroot) -> dict:
    return {
        "boot": read_boot(sysroot).as_dict(),
        "kho": read_kho(sysroot).as_dict(),
        "iomem": read_iomem(sysroot).as_dict(),
        "topology": read_topology(sysroot).as_dict(),
        "blocks": [b.as_dict() for b in read_memory_blocks(sysroot)],
        "state": read_kexec_state(sysroot).as_dict(),
        "kernels": [k.as_dict() for k in find_kernels(sysroot)],
        "system": read_system(sysroot).as_dict(),
    }


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("root", all_sysroots(), ids=lambda p: str(p.relative_to(CAPTURES)))
def test_snapshot_of_each_capture_reads_the_same(root, tmp_path):
    out = tmp_path / "snap"
    skipped = write_snapshot(Sysroot(root), out)
    assert skipped == []
    assert models(Sysroot(out)) == models(Sysroot(root))
    # the layout is the capture's: every file the captures hold is copied byte for byte
    source, copy = _tree(root), _tree(out)
    copy.pop(MANIFEST)
    assert copy == source


def test_snapshot_of_a_snapshot_copies_dmesg(tmp_path):
    src = tmp_path / "src"
    (src / "proc").mkdir(parents=True)
    (src / "proc/cmdline").write_text("kho=on\n")
    (src / "dmesg").write_text("[    0.000000] Linux version 7.3.4\n")
    write_snapshot(Sysroot(src), tmp_path / "out")
    assert (tmp_path / "out/dmesg").read_text() == "[    0.000000] Linux version 7.3.4\n"


def test_refuses_non_empty_out_dir(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out/x").write_text("")
    with pytest.raises(KhotuiError) as err:
        write_snapshot(Sysroot(tmp_path / "src"), tmp_path / "out")
    assert "not empty" in err.value.message and err.value.fix


def test_refuses_out_dir_inside_source(tmp_path):
    (tmp_path / "proc").mkdir()
    with pytest.raises(KhotuiError) as err:
        write_snapshot(Sysroot(tmp_path), tmp_path / "proc/snap")
    assert "source" in err.value.message


def test_never_writes_under_the_source(tmp_path):
    root = next(iter(all_sysroots()), None)
    if root is None:
        pytest.skip("no captures")
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    write_snapshot(Sysroot(root), tmp_path / "snap")
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def test_unreadable_files_are_skipped_with_reason(tmp_path, monkeypatch):
    src = tmp_path / "src"
    (src / "proc").mkdir(parents=True)
    (src / "proc/cmdline").write_text("kho=on\n")
    (src / "proc/iomem").write_text("00000000-00000fff : Reserved\n")
    real = Sysroot.read_bytes

    def read_bytes(self, host_path, **kw):
        if host_path == "/proc/iomem":
            from khotui.errors import explain_os_error
            raise explain_os_error(PermissionError(13, "Permission denied"), host_path)
        return real(self, host_path, **kw)

    if os.geteuid() != 0:
        (src / "proc/iomem").chmod(0)
    else:  # root reads through chmod 000
        monkeypatch.setattr(Sysroot, "read_bytes", read_bytes)
    skipped = write_snapshot(Sysroot(src), tmp_path / "out")
    (src / "proc/iomem").chmod(0o644)
    assert len(skipped) == 1 and skipped[0].startswith("/proc/iomem:") and "permission" in skipped[0]
    assert (tmp_path / "out/proc/cmdline").exists() and not (tmp_path / "out/proc/iomem").exists()
    assert "/proc/iomem" in (tmp_path / "out" / MANIFEST).read_text()


def test_links_are_recorded_as_their_target(tmp_path):
    src = tmp_path / "src"
    mem = src / "sys/devices/system/memory/memory3"
    node = src / "sys/devices/system/node/node1"
    mem.mkdir(parents=True)
    node.mkdir(parents=True)
    (mem / "state").write_text("online\n")
    (mem / "node1").symlink_to("../../node/node1")
    (node / "memory3").symlink_to("../../memory/memory3")
    (src / "sys/devices/system/memory/block_size_bytes").write_text("8000000\n")
    write_snapshot(Sysroot(src), tmp_path / "out")
    out = tmp_path / "out/sys/devices/system"
    assert (out / "memory/memory3/node1").read_text() == "../../node/node1"
    assert (out / "node/node1/memory3").read_text() == "../../memory/memory3"
    assert read_topology(Sysroot(tmp_path / "out")).as_dict() == read_topology(Sysroot(src)).as_dict()
    assert [b.as_dict() for b in read_memory_blocks(Sysroot(tmp_path / "out"))] == \
        [b.as_dict() for b in read_memory_blocks(Sysroot(src))]


@pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="/dev/kmsg is not readable here")
def test_read_kmsg_does_not_block():
    text = read_kmsg()
    assert text == "" or text.startswith("[")


@pytest.mark.skipif(os.geteuid() != 0, reason="a live snapshot needs root to read what matters")
def test_live_snapshot_reads_like_the_host(tmp_path):
    out = tmp_path / "live"
    write_snapshot(Sysroot("/"), out)
    snap = Sysroot(out)
    live = Sysroot("/")
    assert read_topology(snap).as_dict() == read_topology(live).as_dict()
    assert read_iomem(snap).as_dict() == read_iomem(live).as_dict()
    assert read_kho(snap).as_dict() == read_kho(live).as_dict()
    assert [b.as_dict() for b in read_memory_blocks(snap)] == [b.as_dict() for b in read_memory_blocks(live)]
    boot_snap, boot_live = read_boot(snap).as_dict(), read_boot(live).as_dict()
    boot_snap.pop("meminfo"), boot_live.pop("meminfo")  # changes by the second
    assert boot_snap == boot_live
    assert (out / "dmesg").exists()
