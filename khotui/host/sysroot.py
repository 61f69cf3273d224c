"""`Sysroot`: host paths below one root directory, read with bounded, explained errors.

A sysroot is the layout of `../shared/kho/<capture>/sysroot`: each file at its host path below
one directory. `Sysroot("/")` is the live host. Reads are size-capped so a hostile or huge file
cannot exhaust memory, and every OSError becomes a `KhotuiError` naming the host path.

Every read of a host file goes through this class, and under any root but `/` it is resolved
beneath the root (khotui.host.beneath): a link leading out of the snapshot, absolute or by
`..`, is refused with an error naming it, and nothing outside is opened. Files are opened with
O_NONBLOCK|O_NOCTTY and only a regular file is read: a FIFO, a device or a socket is refused
(a FIFO would block the read forever, a terminal would wait on the operator's, a device's open
can act: /dev/watchdog arms on open). Under a snapshot root the type is checked on an O_PATH
descriptor first, so a device node in the tree is never opened at all. procfs, sysfs and
debugfs files are regular files, so the live host reads as before, following sysfs's own
links. `path()` names a file (and serves the live host); it is not a way to read a snapshot.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import weakref
from collections.abc import Callable, Generator
from pathlib import Path

from khotui.errors import KhotuiError, explain_os_error, file_kind
from khotui.host.beneath import Escape, open_beneath

# Large enough for any text file khotui reads from procfs/sysfs/debugfs (a 24 TiB host's
# /proc/iomem is well under 4 MiB); a larger file is refused rather than read into memory.
MAX_TEXT_BYTES = 16 << 20
# One page of the largest page size (64 KiB on arm64 and powerpc): a sysfs attribute's limit.
MAX_ATTRIBUTE_BYTES = 64 << 10


_OPEN_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK | os.O_CLOEXEC
_MISSING = (FileNotFoundError, NotADirectoryError)

NOT_OURS = ("this snapshot is not one khotui wrote (a khotui snapshot holds only regular files "
            "and directories, its links recorded as files holding their target); take a new one "
            "with `khotui snapshot`, or remove this entry from the copy")


class Sysroot:
    """A root directory under which host paths such as `/proc/iomem` are read."""

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)
        self._root = str(self.root)
        self._live: bool | None = None
        self._fd: int | None = None      # the root, O_PATH, opened on the first read below it
        self._fd_lock = threading.Lock()

    @property
    def is_live(self) -> bool:
        """True when this is the running host itself (root `/`), not a snapshot."""
        if self._live is None:
            try:
                self._live = self.root.resolve() == Path("/")
            except OSError:
                return False
        return self._live

    def __repr__(self) -> str:
        return f"Sysroot({str(self.root)!r})"

    def path(self, host_path: str) -> Path:
        """The path of `host_path` (an absolute host path like `/proc/iomem`) below the root, to
        name it; under a snapshot root, read it with the methods here, never through this path."""
        return self.root / host_path.lstrip("/")

    def _real(self, host_path: str) -> str:
        """path() as a str, without pathlib: for the calls made once per memory block."""
        return os.path.join(self._root, host_path.lstrip("/"))

    def display(self, host_path: str) -> str:
        """How to name `host_path` to the operator: the host path, under the root if not live."""
        if self.is_live:
            return host_path
        return str(self.path(host_path))

    # --- opening: the one place a path below the root is resolved ----------------------------

    def _root_fd(self) -> int:
        fd = self._fd
        if fd is None:
            with self._fd_lock:
                if self._fd is None:
                    # the operator chose the root: it is opened as given, links and all
                    self._fd = os.open(self._root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                    weakref.finalize(self, os.close, self._fd)
                fd = self._fd
        return fd

    def _open(self, host_path: str, flags: int) -> int:
        """A descriptor for `host_path`: on the live host by its path, below a snapshot root
        resolved beneath it. OSError as open(2) gives it; a refusal is a KhotuiError."""
        if self.is_live:
            return os.open(self._real(host_path), flags | os.O_CLOEXEC)
        try:
            return open_beneath(self._root_fd(), host_path, flags)
        except Escape:
            raise KhotuiError("refused: a symbolic link on this path leads out of the snapshot "
                              "(an absolute link, or `..` above its root); nothing outside the "
                              "root is read", path=self.display(host_path), fix=NOT_OURS) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise KhotuiError("refused: a loop of symbolic links, more than 40 on the way, or "
                                  "a /proc magic link", path=self.display(host_path),
                                  fix=NOT_OURS) from None
            raise

    def _not_regular(self, host_path: str, mode: int) -> KhotuiError:
        if stat.S_ISDIR(mode):
            return KhotuiError("is a directory, not a file", path=self.display(host_path),
                               fix="give the path of a regular file")
        fix = (NOT_OURS if not self.is_live else
               "this host file should be a regular file (procfs, sysfs and debugfs files are); "
               "find what replaced it")
        return KhotuiError(f"refused: {file_kind(mode)}, not a regular file; not opened for reading "
                           "(it could block or act on the open)", path=self.display(host_path),
                           fix=fix)

    def open_file(self, host_path: str, *, special: bool = False) -> int:
        """A read-only descriptor (O_NONBLOCK|O_NOCTTY) of a regular file; the caller closes it.

        OSError when it cannot be opened (FileNotFoundError when absent); KhotuiError when it is
        refused: a link out of the snapshot, or not a regular file. `special`: on the live host a
        character device is wanted (/dev/kmsg); below a snapshot root it is still refused."""
        if not self.is_live:
            # the type first, on a descriptor that opens nothing: a device node in the tree
            # (a snapshot unpacked as root keeps them) is never opened
            probe = self._open(host_path, os.O_PATH)
            try:
                mode = os.fstat(probe).st_mode
            finally:
                os.close(probe)
            if not stat.S_ISREG(mode):
                raise self._not_regular(host_path, mode)
        fd = self._open(host_path, _OPEN_READ)
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            os.close(fd)
            raise
        if not (stat.S_ISREG(mode) or (special and self.is_live and stat.S_ISCHR(mode))):
            os.close(fd)
            raise self._not_regular(host_path, mode)   # swapped in since the probe
        return fd

    # --- what is there ------------------------------------------------------------------------

    def stat(self, host_path: str) -> os.stat_result | None:
        """stat(2) of the file (links followed, beneath the root); None when absent."""
        if self.is_live:
            try:
                return os.stat(self._real(host_path))
            except _MISSING:
                return None
        try:
            fd = self._open(host_path, os.O_PATH)
        except _MISSING:
            return None
        except OSError as exc:
            raise explain_os_error(exc, self.display(host_path)) from None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def lstat(self, host_path: str) -> os.stat_result | None:
        """lstat(2): the entry itself, a link not followed (its directory resolved beneath the
        root); None when absent."""
        parent, name = self._split(host_path)
        if self.is_live:
            try:
                return os.lstat(self._real(host_path))
            except _MISSING:
                return None
        try:
            fd = self._open(parent, os.O_PATH | os.O_DIRECTORY)
        except _MISSING:
            return None
        except OSError as exc:
            raise explain_os_error(exc, self.display(parent), what="directory") from None
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except _MISSING:
            return None
        except OSError as exc:
            raise explain_os_error(exc, self.display(host_path)) from None
        finally:
            os.close(fd)

    def readlink(self, host_path: str) -> str:
        """The target of the link at `host_path`, as written (not followed)."""
        parent, name = self._split(host_path)
        try:
            if self.is_live:
                return os.readlink(self._real(host_path))
            fd = self._open(parent, os.O_PATH | os.O_DIRECTORY)
            try:
                return os.readlink(name, dir_fd=fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise explain_os_error(exc, self.display(host_path), what="link") from None

    def read_links(self, host_path: str, *, limit: int) -> tuple[list[tuple[str, str]], bool]:
        """The (name, target) of the symbolic links in a directory, each read as written and
        never followed (readlinkat(2) relative to the directory, which is resolved beneath the
        root): `/proc/PID/fd` on the live host, a tree's `proc/PID/fd` under a snapshot root.
        At most `limit` links; the flag says the directory had more. An entry that vanishes or
        is not a link is skipped: processes close their files while this reads. OSError or
        KhotuiError when the directory itself cannot be opened."""
        fd = (os.open(self._real(host_path), _OPEN_DIR) if self.is_live
              else self._open(host_path, _OPEN_DIR))
        links: list[tuple[str, str]] = []
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    if len(links) >= limit:
                        return links, True
                    try:
                        links.append((entry.name, os.readlink(entry.name, dir_fd=fd)))
                    except OSError:
                        continue   # closed since the listing (ENOENT), or not a link (EINVAL)
        finally:
            os.close(fd)
        return links, False

    @staticmethod
    def _split(host_path: str) -> tuple[str, str]:
        parent, _, name = host_path.rstrip("/").rpartition("/")
        if name in ("", ".", ".."):
            raise KhotuiError("not the path of a directory entry", path=host_path,
                              fix="name a file below the root")
        return parent or "/", name

    def is_symlink(self, host_path: str) -> bool:
        st = self.lstat(host_path)
        return st is not None and stat.S_ISLNK(st.st_mode)

    def exists(self, host_path: str) -> bool:
        if self.is_live:
            return self.path(host_path).exists()
        return self.stat(host_path) is not None

    def is_dir(self, host_path: str) -> bool:
        if self.is_live:
            return self.path(host_path).is_dir()
        st = self.stat(host_path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def listdir(self, host_path: str) -> list[str]:
        """Sorted entry names of a directory; [] when it does not exist."""
        try:
            if self.is_live:
                return sorted(os.listdir(self._real(host_path)))
            fd = self._open(host_path, _OPEN_DIR)
            try:
                return sorted(os.listdir(fd))
            finally:
                os.close(fd)
        except _MISSING:
            return []
        except OSError as exc:
            raise explain_os_error(exc, self.display(host_path), what="directory") from None

    def iter_names(self, host_path: str) -> Generator[str, None, None]:
        """The entry names of a directory, unsorted, as they are read: to stop at the first one
        that matters in a directory of 10^5 entries. Nothing when it does not exist."""
        try:
            fd = (os.open(self._real(host_path), _OPEN_DIR) if self.is_live
                  else self._open(host_path, _OPEN_DIR))
        except _MISSING:
            return
        except OSError as exc:
            raise explain_os_error(exc, self.display(host_path), what="directory") from None
        try:
            with os.scandir(fd) as it:
                for entry in it:
                    yield entry.name
        except OSError as exc:
            raise explain_os_error(exc, self.display(host_path), what="directory") from None
        finally:
            os.close(fd)

    # --- reading ------------------------------------------------------------------------------

    def _read(self, host_path: str, limit: int) -> bytes:
        """The file's bytes, at most `limit`; FileNotFoundError/NotADirectoryError when absent,
        KhotuiError for anything else."""
        try:
            fd = self.open_file(host_path)
        except _MISSING:
            raise
        except OSError as exc:
            raise explain_os_error(exc, self.display(host_path)) from None
        return _read_whole(fd, limit, self.display(host_path))

    def read_bytes(self, host_path: str, *, limit: int = MAX_TEXT_BYTES) -> bytes:
        """Read a file, at most `limit` bytes; a longer file is an error, not a silent cut."""
        try:
            return self._read(host_path, limit)
        except _MISSING as exc:
            raise explain_os_error(exc, self.display(host_path)) from None

    def read_text(self, host_path: str, *, limit: int = MAX_TEXT_BYTES) -> str:
        return self.read_bytes(host_path, limit=limit).decode("utf-8", errors="replace")

    def read_optional_text(self, host_path: str) -> str | None:
        """The file's text, or None when it does not exist (other errors, a dangling link
        among them, still raise)."""
        try:
            return self._read(host_path, MAX_TEXT_BYTES).decode("utf-8", errors="replace")
        except _MISSING as exc:
            if self.is_symlink(host_path):
                raise explain_os_error(exc, self.display(host_path)) from None
            return None

    def read_attribute(self, host_path: str, *, limit: int = MAX_ATTRIBUTE_BYTES) -> str | None:
        """A sysfs attribute's text, or None when it does not exist (nor does its directory).

        read_optional_text() without pathlib, for the 10^6 small files of a huge host's memory
        blocks (a third of the time went to building Path objects). Sysfs prints an attribute
        into one page (sysfs_emit(), fs/sysfs/file.c), so a longer file is an error.
        """
        try:
            return self._read(host_path, limit).decode("utf-8", errors="replace")
        except _MISSING:
            return None

    def open_dir(self, host_path: str) -> DirReader:
        """A directory opened once (beneath the root) to read many entries of it: a memory
        block's attributes without resolving its path again for each (use it in a `with`)."""
        try:
            fd = (os.open(self._real(host_path), _OPEN_DIR) if self.is_live
                  else self._open(host_path, _OPEN_DIR))
        except _MISSING:
            fd = None
        except OSError as exc:
            raise explain_os_error(exc, self.display(host_path), what="directory") from None
        return DirReader(self, host_path, fd)

    def read_int(self, host_path: str, *, base: int = 0) -> int | None:
        """A file holding one integer (decimal, or hex with 0x), or None when absent/garbled."""
        text = self.read_optional_text(host_path)
        if text is None:
            return None
        try:
            return int(text.strip(), base)
        except ValueError:
            return None


class DirReader:
    """Entries of one directory read relative to its descriptor (Sysroot.open_dir()). Each name
    is one component opened with O_NOFOLLOW below a directory already resolved beneath the root,
    so it cannot lead out; an entry that is a link (a snapshot's, not sysfs's attributes) is
    read through the Sysroot, resolved from the root as any path."""

    def __init__(self, sysroot: Sysroot, host_path: str, fd: int | None) -> None:
        self.sysroot = sysroot
        self.host_path = host_path
        self.fd = fd
        # what names() saw of each entry, from getdents' d_type (no stat): "reg", "lnk", "other"
        self._types: dict[str, str] = {}

    def __enter__(self) -> DirReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def names(self) -> list[str]:
        """Sorted entry names; [] when the directory does not exist."""
        if self.fd is None:
            return []
        try:
            with os.scandir(self.fd) as it:
                for entry in it:
                    self._types[entry.name] = ("lnk" if entry.is_symlink() else
                                               "reg" if entry.is_file(follow_symlinks=False)
                                               else "other")
            return sorted(self._types)
        except OSError as exc:
            raise explain_os_error(exc, self.sysroot.display(self.host_path),
                                   what="directory") from None

    def attribute(self, name: str, *, limit: int = MAX_ATTRIBUTE_BYTES) -> str | None:
        """Sysroot.read_attribute() of `<dir>/<name>`: its text, None when absent."""
        host = f"{self.host_path.rstrip('/')}/{name}"
        if self.fd is None:
            return None
        root = self.sysroot
        if "/" in name or name in (".", ".."):
            return root.read_attribute(host, limit=limit)
        try:
            if root.is_live:
                fd = os.open(name, _OPEN_READ, dir_fd=self.fd)
            else:
                # the type before the open, so a device node is never opened: as names() listed
                # it (d_type, free), else from fstatat
                kind = self._types.get(name)
                if kind is None:
                    st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
                    kind = ("lnk" if stat.S_ISLNK(st.st_mode) else
                            "reg" if stat.S_ISREG(st.st_mode) else "other")
                if kind == "lnk":
                    return root.read_attribute(host, limit=limit)
                if kind == "other":
                    return root.read_attribute(host, limit=limit)   # refused there, unopened
                fd = os.open(name, _OPEN_READ | os.O_NOFOLLOW, dir_fd=self.fd)
        except _MISSING:
            return None
        except OSError as exc:
            raise explain_os_error(exc, root.display(host)) from None
        try:
            mode = os.fstat(fd).st_mode
        except OSError as exc:
            os.close(fd)
            raise explain_os_error(exc, root.display(host)) from None
        if not stat.S_ISREG(mode):
            os.close(fd)
            raise root._not_regular(host, mode)
        return _read_whole(fd, limit, root.display(host)).decode("utf-8", errors="replace")


# procfs sysctl files allocate a kernel buffer of the size asked for in read(2) and fail with
# ENOMEM beyond KMALLOC_MAX_SIZE (proc_sys_call_handler(), fs/proc/proc_sysctl.c): read in
# modest chunks until EOF instead of asking for `limit` bytes at once.
READ_CHUNK = 256 << 10


def _read_whole(fd: int, limit: int, shown: str) -> bytes:
    """All of an open file, at most `limit` bytes (more is refused, not cut); closes `fd`."""
    try:
        data = _read_capped(lambda n: os.read(fd, n), limit + 1)
    except OSError as exc:
        raise explain_os_error(exc, shown) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise KhotuiError(f"file is larger than {limit} bytes; refusing to read it whole",
                          path=shown, fix="check that this is the file you meant")
    return data


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
