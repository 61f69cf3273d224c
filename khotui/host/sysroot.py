"""`Sysroot`: host paths below one root directory, read with bounded, explained errors.

A sysroot is the layout of `../shared/kho/<capture>/sysroot`: each file at its host path below
one directory. `Sysroot("/")` is the live host. Reads are size-capped so a hostile or huge file
cannot exhaust memory, and every OSError becomes a `KhotuiError` naming the host path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from khotui.errors import KhotuiError, explain_os_error

# Large enough for any text file khotui reads from procfs/sysfs/debugfs (a 24 TiB host's
# /proc/iomem is well under 4 MiB); a larger file is refused rather than read into memory.
MAX_TEXT_BYTES = 16 << 20
# One page of the largest page size (64 KiB on arm64 and powerpc): a sysfs attribute's limit.
MAX_ATTRIBUTE_BYTES = 64 << 10


class Sysroot:
    """A root directory under which host paths such as `/proc/iomem` are read."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)
        self._root = str(self.root)

    @property
    def is_live(self) -> bool:
        """True when this is the running host itself (root `/`), not a snapshot."""
        try:
            return self.root.resolve() == Path("/")
        except OSError:
            return False

    def __repr__(self) -> str:
        return f"Sysroot({str(self.root)!r})"

    def path(self, host_path: str) -> Path:
        """The real path of `host_path` (an absolute host path like `/proc/iomem`)."""
        return self.root / host_path.lstrip("/")

    def _real(self, host_path: str) -> str:
        """path() as a str, without pathlib: for the calls made once per memory block."""
        return os.path.join(self._root, host_path.lstrip("/"))

    def display(self, host_path: str) -> str:
        """How to name `host_path` to the operator: the host path, under the root if not live."""
        if self.is_live:
            return host_path
        return str(self.path(host_path))

    def exists(self, host_path: str) -> bool:
        return self.path(host_path).exists()

    def is_dir(self, host_path: str) -> bool:
        return self.path(host_path).is_dir()

    def listdir(self, host_path: str) -> list[str]:
        """Sorted entry names of a directory; [] when it does not exist."""
        try:
            return sorted(os.listdir(self._real(host_path)))
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            return []
        except OSError as exc:
            raise explain_os_error(exc, self.display(host_path), what="directory") from None

    def read_bytes(self, host_path: str, *, limit: int = MAX_TEXT_BYTES) -> bytes:
        """Read a file, at most `limit` bytes; a longer file is an error, not a silent cut."""
        real = self.path(host_path)
        try:
            with open(real, "rb", buffering=0) as f:
                data = _read_capped(f.read, limit + 1)
        except OSError as exc:
            raise explain_os_error(exc, self.display(host_path)) from None
        if len(data) > limit:
            raise KhotuiError(f"file is larger than {limit} bytes; refusing to read it whole",
                              path=self.display(host_path),
                              fix="check that this is the file you meant")
        return data

    def read_text(self, host_path: str, *, limit: int = MAX_TEXT_BYTES) -> str:
        return self.read_bytes(host_path, limit=limit).decode("utf-8", errors="replace")

    def read_optional_text(self, host_path: str) -> str | None:
        """The file's text, or None when it does not exist (other errors still raise)."""
        try:
            return self.read_text(host_path)
        except KhotuiError:
            if not self.path(host_path).exists() and not self.path(host_path).is_symlink():
                return None
            raise

    def read_attribute(self, host_path: str, *, limit: int = MAX_ATTRIBUTE_BYTES) -> str | None:
        """A sysfs attribute's text, or None when it does not exist (nor does its directory).

        read_optional_text() without pathlib, for the 10^6 small files of a huge host's memory
        blocks (a third of the time went to building Path objects). Sysfs prints an attribute
        into one page (sysfs_emit(), fs/sysfs/file.c), so a longer file is an error.
        """
        try:
            fd = os.open(self._real(host_path), os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise explain_os_error(exc, self.display(host_path)) from None
        try:
            data = _read_capped(lambda n: os.read(fd, n), limit + 1)
        except OSError as exc:
            raise explain_os_error(exc, self.display(host_path)) from None
        finally:
            os.close(fd)
        if len(data) > limit:
            raise KhotuiError(f"file is larger than {limit} bytes; refusing to read it whole",
                              path=self.display(host_path),
                              fix="check that this is the file you meant")
        return data.decode("utf-8", errors="replace")

    def read_int(self, host_path: str, *, base: int = 0) -> int | None:
        """A file holding one integer (decimal, or hex with 0x), or None when absent/garbled."""
        text = self.read_optional_text(host_path)
        if text is None:
            return None
        try:
            return int(text.strip(), base)
        except ValueError:
            return None


# procfs sysctl files allocate a kernel buffer of the size asked for in read(2) and fail with
# ENOMEM beyond KMALLOC_MAX_SIZE (proc_sys_call_handler(), fs/proc/proc_sysctl.c): read in
# modest chunks until EOF instead of asking for `limit` bytes at once.
READ_CHUNK = 256 << 10


def _read_capped(read: Callable[[int], bytes], cap: int) -> bytes:
    """Call `read(n)` (a file's read, or os.read on a descriptor) until EOF or `cap` bytes."""
    chunks: list[bytes] = []
    size = 0
    while size < cap:
        chunk = read(min(READ_CHUNK, cap - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
