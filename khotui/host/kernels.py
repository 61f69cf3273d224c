"""Installed kernels the operator may kexec into.

Two sources: `/boot/vmlinuz-<version>` paired with `/boot/initrd.img-<version>` (Debian) or
`/boot/initramfs-<version>.img` (Fedora, Arch), and Boot Loader Specification type #1 entries
`loader/entries/*.conf` under `/boot`, `/efi` and `/boot/efi`, whose `linux`/`initrd` paths are
relative to the partition holding the `loader/` directory. Newest version first.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass

from khotui.host.sysroot import Sysroot

BLS_ROOTS = ("/boot", "/efi", "/boot/efi")
MAX_ENTRY_BYTES = 64 << 10

_CHUNK = re.compile(r"\d+|[A-Za-z]+|~")


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key: numeric chunks compare as numbers, so 6.10.0 > 6.1.0-18-amd64; `~`/`rc` sort first."""
    key: list[tuple[int, int, str]] = []
    for chunk in _CHUNK.findall(version.replace("~rc", "~")):
        if chunk == "~" or chunk.lower() == "rc":
            key.append((-1, 0, ""))          # 6.10~rc1 (Debian) and 6.10.0-rc1 < 6.10.0
        elif chunk.isdigit():
            key.append((2, int(chunk), ""))  # a number is newer than a letter chunk (rpmvercmp)
        else:
            key.append((1, 0, chunk))
    key.append((0, 0, ""))                    # end: newer than '~', older than any chunk
    return tuple(key)


@dataclass
class InstalledKernel:
    version: str
    kernel_path: str              # host path
    initrd_path: str | None
    size: int | None              # kernel file size
    mtime: float | None
    running: bool
    source: str                   # 'boot' | 'bls'
    title: str | None = None
    options: str | None = None    # BLS `options` (the entry's command line)
    entry_path: str | None = None  # BLS entry file

    def as_dict(self) -> dict[str, str | int | float | bool | None]:
        return {"version": self.version, "kernel_path": self.kernel_path,
                "initrd_path": self.initrd_path, "size": self.size, "mtime": self.mtime,
                "running": self.running, "source": self.source, "title": self.title,
                "options": self.options, "entry_path": self.entry_path}


def _stat(sysroot: Sysroot, host: str) -> tuple[int | None, float | None]:
    # Beneath a snapshot root: a kernel path leading out of it (a link, or a BLS `linux ../..`)
    # is a KhotuiError naming it, so the list never offers a host file as a snapshot's kernel.
    st = sysroot.stat(host)
    if st is None:
        return None, None
    return st.st_size, st.st_mtime


def _check_beneath(sysroot: Sysroot, host: str | None) -> None:
    """Under a snapshot root, a KhotuiError when `host` leads out of it (the loader opens the
    listed paths itself, so a link out must not reach the list)."""
    if host is not None and not sysroot.is_live:
        sysroot.stat(host)


def parse_bls_entry(text: str) -> dict[str, list[str]]:
    """A BLS type #1 entry as {key: [values]}: `key value` lines, `#` comments."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        if "\t" in key:
            key, _, rest = key.partition("\t")
            value = rest + " " + value
        fields.setdefault(key, []).append(value.strip())
    return fields


def _running(osrelease: str | None, version: str) -> bool:
    return bool(osrelease) and version == osrelease


def _boot_kernels(sysroot: Sysroot, osrelease: str | None) -> list[InstalledKernel]:
    names = sysroot.listdir("/boot")
    present = set(names)
    found = []
    for name in names:
        if not name.startswith("vmlinuz-"):
            continue
        version = name[len("vmlinuz-"):]
        if not version:
            continue
        kernel = f"/boot/{name}"
        if sysroot.is_dir(kernel):
            continue
        initrd = None
        for candidate in (f"initrd.img-{version}", f"initramfs-{version}.img", f"initrd-{version}",
                          f"initrd-{version}.img"):
            if candidate in present:
                initrd = f"/boot/{candidate}"
                break
        size, mtime = _stat(sysroot, kernel)
        _check_beneath(sysroot, initrd)
        found.append(InstalledKernel(version=version, kernel_path=kernel, initrd_path=initrd,
                                     size=size, mtime=mtime, running=_running(osrelease, version),
                                     source="boot"))
    return found


def _join(base: str, rel: str) -> str:
    return f"{base.rstrip('/')}/{rel.lstrip('/')}"


def _bls_kernels(sysroot: Sysroot, osrelease: str | None) -> list[InstalledKernel]:
    found = []
    seen_dirs = set()
    for base in BLS_ROOTS:
        entries_dir = f"{base}/loader/entries"
        st = sysroot.stat(entries_dir)   # one directory reached from two roots is read once
        if st is None or not stat.S_ISDIR(st.st_mode):
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            continue
        seen_dirs.add(key)
        for name in sysroot.listdir(entries_dir):
            if not name.endswith(".conf"):
                continue
            entry_host = f"{entries_dir}/{name}"
            fields = parse_bls_entry(sysroot.read_text(entry_host, limit=MAX_ENTRY_BYTES))
            linux = fields.get("linux", [None])[0]
            if not linux:
                continue  # an EFI or UKI entry: not a kexec-able kernel+initrd pair
            kernel = _join(base, linux)
            initrds = fields.get("initrd", [])
            version = fields.get("version", [None])[0] or name[:-len(".conf")]
            size, mtime = _stat(sysroot, kernel)
            initrd = _join(base, initrds[0]) if initrds else None
            _check_beneath(sysroot, initrd)
            found.append(InstalledKernel(
                version=version, kernel_path=kernel,
                initrd_path=initrd,
                size=size, mtime=mtime, running=_running(osrelease, version), source="bls",
                title=fields.get("title", [None])[0],
                options=" ".join(fields.get("options", [])) or None, entry_path=entry_host))
    return found


def find_kernels(sysroot: Sysroot) -> list[InstalledKernel]:
    """Installed kernels, newest version first; BLS entries before a bare /boot pair of a version."""
    osrelease = (sysroot.read_optional_text("/proc/sys/kernel/osrelease") or "").strip() or None
    kernels = _bls_kernels(sysroot, osrelease) + _boot_kernels(sysroot, osrelease)
    kernels.sort(key=lambda k: (version_key(k.version), k.source == "bls", k.kernel_path),
                 reverse=True)
    return kernels
