"""Open the kernel and initrd once, check and hash them, and load exactly those descriptors.

What was previewed is what gets loaded: each file is opened once, inspected and hashed through
its fd, and the same fd goes to `kexec_file_load`, which reads the file through it from offset 0
(kernel_read_file_from_fd(), fs/kernel_read_file.c). Renaming another file over the path after
opening changes nothing. Writing into the opened file still would, so files that someone other
than root can write are flagged, and `changed_since_open()` re-checks before the syscall.

Pure core: no printing; warnings are returned as `Problem` objects for the CLI/TUI to show.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import os
import stat
from dataclasses import dataclass
from typing import Self

from khotui import units
from khotui.errors import KhotuiError, Problem, explain_os_error, file_kind
from khotui.host.ownership import writable_by_others
from khotui.load import audit, interrupts, kexec
from khotui.load.explain import ExplainContext, explain
from khotui.load.syscall import KEXEC_FILE_SIZE_MAX, Syscalls, check_allowed


@dataclass(frozen=True)
class OpenedFile:
    """One open file, as the kernel will read it."""

    role: str  # "kernel" or "initrd"
    path: str  # as the operator gave it (may be a symlink such as /boot/vmlinuz)
    resolved: str  # what the fd actually refers to
    fd: int
    size: int
    sha256: str
    uid: int
    gid: int
    mode: int
    dev: int
    ino: int
    mtime_ns: int
    ctime_ns: int
    warnings: tuple[Problem, ...] = ()

    def read_head(self, n: int) -> bytes:
        """The first `n` bytes, via pread (for image.py's header parsing), fd position untouched."""
        return os.pread(self.fd, n, 0)


def _resolved(fd: int, path: str) -> str:
    # /proc/self/fd/N names the file actually opened, with no race against a rename
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def open_one(path: str | os.PathLike[str], role: str) -> OpenedFile:
    """Open `path` for the kernel to read: follows symlinks (records where they led), refuses
    anything but a non-empty regular file of at most 4 GiB, hashes it through the fd.

    The path is first opened with O_PATH, which opens nothing behind it (no FIFO blocks, no
    device or tty driver's open() runs: open(2)), and only a regular file is then reopened for
    reading through /proc/self/fd, which names the very inode checked."""
    path = os.fspath(path)
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise explain_os_error(exc, path, what=role) from None
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode):
            # kernel_read_file() answers EINVAL for anything but a regular file
            raise KhotuiError(f"the {role} is {file_kind(st.st_mode)}, not a regular file",
                              path=path,
                              fix=f"give the path of the {role} image file")
        try:
            fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError as exc:
            raise explain_os_error(exc, path, what=role) from None
        resolved = _resolved(pfd, path)
    finally:
        os.close(pfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # cannot happen (same inode); never load it anyway
            raise KhotuiError(f"the {role} is not a regular file", path=path,
                              fix=f"give the path of the {role} image file")
        if st.st_size == 0:
            raise KhotuiError(f"the {role} is empty", path=path,
                              fix=f"point at the real {role}; an interrupted install can leave "
                                  "an empty file behind")
        if st.st_size > KEXEC_FILE_SIZE_MAX:
            context = (ExplainContext(kernel_size=st.st_size, kernel_path=path)
                       if role == "kernel" else
                       ExplainContext(initrd_size=st.st_size, initrd_path=path))
            ex = explain(_errno.EFBIG, context)
            raise KhotuiError(f"the {role} is {units.size(st.st_size)}: {ex.cause}",
                              path=path, fix=ex.fix)
        try:
            digest = audit.sha256_fd(fd)
        except OSError as exc:
            raise explain_os_error(exc, path, what=role) from None
        return OpenedFile(role=role, path=path, resolved=resolved, fd=fd, size=st.st_size,
                          sha256=digest, uid=st.st_uid, gid=st.st_gid, mode=st.st_mode,
                          dev=st.st_dev, ino=st.st_ino, mtime_ns=st.st_mtime_ns,
                          ctime_ns=st.st_ctime_ns,
                          warnings=tuple(writable_by_others(role, path, st, fd=fd)))
    except BaseException:
        os.close(fd)
        raise


@dataclass
class OpenedFiles:
    """The kernel and (optional) initrd, open until `close()` / the end of the `with` block."""

    kernel: OpenedFile
    initrd: OpenedFile | None = None
    closed: bool = False
    # set inside the signal-blocked window (`run_load`), before any interrupt can be delivered:
    # whether the syscall was made, and the kernel's answer
    attempted: bool = False
    result: kexec.LoadResult | None = None

    @property
    def initrd_fd(self) -> int | None:
        return None if self.initrd is None else self.initrd.fd

    @property
    def files(self) -> list[OpenedFile]:
        return [f for f in (self.kernel, self.initrd) if f is not None]

    @property
    def warnings(self) -> list[Problem]:
        return [w for f in self.files for w in f.warnings]

    def changed_since_open(self, *, rehash: bool = True) -> list[str]:
        """What changed in the opened files since they were hashed (empty: nothing).

        Size and mtime first, then (by default) the content hash. ctime is not compared: a
        rename over the path or a chmod moves it without touching the content the fd reads.
        """
        changes = []
        for f in self.files:
            st = os.fstat(f.fd)
            if st.st_size != f.size:
                changes.append(f"{f.path}: the {f.role} changed size after khotui opened it "
                               f"({f.size} -> {st.st_size} bytes)")
            elif st.st_mtime_ns != f.mtime_ns:
                changes.append(f"{f.path}: the {f.role} was written after khotui opened it")
            elif rehash and audit.sha256_fd(f.fd) != f.sha256:
                changes.append(f"{f.path}: the {f.role}'s content changed after khotui hashed it")
        return changes

    def replaced_paths(self) -> list[Problem]:
        """Paths that now name another file than the one opened (the opened one is still what
        gets loaded; the operator should know the path moved on)."""
        notes: list[Problem] = []
        for f in self.files:
            try:
                st = os.stat(f.path)
                same = (st.st_dev, st.st_ino) == (f.dev, f.ino)
            except OSError:
                same = False
            if not same:
                notes.append(Problem(
                    f"now names a different file than when khotui opened it; the {f.role} "
                    f"loaded is the one previewed (sha256 {f.sha256[:16]}), not the new one",
                    f.path, f"preview and load again to load the new {f.role}"))
        return notes

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for f in self.files:
            with contextlib.suppress(OSError):
                os.close(f.fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_for_load(kernel_path: str | os.PathLike[str],
                  initrd_path: str | os.PathLike[str] | None = None) -> OpenedFiles:
    """Open, check and hash the kernel and initrd once. Use as a context manager."""
    kernel = open_one(kernel_path, "kernel")
    try:
        initrd = None if initrd_path is None else open_one(initrd_path, "initrd")
    except BaseException:
        os.close(kernel.fd)
        raise
    return OpenedFiles(kernel, initrd)


@dataclass(frozen=True)
class LoadOutcome:
    """The kernel's answer, the audit record, and every warning to show the operator."""

    result: kexec.LoadResult
    audit: audit.AuditOutcome | None
    warnings: list[Problem]


def run_load(files: OpenedFiles, cmdline: str, *, flags: int = 0, syscalls: Syscalls,
             sink: audit.AuditSink = audit.DEFAULT_SINK,
             log: audit.AuditLog | None = None) -> LoadOutcome:
    """Load the opened files (same fds as hashed), recorded before and after.

    Refuses, before the syscall, files that changed since they were hashed. `log` is the audit
    log opened before the confirmation (None: opened from `sink` now). SIGINT, SIGTERM and
    SIGHUP are blocked from the "attempt" record through the "result" record
    (`interrupts.blocked`), and `files.attempted`/`files.result` are set inside that window:
    an interrupt delivered afterwards finds the outcome recorded. A kernel error comes back in
    `result` (ok False); `result.error(context)` explains it.
    """
    if files.closed:
        raise KhotuiError("the kernel and initrd were closed before the load",
                          fix="open them again (this is a khotui bug)")
    changes = files.changed_since_open()
    if changes:
        raise KhotuiError("; ".join(changes) + ": refusing to load what was not previewed",
                          path=files.kernel.path,
                          fix="find out who writes the file, then preview and load again")
    check_allowed(syscalls)
    own = log is None
    opened_log = sink.open() if log is None else log
    early: list[Problem] = []

    def attempt(pending: kexec.LoadResult) -> None:
        early.extend(opened_log.attempt(pending, kernel=files.kernel,
                                        initrd=files.initrd).warnings)
        files.attempted = True

    try:
        with interrupts.blocked():
            result = kexec.load(files.kernel.fd, files.initrd_fd, cmdline, flags=flags,
                                syscalls=syscalls, before=attempt)
            rec = opened_log.result(result, kernel=files.kernel, initrd=files.initrd)
            files.result = result
    finally:
        if own:
            opened_log.close()
    return LoadOutcome(result, rec, files.warnings + files.replaced_paths() + early
                       + rec.warnings)


@dataclass
class UnloadState:
    """Set inside the signal-blocked window of `run_unload` (see `OpenedFiles.result`)."""

    attempted: bool = False
    result: kexec.LoadResult | None = None


def run_unload(*, on_crash: bool = False, syscalls: Syscalls,
               sink: audit.AuditSink = audit.DEFAULT_SINK, log: audit.AuditLog | None = None,
               state: UnloadState | None = None) -> LoadOutcome:
    """Unload (KEXEC_FILE_UNLOAD), recorded before and after, as `run_load`."""
    check_allowed(syscalls)
    own = log is None
    opened_log = sink.open() if log is None else log
    state = UnloadState() if state is None else state
    early: list[Problem] = []

    def attempt(pending: kexec.LoadResult) -> None:
        early.extend(opened_log.attempt(pending).warnings)
        state.attempted = True

    try:
        with interrupts.blocked():
            result = kexec.unload(syscalls, on_crash=on_crash, before=attempt)
            rec = opened_log.result(result)
            state.result = result
    finally:
        if own:
            opened_log.close()
    return LoadOutcome(result, rec, early + list(rec.warnings))
