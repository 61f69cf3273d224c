"""Writing one file as root into a directory someone else might try to subvert: the rule, once.

Used by the receipt (khotui.load.receipt) and the node_exporter textfile (khotui.cli.textfile).
`replace_file()` walks from / to the file's directory one O_NOFOLLOW step at a time. Every
directory on the way must be root's or the caller's (its owner could otherwise swap an entry for
a link); one that others can write to is passed through only when sticky (they cannot move our
entries there, as in /tmp) and never holds the file. Links above the file's directory are
resolved once at the start (/var -> /data/var is common); every step below is opened
O_NOFOLLOW, so a link swapped in later is refused. A missing directory is made with
`Destination.dir_mode`, or refused when that is None (a directory someone else's installation
owns, like node_exporter's textfile directory).

The file is written to a fresh temporary beside it (`.NAME.PID.tmp`, created O_EXCL|O_NOFOLLOW
through the directory's descriptor, mode set with fchmod whatever the umask), fsync'ed, then
renamed over NAME and the directory fsync'ed: a reader sees the old file or the new one, never
half of one, and nothing is ever written through a link. An existing NAME that is a link, not a
regular file, or another user's is refused, not replaced.

Every refusal is a KhotuiError naming the path and the fix, worded for `Destination.what`.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from khotui.errors import KhotuiError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Destination:
    """How one kind of file is written and how its refusals read.

    `what`: the file in words ("the receipt"); `option`: the flag that moves it ("--receipt");
    `fix`: the general fix for a directory that cannot be trusted; `file_mode`: the file's
    mode; `dir_mode`: the mode of a directory made on the way, None to refuse a missing one
    with `missing_fix`."""

    what: str
    option: str
    fix: str
    file_mode: int
    dir_mode: int | None
    missing_fix: str | None = None

    def refuse(self, message: str, path: str | os.PathLike[str],
               fix: str | None = None) -> KhotuiError:
        return KhotuiError(message, path=path, fix=fix or self.fix)


def open_directory(target: Path, dest: Destination) -> int:
    """A descriptor of `target`'s directory, walked and checked as the module docstring says."""
    euid = os.geteuid()
    parent = target.parent
    real = Path(os.path.realpath(parent.parent)) / parent.name
    fd = os.open("/", _DIR_FLAGS)
    where = Path("/")
    try:
        parts = real.parts[1:]
        for n, name in enumerate(parts):
            where = where / name
            made = False
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if dest.dir_mode is None:
                    raise dest.refuse("does not exist", where, dest.missing_fix) from None
                try:
                    os.mkdir(name, dest.dir_mode, dir_fd=fd)
                except OSError as exc:
                    raise dest.refuse(f"cannot create {dest.what}'s directory: "
                                      f"{exc.strerror or exc}", where) from None
                made = True
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                # Linux answers ENOTDIR, not ELOOP, for a link opened O_DIRECTORY|O_NOFOLLOW
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise dest.refuse(f"is a symbolic link or not a directory: {dest.what} is "
                                      "never written through a link", where,
                                      f"remove {where} or pass {dest.option} elsewhere") from None
                raise dest.refuse(f"cannot open: {exc.strerror or exc}", where) from None
            os.close(fd)
            fd = nxt
            st = os.fstat(fd)
            last = n == len(parts) - 1
            if made and dest.dir_mode is not None:
                os.fchmod(fd, dest.dir_mode)
            elif st.st_uid not in (0, euid):
                raise dest.refuse(f"is owned by uid {st.st_uid}: its owner could swap "
                                  f"{dest.what}'s path for a link", where)
            others = stat.S_IMODE(st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH)
            if others and (last or not st.st_mode & stat.S_ISVTX):
                raise dest.refuse(f"is writable by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                                  f"they could replace {dest.what}", where)
        return fd
    except BaseException:
        os.close(fd)
        raise


def replace_file(path: str | os.PathLike[str], data: bytes, dest: Destination) -> str:
    """Store `data` at `path` (module docstring); returns the absolute path written. Raises
    KhotuiError naming the path and the fix; on any refusal or failure the old file, if any,
    is untouched and no temporary is left."""
    target = Path(os.path.abspath(path))
    if not target.name:
        raise dest.refuse("is not a file name", path)
    dfd = open_directory(target, dest)
    tmp = f".{target.name}.{os.getpid()}.tmp"
    try:
        try:
            st = os.stat(target.name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        if st is not None and (not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid())):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else (
                "not a regular file" if not stat.S_ISREG(st.st_mode) else
                f"owned by uid {st.st_uid}")
            raise dest.refuse(f"exists and is {kind}: {dest.what} is never written through it "
                              "nor over it", target,
                              f"remove {target}, or pass {dest.option} elsewhere")
        try:
            fd = os.open(tmp, _TMP_FLAGS, dest.file_mode, dir_fd=dfd)
        except OSError as exc:
            raise dest.refuse(f"cannot create {dest.what}: {exc.strerror or exc}",
                              target) from None
        try:
            os.fchmod(fd, dest.file_mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError as exc:
            os.unlink(tmp, dir_fd=dfd)
            raise dest.refuse(f"cannot write {dest.what}: {exc.strerror or exc}", target,
                              f"free space there, or pass {dest.option} elsewhere") from None
        finally:
            os.close(fd)
        try:
            os.rename(tmp, target.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except OSError as exc:
            os.unlink(tmp, dir_fd=dfd)
            raise dest.refuse(f"cannot put {dest.what} in place: {exc.strerror or exc}",
                              target) from None
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return str(target)
