"""The receipt of a load: what was handed over, written after a successful real load, read back
by `khotui verify` in the next kernel.

`build()` gathers it from the session's plan (the host read just before the syscall: release,
boot id, the outgoing KHO blobs, LUO), the opened files (their sha256, hashed on the very
descriptors loaded) and the kernel's answer (the placement read back). `write()` stores it as
root, safely: every directory on the way is opened with O_NOFOLLOW and must be root's (or the
caller's) and writable by nobody else (a sticky world-writable directory like /tmp may be passed
through: nobody can move our entries there); a directory khotui makes is 0700; the file is
written to a fresh O_EXCL temporary beside it, mode 0600, fsync'ed, then renamed over the
receipt, so a reader never sees half a receipt and nothing is ever written through a link.
An existing receipt that is not a regular file of ours is refused, not replaced. (Those rules are
khotui.host.safewrite's, shared with the node_exporter textfile.) `read()` loads
one back, refusing (`ReceiptError`, exit 2) what is missing, unreadable, foreign or corrupt.

Format (`schema` khotui.receipt/1; a new field keeps the 1, see cli/jsonout.py):
  written_at (UTC, ISO 8601), host {release, boot_id, banner}, kexec {count_before,
  count_next, previous_release}, kho {compatible, blobs [{name, size, sha256, stable}]},
  luo null | {compatible, incoming_number, outgoing_number, sessions}, kernel {path, resolved,
  size, sha256, version}, initrd null | {path, resolved, size, sha256}, cmdline,
  placement {predicted [{name, mem, memsz}], actual null | [{name, mem, memsz, bufsz}],
  matches_prediction}.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
from typing import Any

from khotui.errors import KhotuiError
from khotui.fdt.blobs import KEXEC_METADATA_NAME, LUO_NAME, decode_sub_blob
from khotui.host.safewrite import Destination, replace_file
from khotui.host.sysroot import Sysroot
from khotui.types import JsonDict

KIND = "receipt"
# the cli/jsonout.py naming (load sits below cli, so it is spelled here)
SCHEMA = "khotui.receipt/1"
# A module attribute, read at each call, so tests point it at a temporary directory.
DEFAULT_PATH = "/var/lib/khotui/receipt.json"
DIR_MODE = 0o700
FILE_MODE = 0o600
MAX_RECEIPT_BYTES = 4 << 20
BOOT_ID = "/proc/sys/kernel/random/boot_id"

# A blob whose bytes the kernel rewrites between the load and the kexec arrives with another
# hash; only name and size are compared for it. LUO: luo_ser.sessions_pa is 0 until
# liveupdate_reboot() serialises the sessions at reboot(KEXEC) (kernel/liveupdate/luo_core.c,
# luo_fdt_setup() leaves it for luo_session_setup_outgoing()). kexec-metadata and the test
# blobs are written once at boot (kho_out_kexec_metadata(), kernel/liveupdate/
# kexec_handover.c): the captures show them arriving byte for byte.
UNSTABLE_BLOBS = frozenset({LUO_NAME})


class ReceiptError(KhotuiError):
    """A receipt that cannot be used: missing, unreadable, foreign or corrupt (exit 2)."""


def default_path() -> str:
    return DEFAULT_PATH


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _meta(blobs: dict[str, bytes]) -> tuple[str | None, int | None]:
    raw = blobs.get(KEXEC_METADATA_NAME)
    if raw is None:
        return None, None
    md = decode_sub_blob(KEXEC_METADATA_NAME, raw).kexec_metadata
    return (None, None) if md is None else (md.previous_release, md.kexec_count)


def _luo_number(blobs: dict[str, bytes]) -> tuple[str | None, int | None] | None:
    raw = blobs.get(LUO_NAME)
    if raw is None:
        return None
    luo = decode_sub_blob(LUO_NAME, raw).luo
    return (None, None) if luo is None else (luo.compatible, luo.liveupdate_num)


def luo_sessions(status: object) -> list[Any]:
    """The session names the status lists (`status.luo.sessions`, when that part is there)."""
    # read defensively: the status's LUO part (#12 item 1) may be absent, an object or a dict
    luo = getattr(status, "luo", None)
    sessions = (luo.get("sessions") if isinstance(luo, dict)
                else getattr(luo, "sessions", None) if luo is not None else None)
    out: list[Any] = []
    for s in sessions or ():
        name = getattr(s, "name", None) if not isinstance(s, dict) else s.get("name")
        out.append(name if name is not None else str(s))
    return out


def build(plan: Any, files: Any, done: Any, *, written_at: str | None = None) -> JsonDict:
    """The receipt of one successful load: `plan` the session's PlanResult (its status read
    just before the syscall), `files` its OpenedFiles, `done` the CommitResult."""
    status = plan.status
    sysroot: Sysroot = status.sysroot
    kho = status.kho
    out_blobs: dict[str, bytes] = dict(kho.out_sub_fdts)
    in_blobs: dict[str, bytes] = dict(kho.in_sub_fdts)
    _, count_next = _meta(out_blobs)
    prev_release, count_in = _meta(in_blobs)
    # a cold boot has no incoming metadata: the kernel's kho_in.kexec_count is 0 then
    # (kho_out_kexec_metadata(), kernel/liveupdate/kexec_handover.c)
    count_before = count_in if count_in is not None else (
        0 if not status.kho_booted else None)
    luo_out = _luo_number(out_blobs)
    # not the raw kho/in blob: the kernel frees that page at boot (khotui.host.luo._incoming)
    incoming = getattr(getattr(status, "luo", None), "incoming", None)
    luo_in = None if incoming is None else (incoming.ser.compatible, incoming.ser.liveupdate_num)
    boot_id = sysroot.read_optional_text(BOOT_ID)
    banner = sysroot.read_optional_text("/proc/version")
    k, i = files.kernel, files.initrd
    actual = done.actual
    return {
        "schema": SCHEMA,
        "written_at": written_at or _now(),
        "host": {"release": status.boot.osrelease,
                 "boot_id": None if boot_id is None else boot_id.strip(),
                 "banner": None if banner is None else banner.strip()},
        "kexec": {"count_before": count_before, "count_next": count_next,
                  "previous_release": prev_release},
        "kho": {"compatible": status.kho_abi,
                "blobs": [{"name": name, "size": len(data),
                           "sha256": hashlib.sha256(data).hexdigest(),
                           "stable": name not in UNSTABLE_BLOBS}
                          for name, data in sorted(out_blobs.items())]},
        "luo": None if luo_out is None else {
            "compatible": luo_out[0], "outgoing_number": luo_out[1],
            "incoming_number": None if luo_in is None else luo_in[1],
            "sessions": luo_sessions(status)},
        "kernel": {"path": k.path, "resolved": k.resolved, "size": k.size, "sha256": k.sha256,
                   "version": plan.kernel.version},
        "initrd": None if i is None else {"path": i.path, "resolved": i.resolved,
                                          "size": i.size, "sha256": i.sha256},
        "cmdline": plan.cmdline,
        "placement": {
            "predicted": [{"name": s.name, "mem": s.mem, "memsz": s.memsz}
                          for s in plan.segments()],
            "actual": None if actual is None else [
                {"name": s.name, "mem": s.mem, "memsz": s.memsz, "bufsz": s.bufsz}
                for s in actual.segments],
            "matches_prediction": done.matches_prediction},
    }


# -- writing -------------------------------------------------------------------------------------

WRITE_FIX = ("pass --receipt FILE in a directory only root can write (the default "
             f"{DEFAULT_PATH} is made 0700)")
# the directory rules and the temporary-then-rename are khotui.host.safewrite's, shared with
# the node_exporter textfile
DESTINATION = Destination(what="the receipt", option="--receipt", fix=WRITE_FIX,
                          file_mode=FILE_MODE, dir_mode=DIR_MODE)


def write(path: str | os.PathLike[str], receipt: JsonDict) -> str:
    """Store `receipt` at `path` (module docstring); returns the path written. Raises
    KhotuiError naming the path and the fix."""
    data = (json.dumps(receipt, indent=2) + "\n").encode()
    return replace_file(path, data, DESTINATION)


# -- reading -------------------------------------------------------------------------------------

READ_FIX = ("give the receipt `khotui load` wrote (--receipt FILE; default "
            f"{DEFAULT_PATH})")


def read(path: str | os.PathLike[str]) -> JsonDict:
    """The receipt at `path`, checked to be one (ReceiptError otherwise)."""
    shown = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        raise ReceiptError(f"cannot read the receipt: {exc.strerror or exc}", path=shown,
                           fix=READ_FIX) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ReceiptError("is not a regular file", path=shown, fix=READ_FIX)
        try:
            raw = os.read(fd, MAX_RECEIPT_BYTES + 1)
        except OSError as exc:
            raise ReceiptError(f"cannot read the receipt: {exc.strerror or exc}", path=shown,
                               fix=READ_FIX) from None
    finally:
        os.close(fd)
    if len(raw) > MAX_RECEIPT_BYTES:
        raise ReceiptError(f"is larger than {MAX_RECEIPT_BYTES} bytes: not a receipt",
                           path=shown, fix=READ_FIX)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReceiptError(f"is not JSON ({exc}): corrupt or not a receipt", path=shown,
                           fix=READ_FIX) from None
    if not isinstance(obj, dict) or obj.get("schema") != SCHEMA:
        got = obj.get("schema") if isinstance(obj, dict) else type(obj).__name__
        raise ReceiptError(f"is not a khotui receipt (schema {got!r}, expected "
                           f"{SCHEMA!r})", path=shown, fix=READ_FIX)
    problems = _shape_problems(obj)
    if problems:
        raise ReceiptError("is corrupt: " + "; ".join(problems), path=shown, fix=READ_FIX)
    return obj


def _shape_problems(obj: dict[str, Any]) -> list[str]:
    out = []
    for key, kind in (("host", dict), ("kexec", dict), ("kho", dict), ("kernel", dict),
                      ("cmdline", str), ("placement", dict)):
        if not isinstance(obj.get(key), kind):
            out.append(f"{key} is missing or not a {kind.__name__}")
    if out:
        return out
    blobs = obj["kho"].get("blobs")
    if not isinstance(blobs, list) or not all(
            isinstance(b, dict) and isinstance(b.get("name"), str)
            and isinstance(b.get("size"), int) and isinstance(b.get("sha256"), str)
            for b in blobs):
        out.append("kho.blobs is not a list of {name, size, sha256}")
    for key in ("count_before", "count_next"):
        if obj["kexec"].get(key) is not None and not isinstance(obj["kexec"].get(key), int):
            out.append(f"kexec.{key} is not an integer")
    luo = obj.get("luo")
    if luo is not None and not isinstance(luo, dict):
        out.append("luo is not an object")
    return out
