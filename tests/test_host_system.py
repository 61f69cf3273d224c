"""System summary: psutil live, files under a snapshot root."""

from __future__ import annotations

import pytest

from khotui.host.sysroot import Sysroot
from khotui.host.system import read_system
from tests.conftest import CAPTURES


def test_capture_has_memory_but_no_uptime():
    root = CAPTURES / "two-nodes/sysroot"
    if not root.is_dir():
        pytest.skip(f"{root} is missing")
    summary = read_system(Sysroot(root))
    assert summary.mem_total == 2036808 * 1024 and summary.mem_available == 1995248 * 1024
    assert summary.hostname is None and summary.uptime is None and summary.loadavg is None


def test_snapshot_files(tmp_path):
    files = {"etc/hostname": "kho-host\n", "proc/uptime": "1234.56 2000.00\n",
             "proc/loadavg": "0.50 0.40 0.30 1/100 4242\n", "sys/devices/system/cpu/online": "0-7\n",
             "proc/meminfo": "MemTotal: 100 kB\n"}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    s = read_system(Sysroot(tmp_path))
    assert (s.hostname, s.uptime, s.loadavg, s.cpu_count, s.mem_total, s.mem_available) == \
        ("kho-host", 1234.56, (0.5, 0.4, 0.3), 8, 102400, None)


def test_live():
    s = read_system(Sysroot("/"))
    assert s.hostname and s.mem_total > 0 and s.cpu_count >= 1 and s.uptime > 0 and len(s.loadavg) == 3
