"""The one fake kernel every load test passes where production passes `real_syscalls()`.

`khotui load`/`unload` take it as `cli.main(argv, syscalls=fake)`, the app as
`Source(root, syscalls=fake, dry_run=False)`, the core as `LoadSession.commit(syscalls=fake)`:
one way in. It records each call with what the kernel would read through the descriptors (from
offset 0, as kernel_read_file() does), and answers like the real one did in the captures: an
errno, or success after appending the capture's own KEXEC_FILE_DEBUG log to the snapshot's
`dmesg`, so khotui reads the placement back exactly as it would from /dev/kmsg.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import CAPTURES


@dataclass(frozen=True)
class KexecCall:
    kernel_fd: int
    initrd_fd: int
    cmdline: bytes
    flags: int
    kernel: bytes | None      # the whole file, read through the fd
    initrd: bytes | None


def _content(fd: int) -> bytes | None:
    return None if fd < 0 else os.pread(fd, os.fstat(fd).st_size, 0)


class FakeKernel:
    """A `khotui.load.syscall.Syscalls`: records, then answers `errno` (0: success)."""

    def __init__(self, errno: int = 0, on_load: Callable[[], None] | None = None) -> None:
        self.errno = errno
        self.on_load = on_load
        self.calls: list[KexecCall] = []

    def kexec_file_load(self, kernel_fd: int, initrd_fd: int, cmdline: bytes, flags: int) -> int:
        self.calls.append(KexecCall(kernel_fd, initrd_fd, cmdline, flags, _content(kernel_fd),
                                    _content(initrd_fd)))
        if self.errno:
            raise OSError(self.errno, os.strerror(self.errno))
        if self.on_load is not None:
            self.on_load()
        return 0

    def reboot_kexec(self) -> int:
        raise AssertionError("a test must never execute a kexec")


def logs_like(capture: str, root: Path) -> Callable[[], None]:
    """On a successful load, the capture's kernel log lands in the snapshot's /dmesg: the
    kernel's own KEXEC_FILE_DEBUG lines for the load the capture recorded."""
    log = (CAPTURES / capture / "load" / "kernel.log").read_text()

    def append() -> None:
        with open(root / "dmesg", "a") as f:
            f.write(log)
    return append
