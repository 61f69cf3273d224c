"""One khotui load at a time: an exclusive `flock` on a file under /run.

Two overlapping `khotui load` runs would each confirm their own kernel and the last syscall
would silently win; `--exec` would then jump into the other operator's image. The lock is taken
before the kernel and initrd are opened and held through the load (and, with `--exec`, through
the execute), so a second run is refused at once and names the holder's pid.

The lock file is opened as root, so its path must not be redirectable by anyone else: the
directory must be a real directory (not a symlink) owned by root (or by the user running
khotui) and writable by nobody else, and the file is opened relative to it with
O_NOFOLLOW|O_CREAT, mode 0600, and must be a regular file. flock(2) locks go away with the
descriptor, so a killed khotui never leaves a stale lock behind. `LOCK_DIR` is a module
attribute so tests can point it at a temporary directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from typing import Self

from khotui.errors import KhotuiError

LOCK_DIR = "/run/khotui"
LOCK_NAME = "load.lock"


def _check_dir(path: str) -> int:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise KhotuiError(f"cannot create the lock directory ({exc.strerror})", path=path,
                          fix="run khotui as root (the lock lives under /run)") from None
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise KhotuiError(f"the lock directory is not a plain directory ({exc.strerror})",
                          path=path, fix=f"remove {path} (a symlink or file planted there) "
                                         "and run khotui again") from None
    st = os.fstat(dfd)
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(dfd)
        raise KhotuiError(f"the lock directory is owned by uid {st.st_uid} or writable by "
                          f"others (mode {stat.S_IMODE(st.st_mode):04o}): someone else could "
                          "plant the lock file", path=path,
                          fix=f"rm -rf {path} (khotui recreates it, mode 0700)")
    return dfd


class LoadLock:
    """The held lock; `release()` (or the end of the `with` block) lets the next load in."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, directory: str | None = None) -> LoadLock:
        directory = LOCK_DIR if directory is None else directory
        path = os.path.join(directory, LOCK_NAME)
        dfd = _check_dir(directory)
        try:
            fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                         | os.O_NONBLOCK | os.O_NOCTTY, 0o600, dir_fd=dfd)
        except OSError as exc:
            raise KhotuiError(f"cannot open the load lock ({exc.strerror})", path=path,
                              fix=f"remove {path} if it is not a regular file") from None
        finally:
            os.close(dfd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise KhotuiError("the load lock is not a regular file", path=path,
                                  fix=f"remove {path}")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                raise KhotuiError(
                    f"another khotui load is running (pid {holder}): two loads at once would "
                    "each replace the other's image", path=path,
                    fix="wait for it to finish (or stop it), then load again") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
