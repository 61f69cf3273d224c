"""The Live Update Orchestrator (LUO) as the running kernel shows it, read-only.

`read_luo(sysroot, ...)` answers: is LUO on, which process holds `/dev/liveupdate`, which LUO
sessions are open and by whom, and the decoded `LUO` KHO sub-blob going out and coming in.
khotui never opens `/dev/liveupdate`: its open is an act (luo_open(), kernel/liveupdate/
luo_core.c, takes the one-holder slot, a second open gets EBUSY, and the first open
deserialises the incoming sessions). Everything here comes from `/proc/*/fd` link texts, read
with readlinkat(2) and never followed (Sysroot.read_links()), from `/proc/PID/comm` and
`/proc/PID/cgroup`, and from the KHO debugfs blobs khotui.host.kho already read.

What the kernel does (Linux 7.3):

* `liveupdate=` is an early_param: kstrtobool() into luo_global.enabled, last accepted value
  wins, off without one (early_liveupdate_param(), luo_core.c). luo_early_startup() turns it
  off when KHO is off; luo_late_startup() builds the outgoing `struct luo_ser` and registers it
  as the KHO sub-blob `LUO` (luo_state_setup(): kho_add_subtree(LUO_KHO_ENTRY_NAME, ...)) and
  liveupdate_ioctl_init() registers the misc device "liveupdate" (`/dev/liveupdate`), both only
  when LUO is on. CONFIG_LIVEUPDATE (depends on KEXEC_HANDOVER) builds it.
* A session is an anonymous file named "[luo_session] NAME" (luo_session_getfile(),
  luo_session.c): its fd link reads `anon_inode:[luo_session] NAME`. Closing its last fd
  destroys an outgoing session (luo_session_release()). No ioctl lists sessions.
* The incoming `LUO` blob is restored whenever KHO is on, with or without `liveupdate=on`
  (luo_early_startup() checks only kho_is_enabled()), read once and its page FREED
  (luo_early_startup(): kho_restore_free(luo_ser)). debugfs `kho/in/sub_fdts/LUO` still points
  at that page (kho_in_debugfs_init(), kexec_handover_debugfs.c: phys_to_virt(blob_phys)), so
  it shows whatever the page holds now: in the VM tier the intact struct in one boot, 32 zero
  bytes in the next. `incoming` is therefore the blob only when it agrees with what the kernel
  kept; else it is derived from the outgoing blob (see _incoming()), and says so.

A snapshot cannot copy /proc whole: `write_luo_record()` records the sessions and the device
holder as `khotui-luo.json` at the snapshot's root, and under `--root` `read_luo()` reads that
record (bounded, validated) when it is there, else the tree's own `proc/` and `dev/`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from khotui.cmdline import liveupdate_requested
from khotui.errors import KhotuiError, Problem
from khotui.fdt.blobs import LUO_NAME, LuoSer, decode_sub_blob
from khotui.host.sysroot import Sysroot
from khotui.types import JsonDict

DEVICE = "/dev/liveupdate"       # misc device "liveupdate", liveupdate_ioctl_init()
# anon_inode_getfile("[luo_session] %s") (luo_session_getfile()); anon_inodefs_dname()
# (fs/anon_inodes.c) prefixes "anon_inode:" in the fd link
SESSION_LINK_PREFIX = "anon_inode:[luo_session] "
SESSION_NAME_MAX = 63            # LIVEUPDATE_SESSION_NAME_LENGTH 64, with its NUL
RECORD = "/khotui-luo.json"
RECORD_FORMAT = "khotui-luo/1"
MAX_RECORD_BYTES = 1 << 20
MAX_RECORD_ENTRIES = 4096
PID_MAX_LIMIT = 4 << 20          # include/linux/threads.h, 64-bit
# The scan's bounds: a host has at most PID_MAX_LIMIT processes, each up to nr_open (2^20 by
# default) fds. Beyond these the scan stops and says it is incomplete, rather than taking
# minutes: a readlink of an fd costs about 7 µs (measured: 1,000 processes x 100 fds in 0.67 s),
# so the cap is a few seconds; a production host (10^3-10^4 processes, 10^5 fds) is well below.
MAX_PROCESSES = 100_000
MAX_LINKS = 1_000_000
MAX_LINKS_PER_PROCESS = 1 << 20
# systemd unit suffixes (src/basic/unit-def.c unit_type_table) that a cgroup path can name
_UNIT_SUFFIXES = (".service", ".scope", ".socket", ".mount", ".swap")


@dataclass(frozen=True)
class LuoProcess:
    """A process holding a LUO file: its pid, comm and systemd unit (None when unknown)."""

    pid: int
    comm: str | None
    unit: str | None

    def as_dict(self) -> JsonDict:
        return {"pid": self.pid, "comm": self.comm, "unit": self.unit}


@dataclass(frozen=True)
class LuoSession:
    """One open session fd: the session's name and the process holding it."""

    name: str
    holder: LuoProcess

    def as_dict(self) -> JsonDict:
        return {"name": self.name, **self.holder.as_dict()}


@dataclass
class LuoBlob:
    """The `LUO` sub-blob decoded (struct luo_ser, include/linux/kho/abi/luo.h). `source` says
    where the values come from: the blob itself, or (incoming only) the outgoing blob."""

    size: int
    ser: LuoSer
    warnings: list[str] = field(default_factory=list)
    source: str = "blob"

    def as_dict(self) -> JsonDict:
        return {"compatible": self.ser.compatible, "liveupdate_number": self.ser.liveupdate_num,
                "sessions_pa": self.ser.sessions_pa, "flbs_pa": self.ser.flbs_pa,
                "size": self.size, "source": self.source, "warnings": list(self.warnings)}


@dataclass
class LuoState:
    """What khotui knows of LUO on one host. `enabled` None: it cannot be told (and why)."""

    enabled: bool | None = False
    evidence: list[str] = field(default_factory=list)
    off_message: str | None = None
    requested: bool | None = None            # liveupdate= on this kernel's command line
    device_present: bool | None = None       # /dev/liveupdate exists (None: not seen)
    device_holders: list[LuoProcess] = field(default_factory=list)
    sessions: list[LuoSession] = field(default_factory=list)
    source: str | None = None                # "proc", "record" or None (nothing scanned)
    processes_scanned: int = 0
    unreadable: int = 0                      # processes whose fds could not be listed
    complete: bool = True
    note: str | None = None
    outgoing: LuoBlob | None = None
    incoming: LuoBlob | None = None
    problem: Problem | None = None           # a snapshot's record refused, and why

    @property
    def device_holder(self) -> LuoProcess | None:
        return self.device_holders[0] if self.device_holders else None

    def as_dict(self) -> JsonDict:
        holder = self.device_holder
        return {
            "enabled": self.enabled,
            "evidence": list(self.evidence),
            "off_reason": self.off_message,
            "device_present": self.device_present,
            "device_holder": None if holder is None else holder.as_dict(),
            "sessions": [s.as_dict() for s in self.sessions],
            "scan": {"source": self.source, "processes": self.processes_scanned,
                     "unreadable": self.unreadable, "complete": self.complete,
                     "note": self.note},
            "outgoing": None if self.outgoing is None else self.outgoing.as_dict(),
            "incoming": None if self.incoming is None else self.incoming.as_dict(),
        }


def unit_of(cgroup_text: str) -> str | None:
    """The systemd unit of a process from its /proc/PID/cgroup: the first cgroup path component
    below the slices that names a unit, as systemd's cg_path_get_unit() takes it
    (`0::/system.slice/luod.service` -> luod.service, `/init.scope` -> init.scope,
    `.../user@1000.service/app.slice/x.service` -> user@1000.service). The unified (`0::`)
    line first, else the v1 `name=systemd` hierarchy."""
    path = None
    for line in cgroup_text.splitlines():
        ident, _, rest = line.partition(":")
        controllers, _, cpath = rest.partition(":")
        if ident == "0" and controllers == "":
            path = cpath
            break
        if controllers == "name=systemd" and path is None:
            path = cpath
    if not path:
        return None
    for part in path.strip("/").split("/"):
        if part.endswith(".slice"):
            continue
        return part if part.endswith(_UNIT_SUFFIXES) else None
    return None


def _text(value: str) -> str:
    """A name as the operator can read it: bytes that are not UTF-8 (readlink() gave them as
    surrogates) shown as \\x escapes."""
    return os.fsencode(value).decode("utf-8", errors="backslashreplace")


def _process(sysroot: Sysroot, pid: int) -> LuoProcess:
    comm: str | None
    unit: str | None
    try:
        raw = sysroot.read_attribute(f"/proc/{pid}/comm", limit=4096)
        comm = None if raw is None else raw.rstrip("\n")[:64]
    except (KhotuiError, OSError):
        comm = None
    try:
        cgroup = sysroot.read_attribute(f"/proc/{pid}/cgroup", limit=64 << 10)
        unit = None if cgroup is None else unit_of(cgroup)
    except (KhotuiError, OSError):
        unit = None
    return LuoProcess(pid, comm, unit)


def scan_proc(sysroot: Sysroot, state: LuoState) -> None:
    """Every /proc/PID/fd's link texts, bounded: the device holder(s) and the session fds.
    A process that exits or cannot be read is skipped silently (counted in `unreadable`)."""
    holders: list[int] = []
    sessions: list[tuple[str, int]] = []
    links_read = 0
    state.source = "proc"
    try:
        names = sysroot.iter_names("/proc")
        for name in names:
            if not (name.isascii() and name.isdigit()):
                continue
            if state.processes_scanned >= MAX_PROCESSES or links_read >= MAX_LINKS:
                state.complete = False
                state.note = (f"stopped after {state.processes_scanned:,} processes and "
                              f"{links_read:,} open files: the holders of LUO files beyond "
                              "them are not shown")
                break
            state.processes_scanned += 1
            try:
                links, cut = sysroot.read_links(f"/proc/{name}/fd", limit=MAX_LINKS_PER_PROCESS)
            except (KhotuiError, OSError):
                state.unreadable += 1
                continue
            if cut:
                state.complete = False
            links_read += len(links)
            pid = int(name)
            for _fd, target in links:
                if target == DEVICE:
                    holders.append(pid)
                elif target.startswith(SESSION_LINK_PREFIX):
                    sessions.append((_text(target[len(SESSION_LINK_PREFIX):]), pid))
    except (KhotuiError, OSError) as exc:
        state.complete = False
        state.note = f"/proc could not be listed: {exc}"
    procs = {pid: _process(sysroot, pid) for pid in sorted({*holders, *(p for _, p in sessions)})}
    state.device_holders = [procs[p] for p in sorted(set(holders))]
    state.sessions = [LuoSession(n, procs[p]) for n, p in sorted(set(sessions),
                                                                 key=lambda s: (s[1], s[0]))]
    if state.unreadable and not state.sessions and not state.device_holders:
        state.note = state.note or (f"the open files of {state.unreadable} processes could not "
                                    "be read (run as root to see every holder)")


def _device_present(sysroot: Sysroot) -> bool | None:
    """Whether /dev/liveupdate exists (lstat only: the node is never opened). None under a
    snapshot root without a dev/ directory: the snapshot does not say."""
    try:
        if not sysroot.is_live and not sysroot.is_dir("/dev"):
            return None
        return sysroot.lstat(DEVICE) is not None
    except (KhotuiError, OSError):
        return None


def _blob(blobs: dict[str, bytes]) -> LuoBlob | None:
    data = blobs.get(LUO_NAME)
    if data is None:
        return None
    sub = decode_sub_blob(LUO_NAME, data)
    if sub.luo is None:
        return None
    return LuoBlob(len(data), sub.luo, list(sub.warnings))


FREED_NOTE = ("kho/in/sub_fdts/LUO no longer holds the struct the kernel read at boot "
              "(luo_early_startup() frees it: kho_restore_free(); debugfs still shows that page)")


def _incoming(in_blobs: dict[str, bytes], outgoing: LuoBlob | None) -> LuoBlob | None:
    """The incoming `struct luo_ser` as the kernel read it (see the module docstring).

    With an outgoing blob, the kernel accepted the incoming one: luo_early_startup() turns
    LUO off (no outgoing blob) when the incoming compatible is not its LUO_ABI_COMPATIBLE or
    its sessions fail to restore, and luo_state_setup() writes liveupdate_num = incoming + 1.
    So the incoming compatible is the outgoing one and its number the outgoing one minus one;
    the debugfs bytes are used only when they say exactly that (then sessions_pa and flbs_pa
    are theirs too). Without an outgoing blob nothing checks them: they are shown with a
    warning when they look like a luo_ser, else as unknown."""
    blob = _blob(in_blobs)
    if blob is None:
        return None
    ser = blob.ser
    if outgoing is not None:
        want = outgoing.ser
        number = None if want.liveupdate_num is None else want.liveupdate_num - 1
        if ser.compatible == want.compatible and ser.liveupdate_num == number:
            return blob
        return LuoBlob(blob.size, LuoSer(want.compatible, number, None, None),
                       [*blob.warnings, f"{FREED_NOTE}: compatible and live-update number "
                        "taken from kho/out/sub_fdts/LUO (luo_state_setup() writes the incoming "
                        "number plus one); sessions_pa and flbs_pa unknown"],
                       source="outgoing")
    if ser.compatible and ser.compatible.startswith("luo-"):
        return LuoBlob(blob.size, ser, [
            *blob.warnings, "read from kho/in/sub_fdts/LUO, a page the kernel freed after "
            "reading it at boot (luo_early_startup(): kho_restore_free()); nothing here "
            "confirms it is still what the kernel read"])
    return LuoBlob(blob.size, LuoSer(None, None, None, None),
                   [*blob.warnings, f"{FREED_NOTE}: the live-update number is unknown here "
                    "(the kernel log's \"luo: Retrieved live update data, liveupdate number: "
                    "N\" has it)"],
                   source="unknown")


def decide_enabled(state: LuoState, *, kho_enabled: bool, cmdline: str, config: dict[str, str],
                   config_source: str | None) -> None:
    """LUO on or off as the kernel decides it (see the module docstring), with the evidence."""
    ev = state.evidence
    state.requested = liveupdate_requested(cmdline)
    seen_on = []
    if state.device_present:
        seen_on.append(f"{DEVICE} exists (liveupdate_ioctl_init() registers it only when LUO is on)")
    if state.outgoing is not None:
        seen_on.append("kho/out/sub_fdts/LUO exists (luo_state_setup() adds it only when LUO is on)")
    if not kho_enabled:
        state.enabled = False
        state.off_message = ("KHO is off, and LUO needs it (luo_early_startup() turns LUO off "
                             "without KHO)")
        ev.append("KHO is off")
        return
    if config_source is not None and config.get("CONFIG_LIVEUPDATE") != "y":
        state.enabled = False
        state.off_message = ("this kernel is built without LUO (CONFIG_LIVEUPDATE is not set, "
                             f"{config_source})")
        ev.append(f"CONFIG_LIVEUPDATE not set ({config_source})")
        return
    if config_source is not None:
        ev.append(f"CONFIG_LIVEUPDATE=y ({config_source})")
    if state.requested is not True:
        state.enabled = False
        state.off_message = ("the kernel command line has no liveupdate=on (LUO is off unless "
                             "it is given)" if state.requested is None
                             else "liveupdate= on the kernel command line turns it off")
        ev.append("/proc/cmdline: " + ("no liveupdate=on" if state.requested is None
                                       else "liveupdate= off"))
        return
    ev.append("liveupdate=on on /proc/cmdline")
    if seen_on:
        state.enabled = True
        ev.extend(seen_on)
        return
    if state.device_present is False:
        state.enabled = False
        state.off_message = (f"liveupdate=on, but there is no {DEVICE} nor an outgoing LUO "
                             "blob: the kernel turned LUO off at boot (luo_late_startup() "
                             "failed; dmesg says \"failed to prepare LUO state\")")
        ev.append(f"no {DEVICE}")
        return
    state.enabled = None
    state.off_message = (f"liveupdate=on, but neither {DEVICE} nor kho/out/sub_fdts/LUO could "
                         "be seen, so whether the kernel kept LUO on is not known")


def _has_record(sysroot: Sysroot) -> bool:
    try:
        return sysroot.lstat(RECORD) is not None
    except (KhotuiError, OSError):
        return False


def read_luo(sysroot: Sysroot, *, kho_enabled: bool, out_blobs: dict[str, bytes],
             in_blobs: dict[str, bytes], cmdline: str, config: dict[str, str],
             config_source: str | None) -> LuoState:
    """LUO on this host (live or snapshot). Never raises: a snapshot's record that is not one
    khotui wrote becomes `problem` (the sessions then unknown, not guessed from the tree)."""
    outgoing = _blob(out_blobs)
    state = LuoState(outgoing=outgoing, incoming=_incoming(in_blobs, outgoing))
    if not sysroot.is_live and _has_record(sysroot):
        try:
            _apply_record(state, parse_record(sysroot.read_bytes(RECORD, limit=MAX_RECORD_BYTES),
                                              sysroot.display(RECORD)))
        except KhotuiError as exc:
            state.problem = exc.problem
            state.source, state.complete = "record", False
            state.note = "the snapshot's LUO record was refused: sessions and holder unknown"
    else:
        state.device_present = _device_present(sysroot)
    decide_enabled(state, kho_enabled=kho_enabled, cmdline=cmdline, config=config,
                   config_source=config_source)
    if (state.enabled is False and state.problem is None and not state.sessions
            and not state.device_holders):
        # a snapshot of a host without LUO reads as that host did live: nothing to scan
        state.source, state.processes_scanned, state.complete = None, 0, True
    if state.source is None:
        if state.enabled is False:
            # no /dev/liveupdate, so no process can have made a session: the scan of every
            # process's fds (about 7 µs a link) is not spent on a host without LUO
            state.note = "not scanned: LUO is off, so no session can be open"
        elif sysroot.is_live or sysroot.is_dir("/proc"):
            scan_proc(sysroot, state)
    return state


# --- the snapshot's record -------------------------------------------------------------------

def record_of(state: LuoState) -> bytes:
    """The record a snapshot keeps of what /proc showed (format RECORD_FORMAT)."""
    body = {"format": RECORD_FORMAT, "device_present": state.device_present,
            "device_holders": [h.as_dict() for h in state.device_holders[:MAX_RECORD_ENTRIES]],
            "sessions": [s.as_dict() for s in state.sessions[:MAX_RECORD_ENTRIES]],
            "processes_scanned": state.processes_scanned, "unreadable": state.unreadable,
            "complete": state.complete and len(state.sessions) <= MAX_RECORD_ENTRIES,
            "note": state.note}
    return (json.dumps(body, indent=1) + "\n").encode()


def write_luo_record(sysroot: Sysroot) -> bytes:
    """What the snapshot records: the device and the session fds as /proc shows them now."""
    state = LuoState(device_present=_device_present(sysroot))
    if state.device_present is False:
        state.note = "not scanned: no /dev/liveupdate, so no session can be open"
    elif sysroot.is_live or sysroot.is_dir("/proc"):
        scan_proc(sysroot, state)
    return record_of(state)


@dataclass(frozen=True)
class _Record:
    device_present: bool | None
    holders: list[LuoProcess]
    sessions: list[LuoSession]
    processes: int
    unreadable: int
    complete: bool
    note: str | None


_RECORD_FIX = ("this record is not one khotui wrote; take a new snapshot with `khotui snapshot`, "
               "or remove khotui-luo.json from the copy (its sessions are then not shown)")


def parse_record(data: bytes, where: str) -> _Record:
    """A snapshot's khotui-luo.json, validated: any deviation is an error naming the file."""
    def bad(why: str) -> KhotuiError:
        return KhotuiError(f"not a khotui LUO record: {why}", path=where, fix=_RECORD_FIX)

    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise bad("not JSON") from None
    if not isinstance(body, dict) or body.get("format") != RECORD_FORMAT:
        raise bad(f"no \"format\": \"{RECORD_FORMAT}\"")
    present = body.get("device_present")
    if present is not None and not isinstance(present, bool):
        raise bad("device_present is not true, false or null")

    def number(key: str) -> int:
        value = body.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= PID_MAX_LIMIT:
            raise bad(f"{key} is not a count")
        return value

    def string(value: object, what: str, longest: int) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or len(value) > longest:
            raise bad(f"{what} is not a string of at most {longest} characters")
        return value

    def process(item: object, what: str) -> LuoProcess:
        if not isinstance(item, dict):
            raise bad(f"{what} is not an object")
        pid = item.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= PID_MAX_LIMIT:
            raise bad(f"{what} has no valid pid")
        return LuoProcess(pid, string(item.get("comm"), f"{what}'s comm", 64),
                          string(item.get("unit"), f"{what}'s unit", 256))

    def items(key: str) -> list[object]:
        value = body.get(key)
        if not isinstance(value, list):
            raise bad(f"{key} is not a list")
        if len(value) > MAX_RECORD_ENTRIES:
            raise bad(f"{key} has {len(value)} entries, more than {MAX_RECORD_ENTRIES}")
        return value

    holders = [process(h, f"device_holders[{i}]") for i, h in enumerate(items("device_holders"))]
    sessions = []
    for i, s in enumerate(items("sessions")):
        holder = process(s, f"sessions[{i}]")
        assert isinstance(s, dict)
        # 4 characters per byte at most once escaped (\xNN): a kernel name is 63 bytes
        name = string(s.get("name"), f"sessions[{i}]'s name", 4 * SESSION_NAME_MAX)
        if name is None:
            raise bad(f"sessions[{i}] has no name")
        sessions.append(LuoSession(name, holder))
    complete = body.get("complete")
    if not isinstance(complete, bool):
        raise bad("complete is not true or false")
    return _Record(present, holders, sessions, number("processes_scanned"), number("unreadable"),
                   complete, string(body.get("note"), "note", 1024))


def _apply_record(state: LuoState, record: _Record) -> None:
    state.source = "record"
    state.device_present = record.device_present
    state.device_holders = record.holders
    state.sessions = record.sessions
    state.processes_scanned = record.processes
    state.unreadable = record.unreadable
    state.complete = record.complete
    state.note = record.note
