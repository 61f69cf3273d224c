"""The bundled demo snapshot: a real KHO capture plus a /boot to plan with (see README.md here).

`demo_root()` materialises it once into a cache directory and returns that sysroot, so the
demo runs through exactly the code paths of `--root DIR`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from khotui import __version__
from khotui.errors import KhotuiError

HERE = Path(__file__).resolve().parent
KERNEL_RELEASE = "7.3.4"
KERNEL_SIZE = 10048512          # size of bzImage-kho-7.3.4, whose setup header we ship
INITRD_SIZE = 8 << 20           # the initrd size the two-nodes capture loaded


def _cache_base() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "khotui"


def _newc_header(name: bytes, size: int, mode: int, ino: int) -> bytes:
    fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, len(name) + 1, 0]
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name + b"\0"
    return head + b"\0" * (-len(head) % 4)


def _write_sparse_cpio(path: Path, total: int) -> None:
    """A newc archive of exactly `total` bytes: one zero-filled file, then the trailer."""
    trailer = _newc_header(b"TRAILER!!!", 0, 0, 0)
    probe = _newc_header(b"payload", 0, 0o100644, 1)
    data_len = (total - len(probe) - len(trailer)) // 4 * 4
    head = _newc_header(b"payload", data_len, 0o100644, 1)
    with open(path, "wb") as f:
        f.write(head)
        f.seek(len(head) + data_len)
        f.write(trailer)
        f.truncate(total)


def _materialise(dest: Path) -> None:
    shutil.copytree(HERE / "sysroot", dest / "sysroot", symlinks=True)
    root = dest / "sysroot"
    boot = root / "boot"
    boot.mkdir()
    kernel = boot / f"vmlinuz-{KERNEL_RELEASE}"
    with open(kernel, "wb") as f:
        f.write((HERE / "vmlinuz-7.3.4.setup").read_bytes())
        f.truncate(KERNEL_SIZE)
    _write_sparse_cpio(boot / f"initrd.img-{KERNEL_RELEASE}", INITRD_SIZE)


def _fingerprint() -> str:
    """What the bundled files are (names and sizes, ~1 ms): a cache made from other files, by
    an older checkout of the same version, is not reused (it once lacked khotui-purgatory.ro)."""
    h = hashlib.sha256(str(KERNEL_SIZE).encode())
    for path in sorted(p for p in HERE.rglob("*") if "__pycache__" not in p.parts):
        h.update(f"{path.relative_to(HERE)}\0{path.lstat().st_size}\0".encode())
    return h.hexdigest()[:12]


def demo_root() -> Path:
    """The demo sysroot, created on first use under ~/.cache/khotui (or a temp dir)."""
    key = f"demo-{__version__}-{_fingerprint()}"
    for base in (_cache_base(), Path(tempfile.gettempdir()) / f"khotui-{os.getuid()}"):
        final = base / key
        if (final / ".complete").exists():
            return final / "sysroot"
        try:
            base.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=".demo-", dir=base))
            _materialise(work)
            (work / ".complete").touch()
            try:
                work.rename(final)
            except OSError:  # another process won the race, or a stale copy is in the way
                shutil.rmtree(work, ignore_errors=True)
                if not (final / ".complete").exists():
                    shutil.rmtree(final, ignore_errors=True)
                    continue
            return final / "sysroot"
        except OSError:
            continue
    raise KhotuiError("cannot create the demo snapshot in the cache or temp directory",
                      path=str(_cache_base()), fix="set XDG_CACHE_HOME to a writable directory")
