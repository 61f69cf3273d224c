"""`open_beneath`: open a path below a directory descriptor, never resolving out of it.

A snapshot (`--root DIR`) is a directory anyone may have written: a symbolic link in it must
not make khotui read a file of the host it runs on (`proc/cmdline -> /etc/shadow`,
`-> ../../secret`), a terminal (`-> /dev/tty`) or a device whose open has an effect
(`-> /dev/watchdog` arms it). The rule, for every component of the path and of every link
followed on the way:

* a relative link that stays below the root is followed, as sysfs's own links are
  (`node/node0/memory5 -> ../../memory/memory5` in a linked copy of a capture);
* a link, or a `..`, that leads above the root is refused;
* an absolute link is refused, not re-rooted: in a tree copied from a host it names a file of
  that host, so reading "the same path under the root" would show a file that was never the
  link's target; khotui's own snapshots never hold one (links are recorded as files holding
  their target), and refusing is the answer that can never read the wrong file;
* a procfs "magic" link (`/proc/<pid>/fd/N`, `.../root`: not a path but a reference to an open
  file) is refused.

Linux 5.6+ does exactly this in the kernel: openat2(2) with RESOLVE_BENEATH (EXDEV on an
absolute link or a `..` above the directory) and RESOLVE_NO_MAGICLINKS (ELOOP on a magic link),
include/uapi/linux/openat2.h. Python 3.11 has no wrapper, so it is called through ctypes. On an
older kernel (ENOSYS), or where a seccomp filter refuses the call (EPERM, as older container
profiles do), the same rule is applied one component at a time in user space: each component
opened with O_NOFOLLOW relative to the directory already checked, each link read and its target
walked the same way (at most 40 links, the kernel's MAXSYMLINKS).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
import threading
from collections.abc import Callable

# include/uapi/linux/openat2.h
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
# The generic syscall number of openat2 (scripts/syscall.tbl, every architecture since 5.1 but
# alpha). Unknown machines use the user-space walk.
_SYS_OPENAT2 = 437
_OPENAT2_MACHINES = {"x86_64", "aarch64", "arm64", "riscv64", "ppc64le", "ppc64", "s390x",
                     "loongarch64", "i686", "i386", "armv7l", "armv8l"}
MAXSYMLINKS = 40   # include/linux/namei.h


class Escape(OSError):
    """The path, or a link on it, leads out of the root (an absolute link, or `..` above it)."""

    def __init__(self) -> None:
        super().__init__(errno.EXDEV, "leads out of the root")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_lock = threading.Lock()
_syscall: Callable[..., int] | None = None
_openat2_works: bool | None = None   # None: not tried yet


def _openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    assert _syscall is not None
    how = _OpenHow(flags, 0, resolve)
    # syscall(2) is variadic and the kernel reads full registers: pass longs, not C ints
    fd = int(_syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_long(dirfd), os.fsencode(path),
                      ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return fd


def _have_openat2() -> bool:
    """Does openat2 work here? Tried once: opening "." below the current directory."""
    global _syscall, _openat2_works
    if _openat2_works is not None:
        return _openat2_works
    with _lock:
        if _openat2_works is None:
            works = False
            if os.uname().sysname == "Linux" and platform.machine() in _OPENAT2_MACHINES:
                try:
                    libc = ctypes.CDLL(None, use_errno=True)
                    func = libc.syscall
                    func.restype = ctypes.c_long
                    _syscall = func
                    top = os.open("/", os.O_PATH | os.O_CLOEXEC)
                    try:
                        os.close(_openat2(top, ".", os.O_PATH | os.O_CLOEXEC, RESOLVE_BENEATH))
                    finally:
                        os.close(top)
                    works = True
                except (OSError, AttributeError):
                    works = False   # ENOSYS (before 5.6), EPERM (seccomp), no libc syscall()
            _openat2_works = works
    return _openat2_works


def use_walk(force: bool) -> None:
    """Tests: force the user-space walk (True), or try openat2 again (False)."""
    global _openat2_works
    _openat2_works = False if force else None


def open_beneath(rootfd: int, rel: str, flags: int) -> int:
    """Open `rel` (relative to the directory `rootfd`) with `flags`, resolved beneath it.

    Raises `Escape` when the path or a link on it leads out, OSError(ELOOP) on a magic link or
    too many links, and the ordinary OSError (ENOENT, ENOTDIR, EACCES...) otherwise."""
    rel = rel.strip("/") or "."
    flags |= os.O_CLOEXEC
    if _have_openat2():
        try:
            return _openat2(rootfd, rel, flags, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise Escape() from None
            raise
    return _walk(rootfd, rel, flags)


def _walk(rootfd: int, rel: str, flags: int) -> int:
    """open_beneath() in user space: one component at a time, links read and walked."""
    pending = [c for c in rel.split("/") if c and c != "."]
    pending.reverse()                     # the next component is at the end
    fds = [rootfd]                        # the directories walked so far; fds[0] is not ours
    links = 0
    try:
        while pending:
            name = pending.pop()
            if name == ".":
                continue
            if name == "..":
                if len(fds) == 1:
                    raise Escape()
                os.close(fds.pop())
                continue
            st = os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAXSYMLINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name)
                target = os.readlink(name, dir_fd=fds[-1])
                if target.startswith("/"):
                    raise Escape()
                more = [c for c in target.split("/") if c and c != "."]
                pending.extend(reversed(more))
                continue
            if pending:
                # O_NOFOLLOW: had it become a link since the stat, this fails instead of
                # following it (O_DIRECTORY|O_NOFOLLOW on a link: ENOTDIR or ELOOP)
                fds.append(os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                   dir_fd=fds[-1]))
                continue
            fd = os.open(name, flags | os.O_NOFOLLOW, dir_fd=fds[-1])
            if flags & os.O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode):
                os.close(fd)             # O_PATH|O_NOFOLLOW opens a link that raced in
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name)
            return fd
        return os.open(".", flags, dir_fd=fds[-1])
    finally:
        for fd in fds[1:]:
            os.close(fd)
