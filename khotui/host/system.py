"""A one-screen system summary: hostname, memory, uptime, load, CPUs.

psutil on the live host; under a snapshot root from /proc/meminfo, /proc/uptime, /proc/loadavg,
/etc/hostname (or /proc/sys/kernel/hostname) and /sys/devices/system/cpu/online. Anything
missing is None.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from khotui.errors import KhotuiError
from khotui.host.boot import parse_meminfo
from khotui.host.memory import parse_list
from khotui.host.sysroot import Sysroot


@dataclass
class SystemSummary:
    hostname: str | None
    mem_total: int | None          # bytes
    mem_available: int | None      # bytes
    uptime: float | None           # seconds
    loadavg: tuple[float, float, float] | None
    cpu_count: int | None

    def as_dict(self) -> dict[str, str | int | float | list[float] | None]:
        return {"hostname": self.hostname, "mem_total": self.mem_total,
                "mem_available": self.mem_available, "uptime": self.uptime,
                "loadavg": list(self.loadavg) if self.loadavg else None,
                "cpu_count": self.cpu_count}


def _hostname(sysroot: Sysroot) -> str | None:
    for path in ("/etc/hostname", "/proc/sys/kernel/hostname"):
        text = sysroot.read_optional_text(path)
        if text and text.strip():
            return text.strip()
    return None


def _floats(text: str | None, n: int) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(x) for x in text.split()[:n]]
    except ValueError:
        return None


def _cpu_count(sysroot: Sysroot) -> int | None:
    host = "/sys/devices/system/cpu/online"
    text = sysroot.read_optional_text(host)
    if text is None:
        return None
    try:
        return len(parse_list(text, path=sysroot.display(host))) or None
    except KhotuiError:
        return None


def read_system(sysroot: Sysroot) -> SystemSummary:
    if sysroot.is_live:
        import time

        # psutil ships no types (types-psutil is not a dependency)
        import psutil  # type: ignore[import-untyped]
        vm = psutil.virtual_memory()
        one, five, fifteen = psutil.getloadavg()
        return SystemSummary(hostname=socket.gethostname(), mem_total=vm.total,
                             mem_available=vm.available,
                             uptime=round(time.time() - psutil.boot_time(), 2),
                             loadavg=(one, five, fifteen),
                             cpu_count=psutil.cpu_count())
    meminfo_text = sysroot.read_optional_text("/proc/meminfo")
    meminfo = parse_meminfo(meminfo_text) if meminfo_text is not None else {}
    total = meminfo.get("MemTotal")
    avail = meminfo.get("MemAvailable")
    uptime = _floats(sysroot.read_optional_text("/proc/uptime"), 1)
    load = _floats(sysroot.read_optional_text("/proc/loadavg"), 3)
    return SystemSummary(
        hostname=_hostname(sysroot),
        mem_total=total * 1024 if total is not None else None,
        mem_available=avail * 1024 if avail is not None else None,
        uptime=uptime[0] if uptime else None,
        loadavg=(load[0], load[1], load[2]) if load and len(load) == 3 else None,
        cpu_count=_cpu_count(sysroot),
    )
