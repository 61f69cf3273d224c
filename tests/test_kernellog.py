"""Reading the kernel's own placement back from every capture's kernel log."""

from __future__ import annotations

import os
import re
import shutil
import signal

import pytest

from khotui.host.kernellog import (
    DEFAULT_PURGATORY,
    learn_purgatory,
    parse_kernel_log,
    parse_kernel_log_all,
    purgatory_from_log,
    read_kernel_log,
    read_kmsg,
)
from khotui.host.sysroot import Sysroot
from tests.conftest import CAPTURES

SEGMENT = re.compile(r"segment\[(\d+)\]: buf=\S+ bufsz=0x([0-9a-f]+) mem=0x([0-9a-f]+) "
                     r"memsz=0x([0-9a-f]+)")


def captures_with_load() -> list[str]:
    if not CAPTURES.is_dir():
        return []
    return sorted(p.name for p in CAPTURES.iterdir() if (p / "load/kernel.log").is_file())


def log_text(name: str) -> str:
    return (CAPTURES / name / "load/kernel.log").read_text()


@pytest.mark.parametrize("name", captures_with_load())
def test_every_capture_log(name):
    text = log_text(name)
    load = parse_kernel_log(text)
    assert load is not None
    # independent of the parser: the raw segment lines, in order
    raw = [tuple(int(g, 16) if i else int(g) for i, g in enumerate(m.groups()))
           for m in SEGMENT.finditer(text)]
    assert [s.as_tuple() for s in load.segments] == raw
    errno = (CAPTURES / name / "load/errno").read_text().strip()
    assert load.complete == (errno == "0")
    if load.complete:
        assert load.nr_segments == len(load.segments)
        assert load.flags & 0x8                      # KEXEC_FILE_DEBUG
        # every Loaded line names exactly one segment at that address
        for line in load.loaded.values():
            assert load.segment(line.name).mem == line.mem
    if name.endswith("-arm64"):
        assert load.arch in ("arm64", None)
    else:
        assert load.arch == "x86_64"


def test_two_nodes_names_and_flags():
    load = parse_kernel_log(log_text("two-nodes"))
    assert [s.name for s in load.segments] == \
           ["kho-scratch", "purgatory", "boot-params", "kernel", "initrd"]
    assert load.segment("kho-scratch").bufsz == 0x40           # 4 scratch regions × 16
    assert (load.type, load.flags, load.start) == (0, 0x8, 0x7EBFB120)
    assert load.loaded["purgatory"].mem == 0x7EBFB000
    assert load.loaded["kernel"].memsz == 0x2048000
    assert load.cmdline.endswith("kho=on khostage=2")


def test_no_initrd_flags():
    load = parse_kernel_log(log_text("one-node-no-initrd"))
    assert load.flags == 0xC                                   # DEBUG | NO_INITRAMFS
    assert "initrd" not in load.loaded and load.segment("initrd") is None


def test_arm64_names():
    if "two-nodes-arm64" not in captures_with_load():
        pytest.skip("arm64 capture missing")
    load = parse_kernel_log(log_text("two-nodes-arm64"))
    assert load.arch == "arm64"
    assert [s.name for s in load.segments] == ["kho-scratch", "kernel", "initrd", "dtb"]
    assert learn_purgatory(load) is None                       # no purgatory on arm64


def test_failed_load_keeps_what_was_logged():
    load = parse_kernel_log(log_text("scratch-too-small"))
    assert not load.complete and load.segments == []
    assert set(load.loaded) == {"purgatory", "boot-params", "kernel"}


@pytest.mark.parametrize("name", ["two-nodes", "efi-two-nodes", "one-node-no-initrd", "kho-off"])
def test_learn_purgatory(name):
    assert learn_purgatory(log_text(name)) == (0x4000, 0x5000)
    pg = purgatory_from_log(log_text(name))
    assert (pg.bufsz, pg.memsz, pg.align) == (0x4000, 0x5000, 0x1000)
    assert "learnt" in pg.source


def test_purgatory_default_when_log_has_none():
    assert learn_purgatory(log_text("scratch-too-small")) is None
    assert purgatory_from_log(log_text("scratch-too-small")) is DEFAULT_PURGATORY
    assert purgatory_from_log(None) is DEFAULT_PURGATORY
    assert "assumed" in DEFAULT_PURGATORY.source


def test_several_loads_last_wins_and_purgatory_from_latest_success():
    text = log_text("two-nodes") + log_text("scratch-too-small")
    loads = parse_kernel_log_all(text)
    assert len(loads) == 2
    assert parse_kernel_log(text).complete is False
    assert learn_purgatory(text) == (0x4000, 0x5000)


def to_kmsg(text: str) -> str:
    """dmesg text as /dev/kmsg records, with a dictionary continuation line."""
    out = []
    for seq, line in enumerate(text.splitlines()):
        m = re.match(r"\[\s*(\d+)\.(\d+)\] (.*)", line)
        if not m:
            continue
        usec = int(m.group(1)) * 1_000_000 + int(m.group(2))
        out.append(f"6,{seq},{usec},-;{m.group(3)}")
        out.append(" SUBSYSTEM=test")
    return "\n".join(out) + "\n"


def test_kmsg_records_parse_the_same():
    text = log_text("efi-two-nodes")
    a, b = parse_kernel_log(text), parse_kernel_log(to_kmsg(text))
    assert [s.as_tuple() for s in a.segments] == [s.as_tuple() for s in b.segments]
    assert a.cmdline == b.cmdline and a.flags == b.flags


def test_journal_lines():
    text = "\n".join("Nov 27 03:00:00 vm kernel: " + re.sub(r"^\[[^]]*\] ", "", line)
                     for line in log_text("kho-off").splitlines())
    load = parse_kernel_log(text)
    assert [s.name for s in load.segments] == ["purgatory", "boot-params", "kernel", "initrd"]


def test_snapshot_dmesg(tmp_path):
    shutil.copy(CAPTURES / "two-nodes" / "load/kernel.log", tmp_path / "dmesg")
    text = read_kernel_log(Sysroot(tmp_path))
    assert parse_kernel_log(text).segment("initrd").mem == 0x7C200000
    assert read_kernel_log(Sysroot(tmp_path / "nothing")) is None


def test_read_kmsg_stops_at_end_and_is_bounded(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/kmsg").write_text(to_kmsg(log_text("two-nodes")))
    text = read_kmsg(Sysroot(tmp_path))
    assert parse_kernel_log(text).complete
    small = read_kmsg(Sysroot(tmp_path), max_bytes=10)
    assert 0 < len(small) < len(text)   # one read of at most 16 KiB, then the cap


def test_live_kmsg_does_not_block():
    if not os.access("/dev/kmsg", os.R_OK):
        pytest.skip("/dev/kmsg not readable here")

    def _alarm(*_):
        raise TimeoutError("read_kmsg blocked")
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(10)
    try:
        text = read_kernel_log(Sysroot("/"))
    except Exception as exc:   # a container may refuse /dev/kmsg: that must be a KhotuiError
        from khotui.errors import KhotuiError
        assert isinstance(exc, KhotuiError), exc
        return
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert isinstance(text, str)
