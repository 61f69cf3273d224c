"""`khotui verify`: after the kexec, did what the load's receipt recorded arrive?

`verify(receipt, status)` compares a receipt (`khotui.load.receipt.read`) with the host as the
new kernel shows it (`plan.host_status`, live or a snapshot taken after the kexec) and answers
one `Check` per question, each passed, failed (naming what) or skipped (with why). Pure: it
reads only what `status` holds plus the few files named below, through the status's Sysroot.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from khotui.errors import KhotuiError
from khotui.fdt.blobs import KEXEC_METADATA_NAME, LUO_NAME, decode_sub_blob
from khotui.host.kernellog import read_kernel_log
from khotui.load.receipt import BOOT_ID
from khotui.plan import HostStatus
from khotui.types import JsonDict

PASS, FAIL, SKIP = "pass", "fail", "skip"

# "KHO: exec from: %s (count %u)", kho_in_kexec_metadata(), kernel/liveupdate/kexec_handover.c
EXEC_FROM = re.compile(r"KHO: exec from: (\S*) \(count (\d+)\)")


@dataclass(frozen=True)
class Check:
    id: str
    status: str          # PASS | FAIL | SKIP
    message: str

    def as_dict(self) -> JsonDict:
        return {"id": self.id, "status": self.status, "message": self.message}


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """One line: what the Overview and the CLI's last line say."""
        if self.ok:
            return "verified: everything the receipt recorded arrived"
        return "NOT verified: " + ", ".join(c.id for c in self.failed) + " failed"

    def as_dict(self) -> JsonDict:
        return {"ok": self.ok, "summary": self.summary(), "failed": [c.id for c in self.failed],
                "checks": [c.as_dict() for c in self.checks]}


def _text(status: HostStatus, host: str) -> str | None:
    try:
        text = status.sysroot.read_optional_text(host)
    except (KhotuiError, OSError):
        return None
    return None if text is None else text.strip()


def _kho_booted(status: HostStatus) -> Check:
    if status.kho.in_fdt is not None or status.kho.in_sub_fdts or status.kho_booted:
        return Check("kho-booted", PASS, "this kernel booted via KHO (kho/in is there)")
    return Check("kho-booted", FAIL, "this kernel did not boot via KHO: no kho/in (a cold "
                 "boot, a kexec without KHO, or kho=on missing from the loaded command line)")


def _rebooted(rec: dict[str, Any], status: HostStatus) -> Check:
    before = rec["host"].get("boot_id")
    now = _text(status, BOOT_ID)
    if before is None or now is None:
        return Check("rebooted", SKIP, "boot id unknown "
                     + ("in the receipt" if before is None else f"here ({BOOT_ID})"))
    if before == now:
        return Check("rebooted", FAIL, f"the boot id is still the receipt's ({now}): this is "
                     "the kernel that made the load; the kexec has not happened")
    return Check("rebooted", PASS, "the boot id changed since the load")


def _last_in_log(status: HostStatus, line: re.Pattern[str]) -> tuple[str, ...] | None:
    """The groups of the kernel log's last match of `line` (None: no match, or no log): the
    fallback when debugfs no longer shows what the kernel read at boot."""
    try:
        log = read_kernel_log(status.sysroot)
    except (KhotuiError, OSError):
        return None
    found = line.findall(log or "")
    if not found:
        return None
    last = found[-1]    # findall gives a str for one group, a tuple for more
    return (last,) if isinstance(last, str) else tuple(last)


def _exec_from(status: HostStatus) -> tuple[str | None, int | None, str] | None:
    raw = status.kho.in_sub_fdts.get(KEXEC_METADATA_NAME)
    if raw is not None:
        md = decode_sub_blob(KEXEC_METADATA_NAME, raw).kexec_metadata
        if md is not None:
            return md.previous_release, md.kexec_count, "kho/in/sub_fdts/kexec-metadata"
    found = _last_in_log(status, EXEC_FROM)
    if found is not None:
        release, count = found
        return release, int(count), "the kernel log line \"KHO: exec from\""
    return None


def _kexec_metadata(rec: dict[str, Any], status: HostStatus) -> Check:
    got = _exec_from(status)
    if got is None:
        return Check("kexec-metadata", FAIL, "no incoming kexec-metadata (kho/in/sub_fdts/"
                     "kexec-metadata) and no \"KHO: exec from\" line in the kernel log")
    release, count, where = got
    want_release = rec["host"].get("release")
    before = rec["kexec"].get("count_before")
    wrong = []
    if want_release is not None and release != want_release:
        wrong.append(f"names {release!r} as the previous release, the receipt's was "
                     f"{want_release!r}")
    if before is not None and count != before + 1:
        wrong.append(f"the kexec count is {count}, expected {before + 1} (the receipt's "
                     f"{before} plus one)")
    if wrong:
        return Check("kexec-metadata", FAIL, f"{where} " + "; ".join(wrong))
    return Check("kexec-metadata", PASS,
                 f"exec from {release} (count {count}), as the receipt expects")


def banner_matches(banner: str, version: str) -> bool:
    """Whether /proc/version's `banner` is the kernel whose image says `version`.

    x86 bzImage: kernel_version = UTS_RELEASE " (" BY "@" HOST ") " UTS_VERSION
    (arch/x86/boot/version.c); the banner is "Linux version " UTS_RELEASE " (" BY "@" HOST ")
    (" LINUX_COMPILER ") " UTS_VERSION (init/version-timestamp.c, linux_banner): the same but
    for the compiler in the middle. An image whose version is the banner itself (arm64: found
    as linux_banner in the image) must match it whole."""
    banner, version = banner.strip(), version.strip()
    if version.startswith("Linux version "):
        return banner == version
    m = re.fullmatch(r"(\S+ \([^)]*\)) (.*)", version)
    if m is None:
        return banner.startswith(f"Linux version {version}")
    head, uts_version = m.groups()
    return banner.startswith(f"Linux version {head} (") and banner.endswith(f") {uts_version}")


def _kernel(rec: dict[str, Any], status: HostStatus) -> Check:
    version = rec["kernel"].get("version")
    banner = _text(status, "/proc/version")
    if not isinstance(version, str) or not version:
        return Check("kernel", SKIP, "the receipt has no version string for the loaded image")
    if banner is None:
        return Check("kernel", FAIL, "/proc/version is not readable: the running kernel cannot "
                     "be compared with the loaded one")
    if banner_matches(banner, version):
        return Check("kernel", PASS, f"running the loaded kernel ({version})")
    return Check("kernel", FAIL, f"running {banner!r}, not the loaded image {version!r}")


def _cmdline(rec: dict[str, Any], status: HostStatus) -> Check:
    now = status.boot.cmdline.strip()
    want = str(rec["cmdline"]).strip()
    if now == want:
        return Check("cmdline", PASS, "/proc/cmdline is the loaded command line")
    return Check("cmdline", FAIL, f"/proc/cmdline is {now!r}, the loaded command line was "
                 f"{want!r}")


def _blobs(rec: dict[str, Any], status: HostStatus) -> Check:
    arrived = status.kho.in_sub_fdts
    missing, wrong = [], []
    for b in rec["kho"]["blobs"]:
        data = arrived.get(b["name"])
        if data is None:
            missing.append(b["name"])
        elif len(data) != b["size"]:
            wrong.append(f"{b['name']} is {len(data)} bytes, was {b['size']}")
        elif b.get("stable", True) and hashlib.sha256(data).hexdigest() != b["sha256"]:
            wrong.append(f"{b['name']} has other content (sha256 differs)")
    if missing or wrong:
        parts = ([f"missing from kho/in/sub_fdts: {', '.join(missing)}"] if missing else []) + wrong
        return Check("blobs", FAIL, "; ".join(parts))
    names = ", ".join(b["name"] for b in rec["kho"]["blobs"]) or "none"
    return Check("blobs", PASS, f"every outgoing sub-blob arrived ({names})")


# pr_info("Retrieved live update data, liveupdate number: %lld\n") with pr_fmt "luo: ",
# luo_early_startup(), kernel/liveupdate/luo_core.c: printed from the incoming struct luo_ser
# before the kernel frees it
RETRIEVED = re.compile(r"luo: Retrieved live update data, liveupdate number: (-?\d+)")


def _incoming_luo_number(status: HostStatus) -> tuple[int | None, str]:
    """The live-update number the kernel read at boot, and where khotui found it: the incoming
    LUO blob as khotui.host.luo reads it (debugfs kho/in shows a freed page, so it may be
    derived from the outgoing blob), else the kernel's own log line."""
    incoming = status.luo.incoming
    if incoming is not None and incoming.ser.liveupdate_num is not None:
        where = ("kho/in/sub_fdts/LUO" if incoming.source == "blob"
                 else "kho/out/sub_fdts/LUO minus one")
        return incoming.ser.liveupdate_num, where
    found = _last_in_log(status, RETRIEVED)
    if found is not None:
        return int(found[0]), "the kernel log line \"luo: Retrieved live update data\""
    return None, ""


def _luo(rec: dict[str, Any], status: HostStatus) -> Check:
    luo = rec.get("luo")
    if not luo:
        return Check("luo", SKIP, "LUO not on (the receipt has no LUO blob)")
    if LUO_NAME not in status.kho.in_sub_fdts:
        return Check("luo", FAIL, "the LUO blob did not arrive (kho/in/sub_fdts/LUO)")
    got, where = _incoming_luo_number(status)
    # luo_state_setup() writes incoming + 1 into the outgoing blob; the next kernel reads it in
    # luo_early_startup() (kernel/liveupdate/luo_core.c): what it reads is what the receipt
    # recorded going out
    want = luo.get("outgoing_number")
    if got is None:
        return Check("luo", FAIL, "the LUO blob arrived but the live-update number the kernel "
                     "read is unknown: kho/in/sub_fdts/LUO no longer holds it (the kernel "
                     "frees it at boot), there is no outgoing LUO blob (liveupdate=on missing?) "
                     "and no \"luo: Retrieved live update data\" line in the kernel log")
    if want is None or got != want:
        return Check("luo", FAIL, f"the live-update number is {got} ({where}), expected {want}")
    return Check("luo", PASS, f"the live-update number rose by one (now {got}, {where})")


def verify(rec: dict[str, Any], status: HostStatus) -> Verdict:
    return Verdict([_kho_booted(status), _rebooted(rec, status), _kexec_metadata(rec, status),
                    _kernel(rec, status), _cmdline(rec, status), _blobs(rec, status),
                    _luo(rec, status)])
