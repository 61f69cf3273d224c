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
the live host, copied from `<root>/dmesg` from a snapshot. On x86_64 the running kernel's
purgatory ELF goes to `<out_dir>/khotui-purgatory.ro` (khotui.host.running_image reads it back),
its provenance (image path, sha256, banner) to the manifest's "purgatory". LUO's device holder
and open sessions, read from /proc/*/fd, go to `<out_dir>/khotui-luo.json` (khotui.host.luo).

Read-only on the source. A file that cannot be read is skipped and reported, not fatal.

Written as the euid's alone (`_open_out`, `_Out`): OUT is new, or an empty real directory the
euid owns; it ends up 0700, every directory below 0700 and every file 0600, since it holds the
real iomem addresses, the kernel log, the command line and the KHO data. Every create goes
through a descriptor of a directory khotui made, refusing links and existing names, so an entry
planted in OUT (root writes snapshots) stops the copy instead of being written through. A
failure halfway is an error naming OUT as incomplete, never a partial snapshot that looks whole.
Installed kernel images are not copied (only BLS entries and the build config); a snapshot's
`find_kernels` therefore lists only what was in the BLS entries' own directory, without sizes.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from khotui.errors import KhotuiError, one_line
from khotui.host.blockrecord import RECORD, format_record, parse_record
from khotui.host.ima import BINARY_LIST, STAGED_LIST
from khotui.host.ima import FILES as IMA_FILES
from khotui.host.kernellog import kmsg_to_dmesg
from khotui.host.kernellog import read_kmsg as kernellog_read_kmsg
from khotui.host.kernelmem import (
    BOOT_PARAMS_DATA,
    BOOT_PARAMS_VERSION,
    CMA_DEBUGFS,
    CMA_SYSFS,
    MEMBLOCK_MEMORY,
    MEMBLOCK_RESERVED,
)
from khotui.host.kernels import BLS_ROOTS
from khotui.host.kho import KHO_DIR, MAX_BLOB_BYTES, SETUP_DATA_DIR
from khotui.host.luo import RECORD as LUO_RECORD
from khotui.host.luo import write_luo_record
from khotui.host.memory import (
    BLOCK_READ,
    MEMORY_DIR,
    NODE_ATTRIBUTES,
    NODE_DIR,
    NODE_STATE_FILES,
    block_runs,
    read_block_size,
)
from khotui.host.running_image import PURGATORY_RECORD, Tried, exact_purgatory
from khotui.host.sysroot import Sysroot

MANIFEST = "khotui-snapshot.json"
DMESG = "dmesg"
MAX_DMESG_BYTES = 64 << 20

FILES = (
    "/proc/cmdline", "/proc/iomem", "/proc/meminfo", "/proc/version", "/proc/config.gz",
    "/proc/uptime", "/proc/loadavg",
    "/proc/sys/kernel/osrelease", "/proc/sys/kernel/ostype", "/proc/sys/kernel/arch",
    "/proc/sys/kernel/hostname",
    # the receipt's boot id (khotui.load.receipt.BOOT_ID): `verify --root` on a snapshot taken
    # before the kexec then says "rebooted FAIL" instead of skipping the check
    "/proc/sys/kernel/random/boot_id",
    "/proc/sys/kernel/kexec_load_disabled", "/proc/sys/kernel/kexec_load_limit_reboot",
    "/proc/sys/kernel/kexec_load_limit_panic",
    "/sys/kernel/kexec_loaded", "/sys/kernel/kexec_crash_loaded", "/sys/kernel/kexec_crash_size",
    "/sys/kernel/security/lockdown",
    "/sys/firmware/efi/fw_platform_size", "/sys/firmware/fdt",
    "/sys/firmware/devicetree/base/#address-cells", "/sys/firmware/devicetree/base/#size-cells",
    "/sys/devices/system/cpu/online",
    "/etc/hostname",
    f"{MEMORY_DIR}/block_size_bytes", f"{MEMORY_DIR}/auto_online_blocks",
    *IMA_FILES,
    # placement inputs (khotui.host.kernelmem): the EFI descriptor size, the memblock arrays
    BOOT_PARAMS_DATA, BOOT_PARAMS_VERSION, MEMBLOCK_MEMORY, MEMBLOCK_RESERVED,
)
# The IMA measurement lists grow for the life of the host (tens of MiB under ima_policy=tcb);
# their size sizes the IMA segment, so they are copied whole up to this.
MAX_IMA_LIST_BYTES = 512 << 20
TREES = (
    KHO_DIR, "/sys/kernel/kexec", "/sys/firmware/efi/runtime-map",
    "/sys/firmware/devicetree/base/chosen", SETUP_DATA_DIR,
)
# Directories whose entries' names are the information (which CMA areas exist), copied as
# empty directories: khotui.host.kernelmem.default_cma_area() lists them.
NAMED_DIRS = (CMA_SYSFS, CMA_DEBUGFS)
# Directories whose mere presence is information (efi_boot = /sys/firmware/efi exists).
DIRS = ("/sys/firmware/efi", "/sys/kernel/debug")


# What a snapshot holds is what an attacker wants (the real physical addresses of /proc/iomem,
# the kernel log, the command line, the KHO data), and root writes it: it is its owner's alone.
# The modes are set with fchmod(2) after each create, so the umask neither widens nor narrows
# them (open(2) and mkdir(2) apply `mode & ~umask`).
DIR_MODE = 0o700
FILE_MODE = 0o600
# Every create is relative to a descriptor of a directory khotui made inside OUT, never by path.
# O_NOFOLLOW makes open(2) fail with ELOOP when the last component is a symbolic link, and
# O_CREAT|O_EXCL fails with EEXIST on any existing name, a dangling link included (open(2),
# POSIX): an entry someone else put in OUT stops the snapshot instead of being written through.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# The trees khotui copies are a few levels deep (devicetree chosen/, KHO's debugfs, setup_data);
# one deeper than this is not sysfs, and is cut here with the reason, not walked down to
# Python's recursion limit or PATH_MAX.
MAX_TREE_DEPTH = 64


def _plain(host: str) -> bool:
    """`host` is an absolute path of plain names: no '.', '..', empty part or NUL, so the same
    relative path cannot climb out of the source on reading nor out of OUT on writing."""
    parts = host.lstrip("/").split("/")
    return host.startswith("/") and all(p not in ("", ".", "..") and "\0" not in p for p in parts)


class _Out:
    """OUT, written only through descriptors: each directory made with mkdirat(2) and opened
    again with O_NOFOLLOW (and checked to be the euid's), each file created O_EXCL|O_NOFOLLOW."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.euid = os.geteuid()
        self._made: set[str] = set()
        self._written: set[str] = set()
        self._parent: tuple[str, int] | None = None   # the last directory written to, kept open

    def close(self) -> None:
        if self._parent is not None:
            os.close(self._parent[1])
            self._parent = None
        os.close(self.fd)

    def _foreign(self, rel: str) -> KhotuiError:
        return KhotuiError("appeared inside the snapshot while it was being written and is not "
                           "what khotui made there (a link or an entry someone else created); "
                           "nothing was written through it",
                           path=self.path / rel,
                           fix=f"check who else can write to {self.path}")

    def _error(self, rel: str, exc: OSError) -> KhotuiError:
        return KhotuiError(f"cannot write: {exc.strerror or exc}", path=self.path / rel,
                           fix="free space or choose a writable location")

    def _open_dir(self, parts: list[str]) -> int:
        """A new descriptor of OUT/parts, making what this snapshot has not made yet."""
        cur = os.dup(self.fd)
        try:
            for i, name in enumerate(parts):
                rel = "/".join(parts[: i + 1])
                made = rel not in self._made
                try:
                    if made:
                        os.mkdir(name, DIR_MODE, dir_fd=cur)
                        self._made.add(rel)
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=cur)
                except (FileExistsError, FileNotFoundError, NotADirectoryError):
                    raise self._foreign(rel) from None
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        raise self._foreign(rel) from None
                    raise self._error(rel, exc) from None
                os.close(cur)
                cur = nxt
                st = os.fstat(cur)
                if st.st_uid != self.euid:
                    raise self._foreign(rel)
                if made and stat.S_IMODE(st.st_mode) != DIR_MODE:
                    os.fchmod(cur, DIR_MODE)
            return cur
        except BaseException:
            os.close(cur)
            raise

    def _dir_fd(self, parts: list[str]) -> int:
        rel = "/".join(parts)
        if self._parent is not None and self._parent[0] == rel:
            return self._parent[1]
        fd = self._open_dir(parts)
        if self._parent is not None:
            os.close(self._parent[1])
        self._parent = (rel, fd)
        return fd

    def mkdir(self, rel: str) -> None:
        self._dir_fd(rel.split("/"))

    def write(self, rel: str, data: bytes) -> None:
        if rel in self._written:   # a path named twice (FILES and a tree): written once
            return
        *parents, name = rel.split("/")
        parent = self._dir_fd(parents)
        try:
            fd = os.open(name, _FILE_FLAGS, FILE_MODE, dir_fd=parent)
        except FileExistsError:
            raise self._foreign(rel) from None
        except OSError as exc:
            raise (self._foreign(rel) if exc.errno == errno.ELOOP else self._error(rel, exc)) from None
        self._written.add(rel)
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            raise self._error(rel, exc) from None
        finally:
            os.close(fd)


class _Copier:
    def __init__(self, source: Sysroot, out: _Out) -> None:
        self.source = source
        self.out = out
        self.copied = 0
        self.skipped: list[str] = []

    def _skip(self, host: str, reason: str) -> None:
        self.skipped.append(f"{host}: {reason}")

    def _write(self, host: str, data: bytes) -> None:
        self.out.write(host.lstrip("/"), data)
        self.copied += 1

    def file(self, host: str, *, limit: int | None = None) -> None:
        """Copy one file if it exists; a link to a directory is recorded as its target."""
        if not _plain(host):
            self._skip(host, "not a plain path ('.', '..', an empty name or NUL); not copied")
            return
        # every look at the source resolves beneath its root (Sysroot): a link leading out of a
        # hostile snapshot is refused, not followed, even just to ask what kind of file it is
        try:
            st = self.source.lstat(host)
            if st is None:
                return
            if stat.S_ISLNK(st.st_mode):
                if self.source.is_dir(host):
                    self.link(host)
                    return
                if not self.source.exists(host):
                    self._skip(host, "dangling symbolic link")
                    return
        except (KhotuiError, OSError) as exc:
            self._skip(host, one_line(exc))
            return
        if stat.S_ISDIR(st.st_mode):
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
        try:
            if self.source.is_symlink(host):
                self._write(host, self.source.readlink(host).encode())
            elif self.source.is_dir(host):
                self.dir(host)
            elif self.source.exists(host):
                self.file(host)
        except (KhotuiError, OSError) as exc:
            self._skip(host, one_line(exc))

    def dir(self, host: str) -> None:
        self.out.mkdir(host.lstrip("/"))

    def tree(self, host: str, *, limit: int | None = None) -> None:
        """Copy a directory tree; links to directories are recorded, not followed. A walk with
        its own stack: a hostile tree thousands of levels deep cannot exhaust Python's."""
        try:
            if not _plain(host) or not self.source.is_dir(host) or self.source.is_symlink(host):
                return
        except (KhotuiError, OSError):
            return      # the caller's file() already said why, or there is nothing to copy
        pending = [host]
        while pending:
            current = pending.pop()
            if current.count("/") > MAX_TREE_DEPTH:
                self._skip(current, f"more than {MAX_TREE_DEPTH} directories deep, which no "
                           "host tree khotui reads is; not copied below here")
                continue
            self.dir(current)
            try:
                names = self.source.listdir(current)
            except KhotuiError as exc:
                self._skip(current, exc.message)
                continue
            subtrees = []
            for name in names:
                child = f"{current.rstrip('/')}/{name}"
                try:
                    link = self.source.is_symlink(child)
                    is_dir = self.source.is_dir(child)
                except (KhotuiError, OSError) as exc:
                    self._skip(child, one_line(exc))
                    continue
                if link and is_dir:
                    self.link(child)
                elif is_dir:
                    subtrees.append(child)
                else:
                    self.file(child, limit=limit)
            pending.extend(reversed(subtrees))   # depth first, in name order


def _open_out(source: Sysroot, out: Path) -> int:
    """A descriptor of OUT, a directory of the euid's own, mode 0700 and empty.

    A new OUT is made here, mode 0700. An existing one must be a real directory (opened with
    O_NOFOLLOW) owned by the euid: another user's directory is refused, since its owner can put
    links in it at any time, or chmod it open again. One of our own that others could write
    to (e.g. 0775 under a umask of 002) is made 0700, then checked empty a second time: only
    we could have changed it after that, and nobody else can undo the chmod. Nothing changes
    on a refusal but in that race."""
    if not source.is_live:
        src, dst = source.root.resolve(), out.resolve()
        if dst == src or src in dst.parents:
            raise KhotuiError("lies inside the snapshot being copied; the source is never written to",
                              path=out, fix="write the snapshot outside the source directory")
    absolute = Path(os.path.abspath(out))
    parent, name = absolute.parent, absolute.name
    new_or_empty = "give a new directory (khotui creates it, mode 0700) or an empty one you own"
    if not name:
        raise KhotuiError("is not empty; a snapshot is only written into an empty directory",
                          path=out, fix=new_or_empty)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise KhotuiError(f"cannot create the snapshot directory here: {exc.strerror or exc}",
                          path=parent, fix="choose a writable location") from None
    try:
        created = False
        try:
            os.mkdir(name, DIR_MODE, dir_fd=parent_fd)
            created = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise KhotuiError(f"cannot create the snapshot directory: {exc.strerror or exc}",
                              path=out, fix="choose a writable location") from None
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            # Linux answers ENOTDIR, not ELOOP, for a link opened O_DIRECTORY|O_NOFOLLOW
            if exc.errno == errno.ELOOP or os.path.islink(absolute):
                raise KhotuiError("is a symbolic link; a snapshot is only written into a real "
                                  "directory, never through a link", path=out,
                                  fix=new_or_empty) from None
            if exc.errno == errno.ENOTDIR:
                raise KhotuiError("exists and is not a directory", path=out,
                                  fix=new_or_empty) from None
            raise KhotuiError(f"cannot open the snapshot directory: {exc.strerror or exc}",
                              path=out, fix=new_or_empty) from None
    finally:
        os.close(parent_fd)
    try:
        _check_out_fd(fd, out, created=created, fix=new_or_empty)
    except OSError as exc:   # fstat, chmod (e.g. EPERM on a filesystem without modes), listdir
        os.close(fd)
        raise KhotuiError(f"cannot make the snapshot directory private (0700): "
                          f"{exc.strerror or exc}", path=out,
                          fix="choose a location on a local filesystem you own") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_out_fd(fd: int, out: Path, *, created: bool, fix: str) -> None:
    st = os.fstat(fd)
    euid = os.geteuid()
    if st.st_uid != euid:
        raise KhotuiError(f"is owned by uid {st.st_uid}, not by uid {euid} who takes the "
                          "snapshot; its owner could put links in it while the snapshot is "
                          "written, and read what it holds", path=out, fix=fix)
    if not created and os.listdir(fd):
        raise KhotuiError("is not empty; a snapshot is only written into an empty directory",
                          path=out, fix="give a new or empty directory, or remove this one first")
    if stat.S_IMODE(st.st_mode) != DIR_MODE:
        os.fchmod(fd, DIR_MODE)
        if os.listdir(fd):   # written to by someone else before the chmod closed it
            raise KhotuiError("was written to by someone else while khotui made it private",
                              path=out, fix=fix)


def read_kmsg(sysroot: Sysroot | None = None) -> str:
    """The live kernel log as dmesg text, read without blocking (kernellog.read_kmsg)."""
    return kmsg_to_dmesg(kernellog_read_kmsg(sysroot or Sysroot("/")))


def write_snapshot(sysroot: Sysroot, out_dir: str | os.PathLike[str], *,
                   progress: Callable[[str], None] | None = None) -> list[str]:
    """Copy the host state into `out_dir`; returns what was skipped, as 'host/path: reason'.
    `progress` hears about the one long step (a big host's memory blocks: 20 s on 196,608)."""
    out = Path(out_dir)
    target = _Out(out, _open_out(sysroot, out))
    try:
        try:
            return _copy(sysroot, _Copier(sysroot, target), progress)
        except OSError as exc:   # what _Out does not name itself (fchmod, fstat, EMFILE)
            raise KhotuiError(f"cannot write the snapshot: {exc.strerror or exc}",
                              path=exc.filename, fix="free space or choose a writable location") \
                from None
    except KhotuiError as exc:
        # Never a traceback, nor a partial snapshot that looks whole: say where it stopped.
        fix = f"remove it (rm -r -- {out}) and take the snapshot again into a new directory"
        raise KhotuiError(f"{exc.problem.headline}; the snapshot stopped there and {out} is left "
                          "incomplete", path=out,
                          fix=f"{exc.fix}; then {fix}" if exc.fix else fix) from None
    finally:
        target.close()


def _copy(sysroot: Sysroot, copier: _Copier, progress: Callable[[str], None] | None) -> list[str]:
    limits = {"/sys/firmware/fdt": MAX_BLOB_BYTES, BINARY_LIST: MAX_IMA_LIST_BYTES,
              STAGED_LIST: MAX_IMA_LIST_BYTES}
    for host in FILES:
        copier.file(host, limit=limits.get(host))
    for host in DIRS:
        if sysroot.is_dir(host):
            copier.dir(host)
    for host in TREES:
        copier.tree(host, limit=MAX_BLOB_BYTES)
    for host in NAMED_DIRS:
        if sysroot.is_dir(host) and not sysroot.is_symlink(host):
            for name in sysroot.listdir(host):
                if _plain(f"{host}/{name}") and sysroot.is_dir(f"{host}/{name}"):
                    copier.dir(f"{host}/{name}")

    osrelease = (sysroot.read_optional_text("/proc/sys/kernel/osrelease") or "").strip()
    if osrelease:
        copier.file(f"/boot/config-{osrelease}")
    for base in BLS_ROOTS:
        entries = f"{base}/loader/entries"
        if sysroot.is_dir(entries) and not sysroot.is_symlink(entries):
            for name in sysroot.listdir(entries):
                if name.endswith(".conf"):
                    copier.file(f"{entries}/{name}")

    _copy_nodes(sysroot, copier)
    _record_memory_blocks(sysroot, copier, progress)
    _copy_dmesg(sysroot, copier)
    purgatory = _record_purgatory(sysroot, copier)
    _record_luo(sysroot, copier)

    manifest = {"source": str(sysroot.root), "live": sysroot.is_live,
                "taken": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": copier.copied,
                "skipped": copier.skipped, "purgatory": purgatory}
    copier.out.write(MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
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


def _record_purgatory(sysroot: Sysroot, copier: _Copier) -> dict[str, str | int | None] | None:
    """The running kernel's purgatory ELF (x86_64; tens of KB), so `--root` plans with it
    exactly: images are not copied. Its provenance goes into the manifest."""
    try:
        arch = (sysroot.read_optional_text("/proc/sys/kernel/arch") or "").strip()
    except (KhotuiError, OSError):
        arch = ""        # already reported by the copy of that file
    if arch and arch != "x86_64":
        return None      # only x86_64 loads a purgatory
    tried = Tried()
    reading = exact_purgatory(sysroot, tried)
    if reading is None:
        # not a file that failed to copy (the skipped list), but what the plan on this snapshot
        # will assume: the manifest says why
        return {"source": None, "not_recorded": tried.said(sysroot)}
    copier._write(PURGATORY_RECORD, reading.elf)
    return reading.provenance()


def _record_luo(sysroot: Sysroot, copier: _Copier) -> None:
    """LUO's device holder and open sessions, as /proc/*/fd shows them (khotui.host.luo), since
    /proc is not copied whole. From a snapshot that has a record, the record is copied."""
    if not sysroot.is_live:
        if sysroot.lstat(LUO_RECORD) is not None:
            copier.file(LUO_RECORD, limit=1 << 20)
            return
        if not sysroot.is_dir("/dev"):
            return   # a tree without dev/ (a capture) shows no LUO: nothing to record
    copier._write(LUO_RECORD, write_luo_record(sysroot))


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
