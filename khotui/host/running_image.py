"""The running kernel's purgatory (x86_64), read from the host: exact where it can be.

`kexec_file_load` on x86_64 adds the purgatory the running kernel embeds
(kexec_load_purgatory() → kexec_purgatory_setup_kbuf(), kernel/kexec_file.c); its size moves
every later segment. `running_purgatory(sysroot)` takes it from, in order:

1. the running kernel's image below the root: /boot/vmlinuz-R, /lib/modules/R/vmlinuz,
   /usr/lib/modules/R/vmlinuz (kernel-install's layout: Fedora, Arch, systemd distros),
   /boot/vmlinux-R, the BOOT_IMAGE= of /proc/cmdline (as given, and below /boot, where a
   separate boot partition makes it relative), /boot/vmlinuz, /vmlinuz, /boot/vmlinuz-linux.
   R is /proc/sys/kernel/osrelease. An image is used only when one of its `linux_banner`
   strings equals /proc/version (both printed from the same build strings: init/version.c
   linux_proc_banner, init/version-timestamp.c linux_banner), so a rebuilt kernel of the same
   release is not taken for the running one;
2. the record a snapshot keeps (`<root>/khotui-purgatory.ro`, the purgatory ELF bytes, with
   its provenance in khotui-snapshot.json);
3. on the live host only, /proc/kcore at the addresses /proc/kallsyms gives `kexec_purgatory`
   and `kexec_purgatory_size` (kcore is refused under lockdown confidentiality, kallsyms shows
   zeros without CAP_SYSLOG or with kptr_restrict);
4. an earlier KEXEC_FILE_DEBUG load in the kernel log (khotui.host.kernellog);
5. the 7.3.4 test build's numbers, as an assumption naming what was tried and how to provide it.

Every read is through the Sysroot (beneath the root, regular files only), bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from khotui.errors import KhotuiError, one_line
from khotui.host.sysroot import Sysroot
from khotui.image.decompress import DecompressError
from khotui.image.purgatory import (
    MAX_PURGATORY_BYTES,
    PurgatoryError,
    PurgatoryLayout,
    cached_image_purgatory,
    purgatory_layout,
    read_image_purgatory,
)
from khotui.types import DEFAULT_PURGATORY, Purgatory

PURGATORY_RECORD = "/khotui-purgatory.ro"
SNAPSHOT_MANIFEST = "/khotui-snapshot.json"
# bzImages are 10-20 MB, an uncompressed arm64 Image 30-60 MB: larger is not a kernel image
MAX_IMAGE_BYTES = 128 << 20
_CHUNK = 1 << 20
_UNREADABLE: dict[tuple[int, int, int, int], str] = {}


@dataclass(frozen=True)
class PurgatoryReading:
    """The purgatory ELF read exactly from the host, and where it came from."""

    elf: bytes
    layout: PurgatoryLayout
    source: str                         # 'image', 'record', 'kcore'
    where: str                          # the path read, as the operator names it
    image_sha256: str | None = None
    banner: str | None = None

    def provenance(self) -> dict[str, str | int | None]:
        return {"source": self.source, "path": self.where, "sha256": self.image_sha256,
                "banner": self.banner, "bufsz": self.layout.bufsz, "memsz": self.layout.memsz,
                "align": self.layout.buf_align}

    def purgatory(self) -> Purgatory:
        lay = self.layout
        what = {"image": "the running kernel's image", "record": "the snapshot's record of the "
                "running kernel's purgatory", "kcore": "the running kernel's memory"}[self.source]
        return Purgatory(bufsz=lay.bufsz, memsz=lay.memsz, align=lay.buf_align, exact=True,
                         source=f"read from {what}, {self.where} (bufsz 0x{lay.bufsz:x}, memsz "
                                f"0x{lay.memsz:x}, align {lay.buf_align})")


@dataclass
class Tried:
    """What was looked at on the way, for the assumption when nothing exact was found."""

    notes: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)     # host paths not there

    def add(self, note: str) -> None:
        self.notes.append(note)

    def said(self, sysroot: Sysroot) -> str:
        parts = []
        if self.missing:
            below = "" if sysroot.is_live else f" below {sysroot.root}"
            parts.append(f"{', '.join(self.missing[:4])}"
                         f"{' ...' if len(self.missing) > 4 else ''} not found{below}")
        parts += self.notes[:4]
        return "; ".join(parts) or "nothing to read"


def _text(sysroot: Sysroot, path: str, tried: Tried | None = None) -> str | None:
    """A small host file, None when absent or refused (a link out of a snapshot: noted)."""
    try:
        return sysroot.read_optional_text(path)
    except (KhotuiError, OSError) as exc:
        if tried is not None:
            tried.add(f"{sysroot.display(path)}: {one_line(exc)}")
        return None


def _release(sysroot: Sysroot) -> str | None:
    text = _text(sysroot, "/proc/sys/kernel/osrelease")
    release = (text or "").strip()
    return release if release and "/" not in release and release not in (".", "..") else None


def image_candidates(release: str | None, cmdline: str | None) -> list[str]:
    """Where distros keep the running kernel's image, most specific first."""
    out: list[str] = []
    if release:
        out += [f"/boot/vmlinuz-{release}", f"/lib/modules/{release}/vmlinuz",
                f"/usr/lib/modules/{release}/vmlinuz", f"/boot/vmlinux-{release}"]
    m = re.search(r"(?:^|\s)BOOT_IMAGE=(\S+)", cmdline or "")
    if m:
        path = m.group(1)
        path = path.split(")", 1)[-1]          # GRUB's "(hd0,gpt2)/vmlinuz-..."
        if path.startswith("/") and ".." not in path.split("/"):
            out += [path, "/boot" + path]
    out += ["/boot/vmlinuz", "/vmlinuz", "/boot/vmlinuz-linux"]
    return list(dict.fromkeys(out))


def _proc_version(sysroot: Sysroot, tried: Tried) -> str | None:
    text = _text(sysroot, "/proc/version", tried)
    return None if text is None else text.strip()


def read_running_image(sysroot: Sysroot, tried: Tried) -> PurgatoryReading | None:
    """The purgatory of the running kernel's image below the root, verified by its banner."""
    version = _proc_version(sysroot, tried)
    cmdline = _text(sysroot, "/proc/cmdline", tried)
    release = _release(sysroot)
    for path in image_candidates(release, cmdline):
        reading = _try_image(sysroot, path, version, tried)
        if reading is not None:
            return reading
    return None


def _try_image(sysroot: Sysroot, path: str, version: str | None,
               tried: Tried) -> PurgatoryReading | None:
    shown = sysroot.display(path)
    try:
        st = sysroot.stat(path)
    except (KhotuiError, OSError) as exc:
        tried.add(f"{shown}: {one_line(exc)}")
        return None
    if st is None:
        tried.missing.append(path)
        return None
    if st.st_size > MAX_IMAGE_BYTES:
        tried.add(f"{shown}: {st.st_size} bytes, larger than any kernel image; not read")
        return None
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _UNREADABLE:
        tried.add(f"{shown}: {_UNREADABLE[key]}")
        return None
    digest: list[str] = []

    def read() -> bytes:
        data = _read_file(sysroot, path, MAX_IMAGE_BYTES)
        digest.append(hashlib.sha256(data).hexdigest())
        return data

    try:
        image = cached_image_purgatory(key) or read_image_purgatory(read(), key=key,
                                                                     extra=digest)
    except (KhotuiError, OSError) as exc:
        tried.add(f"{shown}: {one_line(exc)}")
        return None
    except DecompressError as exc:
        # kept per file identity: a plan runs per keystroke in the app, and an image that cannot
        # be read inside costs a full read each time otherwise
        if len(_UNREADABLE) < 64:
            _UNREADABLE[key] = exc.reason
        tried.add(f"{shown}: {exc.reason}")
        return None
    if version is None:
        tried.add(f"{shown}: /proc/version could not be read, so the image cannot be shown to "
                  f"be the running kernel")
        return None
    banner = next((b for b in image.banners if f"Linux version {b}" == version), None)
    if banner is None:
        said = image.banners[-1] if image.banners else "no Linux version banner"
        tried.add(f"{shown} is not the running kernel (its banner {said!r} is not /proc/version's)")
        return None
    if image.found is None or image.layout is None:
        tried.add(f"{shown}: no embedded purgatory found in its {image.how}")
        return None
    sha = image.extra[0] if image.extra else None
    return PurgatoryReading(elf=image.found.elf, layout=image.layout, source="image",
                            where=shown, image_sha256=sha, banner=banner)


def _read_file(sysroot: Sysroot, path: str, limit: int) -> bytes:
    fd = sysroot.open_file(path)
    try:
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, _CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise KhotuiError(f"larger than {limit} bytes; not a kernel image",
                                  path=sysroot.display(path),
                                  fix="check that this is the file you meant")
        return b"".join(chunks)
    finally:
        os.close(fd)


# --- the snapshot's record ----------------------------------------------------------------


def read_purgatory_record(sysroot: Sysroot, tried: Tried) -> PurgatoryReading | None:
    """`<root>/khotui-purgatory.ro`, written by `khotui snapshot` on the host."""
    shown = sysroot.display(PURGATORY_RECORD)
    try:
        if not sysroot.exists(PURGATORY_RECORD):
            return None
        elf = sysroot.read_bytes(PURGATORY_RECORD, limit=MAX_PURGATORY_BYTES)
    except (KhotuiError, OSError) as exc:
        tried.add(f"{shown}: {one_line(exc)}")
        return None
    try:
        layout = purgatory_layout(elf)
    except PurgatoryError as exc:
        tried.add(f"{shown} is not a purgatory ELF ({exc.reason}); take the snapshot again")
        return None
    prov = _manifest_provenance(sysroot)
    return PurgatoryReading(elf=elf, layout=layout, source="record", where=shown,
                            image_sha256=_str(prov.get("sha256")), banner=_str(prov.get("banner")))


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _manifest_provenance(sysroot: Sysroot) -> dict[str, object]:
    try:
        text = _text(sysroot, SNAPSHOT_MANIFEST)
        data = json.loads(text) if text else None
    except (KhotuiError, OSError, ValueError):
        return {}
    prov = data.get("purgatory") if isinstance(data, dict) else None
    return prov if isinstance(prov, dict) else {}


# --- /proc/kcore --------------------------------------------------------------------------

_KALLSYMS = re.compile(r"^([0-9a-fA-F]{1,16}) \S (kexec_purgatory|kexec_purgatory_size)$",
                       re.MULTILINE)
MAX_KALLSYMS_BYTES = 64 << 20
PT_LOAD = 1


def _kallsyms_addresses(text: str) -> dict[str, int]:
    return {m.group(2): int(m.group(1), 16) for m in _KALLSYMS.finditer(text)}


def _kcore_reader(fd: int) -> Callable[[int, int], bytes]:
    """pread by kernel virtual address through the ELF core's PT_LOAD headers
    (fs/proc/kcore.c: one per kernel text, vmalloc, direct-map range)."""
    head = os.pread(fd, 64, 0)
    if len(head) < 64 or not head.startswith(b"\x7fELF\x02\x01"):
        raise PurgatoryError("not an ELF64 little-endian core")
    e_phoff, = struct.unpack_from("<Q", head, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", head, 54)
    if e_phentsize != 56 or not 0 < e_phnum <= 4096:
        raise PurgatoryError("its program headers are not ELF64 ones")
    table = os.pread(fd, e_phentsize * e_phnum, e_phoff)
    loads = []
    for i in range(e_phnum):
        if (i + 1) * 56 > len(table):
            break
        p_type, _fl, p_offset, p_vaddr, _pa, p_filesz, _m, _al = struct.unpack_from(
            "<IIQQQQQQ", table, i * 56)
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_filesz, p_offset))

    def read(vaddr: int, size: int) -> bytes:
        for start, length, offset in loads:
            if start <= vaddr and vaddr + size <= start + length:
                data = os.pread(fd, size, offset + vaddr - start)
                if len(data) != size:
                    raise PurgatoryError(f"short read at 0x{vaddr:x}")
                return data
        raise PurgatoryError(f"0x{vaddr:x} is in none of its PT_LOAD segments")
    return read


def read_kcore_purgatory(kallsyms_path: str, kcore_path: str) -> bytes:
    """The `kexec_purgatory[]` bytes of the running kernel, from its memory. Paths, so a test
    can give a synthetic pair; PurgatoryError (one line) when it cannot be had."""
    try:
        with open(kallsyms_path, "rb") as f:
            text = f.read(MAX_KALLSYMS_BYTES).decode("ascii", "replace")
    except OSError as exc:
        raise PurgatoryError(f"{kallsyms_path}: {exc.strerror or exc}") from None
    addrs = _kallsyms_addresses(text)
    if "kexec_purgatory" not in addrs or "kexec_purgatory_size" not in addrs:
        raise PurgatoryError(f"{kallsyms_path} has no kexec_purgatory symbols (a kernel "
                             f"without CONFIG_KEXEC_FILE)")
    if not addrs["kexec_purgatory"] or not addrs["kexec_purgatory_size"]:
        raise PurgatoryError(f"{kallsyms_path} shows the addresses as 0 (kptr_restrict, or "
                             f"no CAP_SYSLOG)")
    try:
        fd = os.open(kcore_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        hint = " (refused under lockdown, or not root)" if exc.errno in (1, 13) else ""
        raise PurgatoryError(f"{kcore_path}: {exc.strerror or exc}{hint}") from None
    try:
        read = _kcore_reader(fd)
        size, = struct.unpack("<Q", read(addrs["kexec_purgatory_size"], 8))
        if not 0 < size <= MAX_PURGATORY_BYTES:
            raise PurgatoryError(f"kexec_purgatory_size is {size}, not a purgatory's")
        return read(addrs["kexec_purgatory"], size)
    except OSError as exc:
        raise PurgatoryError(f"{kcore_path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def read_live_purgatory(sysroot: Sysroot, tried: Tried, *,
                        kallsyms: str = "/proc/kallsyms",
                        kcore: str = "/proc/kcore") -> PurgatoryReading | None:
    if not sysroot.is_live:
        return None
    try:
        elf = read_kcore_purgatory(kallsyms, kcore)
        layout = purgatory_layout(elf)
    except PurgatoryError as exc:
        tried.add(exc.reason)
        return None
    return PurgatoryReading(elf=elf, layout=layout, source="kcore", where=kcore)


# --- the order ----------------------------------------------------------------------------


def exact_purgatory(sysroot: Sysroot, tried: Tried | None = None) -> PurgatoryReading | None:
    """The running kernel's purgatory from an exact source (image, record, kcore), or None."""
    tried = tried if tried is not None else Tried()
    return (read_running_image(sysroot, tried) or read_purgatory_record(sysroot, tried)
            or read_live_purgatory(sysroot, tried))


def running_purgatory(sysroot: Sysroot, log_purgatory: Callable[[], Purgatory | None]) -> Purgatory:
    """The purgatory segment for the plan: exact when read, else learnt from the kernel log
    (`log_purgatory`, called only then), else the 7.3.4 test build's, saying what was tried."""
    tried = Tried()
    reading = exact_purgatory(sysroot, tried)
    if reading is not None:
        return reading.purgatory()
    release = _release(sysroot) or "R"
    how = (f"install the running kernel's image at /boot/vmlinuz-{release}, or take the "
           f"snapshot on the host (`khotui snapshot`, which records the purgatory)")
    looked = tried.said(sysroot)
    learnt = log_purgatory()
    if learnt is not None:
        return replace(learnt, source=f"{learnt.source}; the running kernel's image was not "
                                      f"read ({looked}); to read it exactly, {how}")
    d = DEFAULT_PURGATORY
    return replace(d, source=f"size from the 7.3.4 test build (bufsz 0x{d.bufsz:x}, memsz "
                             f"0x{d.memsz:x}, align {d.align}), not read from the running "
                             f"kernel: {looked}; {how}")
