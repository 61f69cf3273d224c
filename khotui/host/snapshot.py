"""`write_snapshot`: copy what the host readers read into a sysroot directory.

The result has the layout of the captures in `shared/kho/<capture>/sysroot`: every file at its
host path below `out_dir`, so `read_*(Sysroot(out_dir))` gives the model `read_*` gave on the
source. One exception: the memory blocks (`memory/memoryN/*`) and the links between them and
the nodes (`nodeN/memoryM`, `memoryM/nodeN`) are one run-length record,
`sys/devices/system/memory/khotui-blocks.jsonl` (format in khotui.host.blockrecord), so a
196,608-block host gives a snapshot of a few hundred files, not 1.7 million; the node
directories, their attributes and `block_size_bytes` stay files. Like the captures, other links
to directories are recorded as small files holding the link target. The kernel log goes to
`<out_dir>/dmesg` ("[    secs.usecs] message" lines), read without blocking from /dev/kmsg on
the live host, copied from `<root>/dmesg` from a snapshot.

Read-only on the source. A file that cannot be read is skipped and reported, not fatal.
Installed kernel images are not copied (only BLS entries and the build config); a snapshot's
`find_kernels` therefore lists only what was in the BLS entries' own directory, without sizes.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from khotui.errors import KhotuiError
from khotui.host.blockrecord import RECORD, format_record, parse_record
from khotui.host.kernellog import kmsg_to_dmesg
from khotui.host.kernellog import read_kmsg as kernellog_read_kmsg
from khotui.host.kernels import BLS_ROOTS
from khotui.host.kho import KHO_DIR, MAX_BLOB_BYTES, SETUP_DATA_DIR
from khotui.host.memory import (
    BLOCK_READ,
    MEMORY_DIR,
    NODE_ATTRIBUTES,
    NODE_DIR,
    NODE_STATE_FILES,
    block_runs,
    read_block_size,
)
from khotui.host.sysroot import Sysroot

MANIFEST = "khotui-snapshot.json"
DMESG = "dmesg"
MAX_DMESG_BYTES = 64 << 20

FILES = (
    "/proc/cmdline", "/proc/iomem", "/proc/meminfo", "/proc/version", "/proc/config.gz",
    "/proc/uptime", "/proc/loadavg",
    "/proc/sys/kernel/osrelease", "/proc/sys/kernel/ostype", "/proc/sys/kernel/arch",
    "/proc/sys/kernel/hostname",
    "/proc/sys/kernel/kexec_load_disabled", "/proc/sys/kernel/kexec_load_limit_reboot",
    "/proc/sys/kernel/kexec_load_limit_panic",
    "/sys/kernel/kexec_loaded", "/sys/kernel/kexec_crash_loaded", "/sys/kernel/kexec_crash_size",
    "/sys/kernel/security/lockdown",
    "/sys/firmware/efi/fw_platform_size", "/sys/firmware/fdt",
    "/sys/firmware/devicetree/base/#address-cells", "/sys/firmware/devicetree/base/#size-cells",
    "/sys/devices/system/cpu/online",
    "/etc/hostname",
    f"{MEMORY_DIR}/block_size_bytes", f"{MEMORY_DIR}/auto_online_blocks",
)
TREES = (
    KHO_DIR, "/sys/kernel/kexec", "/sys/firmware/efi/runtime-map",
    "/sys/firmware/devicetree/base/chosen", SETUP_DATA_DIR,
)
# Directories whose mere presence is information (efi_boot = /sys/firmware/efi exists).
DIRS = ("/sys/firmware/efi", "/sys/kernel/debug")


class _Copier:
    def __init__(self, source: Sysroot, out: Path) -> None:
        self.source = source
        self.out = out
        self.copied = 0
        self.skipped: list[str] = []

    def _dest(self, host: str) -> Path:
        return self.out / host.lstrip("/")

    def _skip(self, host: str, reason: str) -> None:
        self.skipped.append(f"{host}: {reason}")

    def _write(self, host: str, data: bytes) -> None:
        dest = self._dest(host)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        self.copied += 1

    def file(self, host: str, *, limit: int | None = None) -> None:
        """Copy one file if it exists; a link to a directory is recorded as its target."""
        real = self.source.path(host)
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._skip(host, exc.strerror or str(exc))
            return
        if stat.S_ISLNK(st.st_mode):
            if real.is_dir():
                self.link(host)
                return
            if not real.exists():
                self._skip(host, "dangling symbolic link")
                return
        elif stat.S_ISDIR(st.st_mode):
            self.tree(host)
            return
        try:
            kwargs = {"limit": limit} if limit else {}
            data = self.source.read_bytes(host, **kwargs)
        except KhotuiError as exc:
            self._skip(host, exc.message)
            return
        self._write(host, data)

    def link(self, host: str) -> None:
        """Record a sysfs link (e.g. memory0/node0) as a file holding its target, as the captures do."""
        real = self.source.path(host)
        if real.is_symlink():
            try:
                self._write(host, os.readlink(real).encode())
            except OSError as exc:
                self._skip(host, exc.strerror or str(exc))
        elif real.is_dir():
            self.dir(host)
        elif real.exists():
            self.file(host)

    def dir(self, host: str) -> None:
        self._dest(host).mkdir(parents=True, exist_ok=True)

    def tree(self, host: str, *, limit: int | None = None) -> None:
        """Copy a directory tree; links to directories are recorded, not followed."""
        real = self.source.path(host)
        if not real.is_dir() or real.is_symlink():
            return
        self.dir(host)
        try:
            names = self.source.listdir(host)
        except KhotuiError as exc:
            self._skip(host, exc.message)
            return
        for name in names:
            child = f"{host.rstrip('/')}/{name}"
            path = self.source.path(child)
            if path.is_symlink():
                if path.is_dir():
                    self.link(child)
                else:
                    self.file(child, limit=limit)
            elif path.is_dir():
                self.tree(child, limit=limit)
            else:
                self.file(child, limit=limit)


def _check_out_dir(source: Sysroot, out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise KhotuiError("exists and is not a directory", path=out,
                              fix="give a new or empty directory for the snapshot")
        if any(out.iterdir()):
            raise KhotuiError("is not empty; a snapshot is only written into an empty directory",
                              path=out, fix="give a new or empty directory, or remove this one first")
    if not source.is_live:
        src, dst = source.root.resolve(), out.resolve()
        if dst == src or src in dst.parents:
            raise KhotuiError("lies inside the snapshot being copied; the source is never written to",
                              path=out, fix="write the snapshot outside the source directory")


def read_kmsg(sysroot: Sysroot | None = None) -> str:
    """The live kernel log as dmesg text, read without blocking (kernellog.read_kmsg)."""
    return kmsg_to_dmesg(kernellog_read_kmsg(sysroot or Sysroot("/")))


def write_snapshot(sysroot: Sysroot, out_dir: str | os.PathLike[str], *,
                   progress: Callable[[str], None] | None = None) -> list[str]:
    """Copy the host state into `out_dir`; returns what was skipped, as 'host/path: reason'.
    `progress` hears about the one long step (a big host's memory blocks: 20 s on 196,608)."""
    out = Path(out_dir)
    _check_out_dir(sysroot, out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KhotuiError(f"cannot create the snapshot directory: {exc.strerror}", path=out,
                          fix="choose a writable location") from None
    copier = _Copier(sysroot, out)

    for host in FILES:
        copier.file(host, limit=MAX_BLOB_BYTES if host == "/sys/firmware/fdt" else None)
    for host in DIRS:
        if sysroot.is_dir(host):
            copier.dir(host)
    for host in TREES:
        copier.tree(host, limit=MAX_BLOB_BYTES)

    osrelease = (sysroot.read_optional_text("/proc/sys/kernel/osrelease") or "").strip()
    if osrelease:
        copier.file(f"/boot/config-{osrelease}")
    for base in BLS_ROOTS:
        entries = f"{base}/loader/entries"
        if sysroot.is_dir(entries) and not sysroot.path(entries).is_symlink():
            for name in sysroot.listdir(entries):
                if name.endswith(".conf"):
                    copier.file(f"{entries}/{name}")

    _copy_nodes(sysroot, copier)
    _record_memory_blocks(sysroot, copier, progress)
    _copy_dmesg(sysroot, copier)

    manifest = {"source": str(sysroot.root), "live": sysroot.is_live,
                "taken": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": copier.copied,
                "skipped": copier.skipped}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return copier.skipped


def _copy_nodes(sysroot: Sysroot, copier: _Copier) -> None:
    """The node state files and each `nodeN/` with its attributes; its `memoryM` links go to
    the memory block record."""
    for name in NODE_STATE_FILES:
        copier.file(f"{NODE_DIR}/{name}")
    for name in sysroot.listdir(NODE_DIR):
        if name.startswith("node") and name[4:].isdigit() and sysroot.is_dir(f"{NODE_DIR}/{name}"):
            copier.dir(f"{NODE_DIR}/{name}")
            for attr in NODE_ATTRIBUTES:
                copier.file(f"{NODE_DIR}/{name}/{attr}")


# Above this many blocks the read takes seconds (about 100 µs a block): say so first.
SLOW_BLOCKS = 10_000


def _record_memory_blocks(sysroot: Sysroot, copier: _Copier,
                          progress: Callable[[str], None] | None = None) -> None:
    """All memory blocks and node links as one run-length record (khotui.host.blockrecord)."""
    if progress is not None and sysroot.is_dir(MEMORY_DIR):
        count = sum(1 for name in sysroot.listdir(MEMORY_DIR)
                    if name.startswith("memory") and name[6:].isdigit())
        if count > SLOW_BLOCKS:
            progress(f"reading {count:,} memory blocks ({len(BLOCK_READ)} files each; "
                     f"about {count // 10_000 + 1} s)")
    try:
        runs = block_runs(sysroot, on_error=copier._skip)
    except KhotuiError as exc:
        copier._skip(MEMORY_DIR, f"{exc.path}: {exc.message}" if exc.path else exc.message)
        return
    if not runs:
        return
    record = format_record(runs, BLOCK_READ)
    # What the readers would refuse (node ids past MAX_NUMNODES, blocks past the physical
    # address space: a source tree that is not sysfs) is reported now, not at the next read.
    try:
        parse_record(record.splitlines(keepends=True), RECORD, BLOCK_READ,
                     read_block_size(sysroot))
    except KhotuiError as exc:
        copier._skip(MEMORY_DIR, f"not recorded, the source is not what sysfs gives: {exc.message}")
        return
    copier._write(RECORD, record)


def _copy_dmesg(sysroot: Sysroot, copier: _Copier) -> None:
    if sysroot.is_live:
        try:
            text = read_kmsg(sysroot)
        except KhotuiError as exc:
            copier._skip("/dev/kmsg", exc.message)
            return
        copier._write("/" + DMESG, text.encode())
    elif sysroot.exists("/" + DMESG):
        copier.file("/" + DMESG, limit=MAX_DMESG_BYTES)
