"""The kernel's own account of a `kexec_file_load`: placement lines from the kernel log.

With `KEXEC_FILE_DEBUG` (0x8) the kernel logs every segment it placed (`kexec_dprintk()`,
kernel/kexec_file.c) and the loaders name theirs:

    kexec_file: kernel: %p kernel_size: %#lx                              (starts a load)
    kexec-bzImage64: Loaded purgatory at 0x%lx
    kexec-bzImage64: Loaded boot_param, command line and misc at 0x%lx bufsz=0x%lx memsz=0x%lx
    kexec-bzImage64: Loaded 64bit kernel at 0x%lx bufsz=0x%lx memsz=0x%lx
    kexec-bzImage64: Loaded initrd at 0x%lx bufsz=0x%lx memsz=0x%lx
    kexec-bzImage64: Final command line is: %s
    kexec_file(Image): Loaded kernel at ...      kexec_file: Loaded initrd/dtb at ...   (arm64)
    kexec_file: nr_segments = %lu
    kexec_file: segment[%d]: buf=0x%p bufsz=0x%zx mem=0x%lx memsz=0x%zx
    kexec_file: kexec_file_load: type:%u, start:0x%lx head:0x%lx flags:0x%lx  (load done)

Input is `dmesg` text (with or without `[ time]` stamps), raw `/dev/kmsg` records
(`6,1234,5678,-;message`) or journal lines: the known messages are searched anywhere in a line.
Reading the live log is bounded and never blocks (`O_NONBLOCK`, stop at EAGAIN).
"""

from __future__ import annotations

import errno as _errno
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from khotui.errors import KhotuiError, explain_os_error
from khotui.host.sysroot import Sysroot
from khotui.types import DEFAULT_PURGATORY, JsonDict, Purgatory

_HEX = r"0x([0-9a-fA-F]+)"
_SIZES = rf"at {_HEX} bufsz={_HEX} memsz={_HEX}"

_RE_START = re.compile(r"kexec_file: kernel: \S+ kernel_size: (0x[0-9a-fA-F]+|[0-9]{1,20})")
_RE_SEGMENT = re.compile(
    rf"kexec_file: segment\[([0-9]{{1,20}})\]: buf=\S+ bufsz={_HEX} mem={_HEX} memsz={_HEX}")
_RE_NR = re.compile(r"kexec_file: nr_segments = ([0-9]{1,20})")
_RE_DONE = re.compile(
    rf"kexec_file: kexec_file_load: type:([0-9]{{1,20}}), start:{_HEX} head:{_HEX} flags:{_HEX}")
_RE_PURGATORY = re.compile(rf"kexec-bzImage64: Loaded purgatory at {_HEX}")
_RE_CMDLINE = re.compile(r"kexec-bzImage64: Final command line is: (.*)$")
_RE_IMA = re.compile(rf"kexec measurement buffer for the loaded kernel at {_HEX}")
# (regex, segment name, arch)
_LOADED = (
    (re.compile(rf"kexec-bzImage64: Loaded boot_param, command line and misc {_SIZES}"),
     "boot-params", "x86_64"),
    (re.compile(rf"kexec-bzImage64: Loaded 64bit kernel {_SIZES}"), "kernel", "x86_64"),
    (re.compile(rf"kexec-bzImage64: Loaded initrd {_SIZES}"), "initrd", "x86_64"),
    (re.compile(rf"Loaded ELF headers {_SIZES}"), "elfcorehdr", "x86_64"),
    (re.compile(rf"kexec_file\(Image\): Loaded kernel {_SIZES}"), "kernel", "arm64"),
    (re.compile(rf"kexec_file: Loaded initrd {_SIZES}"), "initrd", "arm64"),
    (re.compile(rf"kexec_file: Loaded dtb {_SIZES}"), "dtb", "arm64"),
    (re.compile(rf"kexec_file: Loaded elf core header {_SIZES}"), "elfcorehdr", "arm64"),
)
_KMSG_RECORD = re.compile(r"^\d+,\d+,\d+,[^;]*;")
_KMSG_DICT = re.compile(r"^ [A-Z_]+=")


@dataclass(frozen=True)
class LoadedLine:
    """One `Loaded ... at` line: where the loader says it put a segment."""

    name: str
    mem: int
    bufsz: int | None = None
    memsz: int | None = None


@dataclass
class LoggedSegment:
    """One `segment[N]:` line; `name` from matching `mem` with the Loaded lines."""

    index: int
    bufsz: int
    mem: int
    memsz: int
    name: str | None = None

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.index, self.bufsz, self.mem, self.memsz)


@dataclass
class LoggedLoad:
    """Everything one `kexec_file_load` with KEXEC_FILE_DEBUG logged."""

    kernel_size: int | None = None
    segments: list[LoggedSegment] = field(default_factory=list)
    loaded: dict[str, LoadedLine] = field(default_factory=dict)
    nr_segments: int | None = None
    cmdline: str | None = None
    type: int | None = None      # 0 normal, 1 crash
    start: int | None = None     # entry point (purgatory on x86)
    flags: int | None = None     # the flags the syscall got
    arch: str | None = None      # 'x86_64' or 'arm64', from the loader's lines

    @property
    def complete(self) -> bool:
        """True when the load got as far as its final `kexec_file_load: type:` line."""
        return self.flags is not None

    def segment(self, name: str) -> LoggedSegment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def as_dict(self) -> JsonDict:
        data: JsonDict = asdict(self)
        data["complete"] = self.complete
        return data


def _size_value(text: str) -> int:
    """`%#lx` prints 0x...; decimal is read as decimal, leading zeros too (int(x, 0) refuses them)."""
    return int(text, 16) if text[:2] in ("0x", "0X") else int(text, 10)


def _text_lines(text: str) -> Iterator[str]:
    """Message text of each line: kmsg prefixes dropped, kmsg continuation lines skipped."""
    for raw in text.splitlines():
        if _KMSG_DICT.match(raw):
            continue   # /dev/kmsg dictionary continuation (" SUBSYSTEM=...")
        m = _KMSG_RECORD.match(raw)
        yield raw[m.end():] if m else raw


def parse_kernel_log_all(text: str) -> list[LoggedLoad]:
    """Every KEXEC_FILE_DEBUG load in the log, oldest first."""
    loads: list[LoggedLoad] = []
    cur: LoggedLoad | None = None

    def current() -> LoggedLoad:
        nonlocal cur
        if cur is None:   # the log starts mid-load (ring buffer wrapped): keep what is there
            cur = LoggedLoad()
            loads.append(cur)
        return cur

    for line in _text_lines(text):
        if "kexec" not in line and "Loaded" not in line:
            continue
        m = _RE_START.search(line)
        if m:
            cur = LoggedLoad(kernel_size=_size_value(m.group(1)))
            loads.append(cur)
            continue
        m = _RE_SEGMENT.search(line)
        if m:
            current().segments.append(LoggedSegment(
                index=int(m.group(1)), bufsz=int(m.group(2), 16), mem=int(m.group(3), 16),
                memsz=int(m.group(4), 16)))
            continue
        m = _RE_DONE.search(line)
        if m:
            load = current()
            load.type, load.start = int(m.group(1)), int(m.group(2), 16)
            load.flags = int(m.group(4), 16)
            cur = None
            continue
        m = _RE_NR.search(line)
        if m:
            current().nr_segments = int(m.group(1))
            continue
        m = _RE_PURGATORY.search(line)
        if m:
            load = current()
            load.arch = "x86_64"
            load.loaded["purgatory"] = LoadedLine("purgatory", int(m.group(1), 16))
            continue
        m = _RE_CMDLINE.search(line)
        if m:
            current().cmdline = m.group(1)
            continue
        m = _RE_IMA.search(line)
        if m:
            current().loaded["ima"] = LoadedLine("ima", int(m.group(1), 16))
            continue
        for regex, name, arch in _LOADED:
            m = regex.search(line)
            if m:
                load = current()
                load.arch = arch
                load.loaded[name] = LoadedLine(name, int(m.group(1), 16), int(m.group(2), 16),
                                               int(m.group(3), 16))
                break
    for load in loads:
        _name_segments(load)
    return loads


def parse_kernel_log(text: str) -> LoggedLoad | None:
    """The last KEXEC_FILE_DEBUG load in the log (it may have failed: see `complete`)."""
    loads = parse_kernel_log_all(text)
    return loads[-1] if loads else None


def _name_segments(load: LoggedLoad) -> None:
    """Name segments by address; unnamed ones before the first named one are IMA/KHO scratch."""
    by_mem = {line.mem: name for name, line in load.loaded.items()}
    for seg in load.segments:
        seg.name = by_mem.get(seg.mem)
    # kimage_file_prepare_segments(): [IMA buffer], [KHO scratch array], then the loader's
    # segments. Without a Loaded line, a leading segment of 16 bytes per region is the array.
    for seg in load.segments:
        if seg.name is not None:
            break
        if seg.bufsz and seg.bufsz % 16 == 0 and seg.bufsz <= 16 * 1024:
            seg.name = "kho-scratch"


# --- purgatory ----------------------------------------------------------------------------


# Purgatory and DEFAULT_PURGATORY are khotui.types' (a placement input the host fills).


def learn_purgatory(log: str | LoggedLoad | list[LoggedLoad] | None) -> tuple[int, int] | None:
    """(bufsz, memsz) of the purgatory segment of the latest load that logged one."""
    if log is None:
        return None
    if isinstance(log, str):
        loads = parse_kernel_log_all(log)
    elif isinstance(log, LoggedLoad):
        loads = [log]
    else:
        loads = list(log)
    for load in reversed(loads):
        line = load.loaded.get("purgatory")
        if line is None:
            continue
        for seg in load.segments:
            if seg.mem == line.mem:
                return seg.bufsz, seg.memsz
    return None


def purgatory_from_log(log: str | LoggedLoad | list[LoggedLoad] | None) -> Purgatory:
    """The learnt purgatory when the log has one, else `DEFAULT_PURGATORY`, saying which."""
    return learnt_purgatory(log) or DEFAULT_PURGATORY


def learnt_purgatory(log: str | LoggedLoad | list[LoggedLoad] | None) -> Purgatory | None:
    """The purgatory segment of the latest load the log shows, or None. Not exact: the log
    gives bufsz and memsz, not the alignment (khotui.host.running_image reads the ELF)."""
    learnt = learn_purgatory(log)
    if learnt is None:
        return None
    bufsz, memsz = learnt
    return Purgatory(bufsz=bufsz, memsz=memsz, align=0x1000,
                     source=f"learnt from an earlier KEXEC_FILE_DEBUG load in the kernel log "
                            f"(bufsz 0x{bufsz:x}, memsz 0x{memsz:x}; align assumed 4096, the "
                            f"'.balign 4096' of the purgatory's .bss)")


# --- reading the log ----------------------------------------------------------------------

KMSG_MAX_RECORDS = 200_000
KMSG_MAX_BYTES = 32 << 20
_KMSG_READ = 16384    # above CONSOLE_EXT_LOG_MAX (8192): a short buffer gets EINVAL


def read_kmsg(sysroot: Sysroot, *, max_records: int = KMSG_MAX_RECORDS,
              max_bytes: int = KMSG_MAX_BYTES) -> str:
    """Every record now in `/dev/kmsg`, without blocking: read until EAGAIN (or the caps)."""
    shown = sysroot.display("/dev/kmsg")
    try:
        # the live host's character device; under a snapshot root only a regular file is read
        fd = sysroot.open_file("/dev/kmsg", special=True)
    except OSError as exc:
        if exc.errno in (_errno.EACCES, _errno.EPERM):
            raise KhotuiError("cannot read the kernel log: permission denied "
                              "(kernel.dmesg_restrict)", path=shown,
                              fix="run khotui as root to compare with the kernel's placement") \
                from None
        raise explain_os_error(exc, shown, what="kernel log") from None
    records: list[str] = []
    total = 0
    try:
        while len(records) < max_records and total < max_bytes:
            try:
                data = os.read(fd, _KMSG_READ)
            except BlockingIOError:
                break                      # EAGAIN: no more records
            except OSError as exc:
                if exc.errno == _errno.EPIPE:
                    continue               # records overwritten while reading: go on
                if exc.errno == _errno.EINTR:
                    continue
                raise explain_os_error(exc, shown, what="kernel log") from None
            if not data:
                break
            total += len(data)
            records.append(data.decode("utf-8", errors="replace").rstrip("\n"))
    finally:
        os.close(fd)
    return "\n".join(records) + ("\n" if records else "")


def kmsg_to_dmesg(records: str) -> str:
    """/dev/kmsg records ("pri,seq,usec,flags;message") as dmesg text ("[secs.usecs] message")."""
    # record format: Documentation/ABI/testing/dev-kmsg; continuation lines are key=value metadata
    lines = []
    for record in records.splitlines():
        head, sep, message = record.partition(";")
        fields = head.split(",")
        if not sep or len(fields) < 3 or not fields[2].isdigit():
            continue
        usec = int(fields[2])
        lines.append(f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] {message}")
    return "\n".join(lines) + ("\n" if lines else "")


def read_kernel_log(sysroot: Sysroot) -> str | None:
    """The kernel log of a host: live `/dev/kmsg`, or a snapshot's `<root>/dmesg` (None if absent)."""
    if sysroot.is_live:
        return read_kmsg(sysroot)
    return sysroot.read_optional_text("/dmesg")
