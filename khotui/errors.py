"""The one error type khotui raises for anything an operator has to act on.

Every failure that reaches the user says what happened, to which file, and what to do about it.
Code that reads the host or decodes input converts low-level exceptions (OSError, struct.error,
ValueError...) into a `KhotuiError` at the point where it still knows the file; the CLI and the
TUI print `str(error)` and never a traceback.
"""

from __future__ import annotations

import errno as _errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """Something the operator has to know or act on, as data: what happened, to which file, and
    the fix. Kept as an object from the reader to the screen and the JSON (never a string to be
    split again); `KhotuiError.problem` is the same three fields."""

    message: str
    path: str | None = None
    fix: str | None = None

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text

    @property
    def headline(self) -> str:
        """One line: the path and the message, without the fix."""
        return f"{self.path}: {self.message}" if self.path else self.message

    def as_dict(self) -> dict[str, str | None]:
        return {"message": self.message, "path": self.path, "fix": self.fix}


class KhotuiError(Exception):
    """A failure with a message for the operator, the file it concerns, and the fix."""

    def __init__(self, message: str, *, path: str | os.PathLike[str] | None = None,
                 fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.fix = fix

    @property
    def problem(self) -> Problem:
        return Problem(self.message, self.path, self.fix)

    def __str__(self) -> str:
        return str(self.problem)

    def as_dict(self) -> dict[str, str | None]:
        return self.problem.as_dict()


_FILE_KINDS = {
    stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device node", stat.S_IFBLK: "a block device node",
    stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link",
}


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words for the operator ("a FIFO (named pipe)"), from its
    st_mode; the one wording for every refusal of a file that is not a regular file."""
    return _FILE_KINDS.get(stat.S_IFMT(mode), "a special file")


def explain_os_error(exc: OSError, path: str | os.PathLike[str] | Path, *,
                     what: str = "file") -> KhotuiError:
    """Turn an OSError raised while reading `path` into a KhotuiError with a fix."""
    code = exc.errno
    if code in (_errno.EACCES, _errno.EPERM):
        return KhotuiError(f"cannot read this {what}: permission denied", path=path,
                           fix="run khotui as root (sudo khotui ...), or review a snapshot taken as root")
    if code == _errno.ENOENT:
        return KhotuiError(f"no such {what}", path=path, fix="check the path")
    if code == _errno.EISDIR:
        return KhotuiError(f"is a directory, not a {what}", path=path,
                           fix="give the path of a regular file")
    if code == _errno.ELOOP:
        return KhotuiError("symbolic link loop", path=path, fix="point at the real file")
    if code == _errno.ENXIO or code == _errno.ENODEV:
        return KhotuiError(f"not a readable {what} (device or special file)", path=path,
                           fix="give the path of a regular file")
    reason = exc.strerror or type(exc).__name__
    return KhotuiError(f"cannot read this {what}: {reason}", path=path,
                       fix="check that the file exists and is readable")


def one_line(exc: BaseException) -> str:
    """Why something could not be read, in one line: a KhotuiError's message, an OSError's
    strerror, else the exception's text (skip lists, tried-paths lists)."""
    if isinstance(exc, KhotuiError):
        return exc.message
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


class ReasonError(Exception):
    """A reader's one-line reason why it got nothing (an image that cannot be decompressed,
    no purgatory in it), for an assumption or a check's message; not an operator error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
