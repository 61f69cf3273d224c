"""One `kexec_file_load(2)` call, checked before and answered after: `load()` and `unload()`.

Bad input is refused here before it reaches the kernel (every call that does consumes a
`kexec_load_limit_reboot` count, even one that fails: kexec_core.c kexec_load_permitted()); the
kernel's answer comes back as a `LoadResult`, an errno included, never raised. The syscall itself
goes through the `Syscalls` object the caller passes (`khotui.load.syscall`); `explain` puts an
errno into words.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from khotui.errors import KhotuiError
from khotui.load.explain import ExplainContext, errno_name, explain
from khotui.load.syscall import (
    KEXEC_FILE_NO_INITRAMFS,
    KEXEC_FILE_ON_CRASH,
    KEXEC_FILE_UNLOAD,
    RealSyscallForbidden,
    Syscalls,
    check_flags,
)


@dataclass(frozen=True)
class LoadResult:
    """What one `kexec_file_load` call did. `ok` False carries the errno; see `explain()`."""

    action: str  # "load", "load-crash", "unload", "unload-crash"
    ok: bool
    flags: int
    cmdline: str = ""
    cmdline_len: int = 0  # bytes passed, NUL included (0 for unload)
    kernel_fd: int = -1
    initrd_fd: int = -1
    errno: int = 0
    errno_name: str = ""
    strerror: str = ""

    @property
    def result(self) -> str:
        """`ok` or the errno name, as the audit log records it."""
        return "ok" if self.ok else (self.errno_name or f"errno {self.errno}")

    def error(self, context: ExplainContext | None = None) -> KhotuiError:
        """The failure as the project's error, explained for this host."""
        ex = explain(self.errno, context)
        return KhotuiError(f"kexec_file_load ({self.action}) failed with {ex.errno_name}: "
                           f"{ex.summary}: {ex.cause}", fix=ex.fix)


Before = Callable[[LoadResult], None]
"""Called with the pending call (`ok` False, no errno) after every check and just before the
syscall: where the "attempt" audit record is written. Raising there stops the call."""


def _call(syscalls: Syscalls, action: str, kernel_fd: int, initrd_fd: int, cmdline: str,
          encoded: bytes, flags: int, before: Before | None = None) -> LoadResult:
    cmdline_len = 0 if flags & KEXEC_FILE_UNLOAD else len(encoded) + 1
    if before is not None:
        before(LoadResult(action, ok=False, flags=flags, cmdline=cmdline, cmdline_len=cmdline_len,
                          kernel_fd=kernel_fd, initrd_fd=initrd_fd))
    try:
        syscalls.kexec_file_load(kernel_fd, initrd_fd, encoded, flags)
    except RealSyscallForbidden:
        raise
    except OSError as exc:
        code = exc.errno or 0
        return LoadResult(action, ok=False, flags=flags, cmdline=cmdline,
                          cmdline_len=cmdline_len, kernel_fd=kernel_fd, initrd_fd=initrd_fd,
                          errno=code, errno_name=errno_name(code),
                          strerror=os.strerror(code) if code else str(exc))
    return LoadResult(action, ok=True, flags=flags, cmdline=cmdline, cmdline_len=cmdline_len,
                      kernel_fd=kernel_fd, initrd_fd=initrd_fd)


def load(kernel_fd: int, initrd_fd: int | None, cmdline: str, *, flags: int = 0,
         syscalls: Syscalls, before: Before | None = None) -> LoadResult:
    """Load a kernel for the next kexec (or, with ON_CRASH, the crash kernel).

    `initrd_fd` None adds `KEXEC_FILE_NO_INITRAMFS` and passes -1. Bad input raises
    `KhotuiError` before the call: every call that reaches the kernel consumes one
    `kexec_load_limit_reboot` count, even one that fails (kexec_core.c kexec_load_permitted()).
    A kernel error is returned as `LoadResult(ok=False, errno=...)`, not raised.
    """
    check_flags(flags)
    if flags & KEXEC_FILE_UNLOAD:
        raise KhotuiError("KEXEC_FILE_UNLOAD passed to load()", fix="call unload() instead")
    if "\0" in cmdline:
        raise KhotuiError("the kernel command line contains a NUL byte",
                          fix="remove the NUL; the kernel would cut the cmdline there")
    if kernel_fd < 0:
        raise KhotuiError("no kernel file descriptor", fix="open the kernel image first")
    if initrd_fd is None:
        flags |= KEXEC_FILE_NO_INITRAMFS
        initrd_fd = -1
    elif flags & KEXEC_FILE_NO_INITRAMFS:
        raise KhotuiError("an initrd was given together with KEXEC_FILE_NO_INITRAMFS",
                          fix="drop the initrd, or drop NO_INITRAMFS")
    elif initrd_fd < 0:
        raise KhotuiError("invalid initrd file descriptor",
                          fix="open the initrd first, or load without one")
    encoded = cmdline.encode("utf-8")
    action = "load-crash" if flags & KEXEC_FILE_ON_CRASH else "load"
    return _call(syscalls, action, kernel_fd, initrd_fd, cmdline, encoded, flags, before)


def unload(syscalls: Syscalls, *, on_crash: bool = False,
           before: Before | None = None) -> LoadResult:
    """Unload the loaded kexec image (or the crash image). Also consumes a load-limit count."""
    flags = KEXEC_FILE_UNLOAD | (KEXEC_FILE_ON_CRASH if on_crash else 0)
    action = "unload-crash" if on_crash else "unload"
    return _call(syscalls, action, -1, -1, "", b"", flags, before)
