"""Audit trail of every kexec load/unload attempt: one syslog line and one JSON line.

kexec-tools leaves no record of what was loaded; kdump-config keeps the last command only. An
operator (or the next one on call) must be able to tell which kernel, initrd and cmdline were
loaded by whom, and what the kernel answered.

The record is not best effort: `AuditSink.open()` opens and checks the JSON log *before* the
operator is asked to confirm (a regular file owned by root or the caller and writable by nobody
else, opened O_APPEND|O_NOFOLLOW|O_NONBLOCK so a planted symlink is refused and a FIFO cannot
hang the load), and refuses when it cannot, unless the operator explicitly accepted running
without one (`--no-audit-log`: `AuditSink(log_path=None)`). Each load writes an "attempt"
record before the syscall and a "result" record after it, each fsynced (fsync(2)): a crash or
a power cut right after a load still leaves the attempt on disk. An attempt that cannot be
written refuses the load. Syslog goes through our own socket to /dev/log, so a missing syslog
is a warning shown before the confirmation, never a silent drop (syslog(3) drops silently).
`AuditSink` says where the records go; tests pass one that writes to a temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import socket
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, Required, TypedDict

from khotui.errors import KhotuiError, Problem
from khotui.load.kexec import LoadResult
from khotui.load.syscall import flag_names

DEFAULT_LOG_PATH = "/var/log/khotui.log"
_CHUNK = 1 << 20


def sha256_fd(fd: int) -> str:
    """SHA-256 of the whole file behind `fd`, read with pread from offset 0.

    The fd's own position is never moved, and it does not matter to the kernel either:
    kernel_read_file() (fs/kernel_read_file.c) reads from its own `pos = offset` (0 for
    kexec_file_load), not from the file position. So the fd that was hashed is the fd to pass.
    """
    digest = hashlib.sha256()
    offset = 0
    while True:
        chunk = os.pread(fd, _CHUNK, offset)
        if not chunk:
            break
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


class AuditedFile(Protocol):
    """What the log needs of a loaded file (`opened.OpenedFile` provides it)."""

    @property
    def path(self) -> str: ...
    @property
    def resolved(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def size(self) -> int: ...


class FileRecord(TypedDict):
    path: str
    resolved: str
    sha256: str
    size: int


class _User(TypedDict, total=False):
    """Who acted: the user, and who they were before sudo and where they came from."""

    sudo_user: Required[str | None]
    user: Required[str]
    uid: Required[int]
    euid: Required[int]
    sudo_uid: str
    ssh_from: str


class AuditEntry(_User, total=False):
    """One JSON line of the audit log, exactly as written (who acted, then what happened)."""

    time: Required[str]
    hostname: Required[str]
    action: Required[str]
    phase: str                   # "attempt" (before the syscall) or "result" (after)
    dry_run: Required[bool]
    kernel: Required[FileRecord | None]
    initrd: Required[FileRecord | None]
    cmdline: Required[str]
    flags: Required[str]
    flag_names: Required[list[str]]
    result: Required[str]
    errno: int
    strerror: str


@dataclass(frozen=True)
class AuditOutcome:
    """The record as written (`entry`), the syslog line, and anything that could not be written."""

    entry: AuditEntry
    syslog_line: str
    warnings: list[Problem] = field(default_factory=list)


SYSLOG_SOCKET = "/dev/log"
# RFC 3164 priority: facility authpriv (10) << 3 | severity notice (5) / err (3)
_AUTHPRIV, _NOTICE, _ERR = 10, 5, 3


def default_syslog(line: str, ok: bool) -> None:
    """One datagram to /dev/log, raising OSError when it cannot be delivered (syslog(3) would
    drop it silently: no /dev/log, a full socket buffer)."""
    pri = _AUTHPRIV << 3 | (_NOTICE if ok else _ERR)
    data = f"<{pri}>khotui[{os.getpid()}]: {line}".encode("utf-8", "backslashreplace")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.connect(SYSLOG_SOCKET)
        sock.send(data)


def syslog_problem() -> Problem | None:
    """Why the default syslog cannot take a record now (None: /dev/log is a socket)."""
    try:
        st = os.stat(SYSLOG_SOCKET)
    except OSError as exc:
        return Problem(f"no syslog socket ({exc.strerror}): the audit record goes to the JSON "
                       "log only", SYSLOG_SOCKET, "start systemd-journald or rsyslog")
    if not stat.S_ISSOCK(st.st_mode):
        return Problem("is not a socket: the audit record goes to the JSON log only",
                       SYSLOG_SOCKET, "start systemd-journald or rsyslog")
    return None


@dataclass(frozen=True)
class AuditSink:
    """Where the records of one load or unload go: the JSON log file (None: none) and syslog
    (None: none). The default is the production one."""

    log_path: str | os.PathLike[str] | None = DEFAULT_LOG_PATH
    syslog: Callable[[str, bool], None] | None = default_syslog

    def open(self) -> AuditLog:
        """Open and check the JSON log now, before any confirmation (module docstring).
        Raises KhotuiError naming the file and the fix when it cannot be used."""
        fd = None if self.log_path is None else open_log(self.log_path)
        warnings: list[Problem] = []
        if self.log_path is None:
            warnings.append(Problem("no audit log: the operator chose --no-audit-log, so no JSON "
                                    "record of this change is kept"))
        if self.syslog is default_syslog:
            problem = syslog_problem()
            if problem is not None:
                warnings.append(problem)
        return AuditLog(fd, self.log_path, self.syslog, warnings)


DEFAULT_SINK = AuditSink()

NO_LOG_FIX = ("pass --log FILE with a root-owned regular file (mode 0600), or --no-audit-log "
              "to run without an audit log on purpose")


def open_log(path: str | os.PathLike[str]) -> int:
    """The audit log opened for appending, checked: O_NOFOLLOW (no planted symlink),
    O_NONBLOCK (a FIFO must not hang us; a regular file ignores the flag), then fstat: a
    regular file (not /dev/full, a FIFO or a tty), owned by root or the caller, not writable
    by group or others (they could forge or truncate the record)."""
    shown = os.fspath(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                     | os.O_NONBLOCK | os.O_NOCTTY, 0o600)
    except OSError as exc:
        raise KhotuiError(f"cannot open the audit log ({exc.strerror or exc}); refusing to change "
                          "the host without a record", path=shown, fix=NO_LOG_FIX) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KhotuiError("the audit log is not a regular file; refusing to change the host "
                              "without a record", path=shown, fix=NO_LOG_FIX)
        if st.st_uid not in (0, os.geteuid()):
            raise KhotuiError(f"the audit log is owned by uid {st.st_uid}, not root: its owner "
                              "could rewrite the record", path=shown,
                              fix=f"chown root {shown}, or " + NO_LOG_FIX)
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise KhotuiError(f"the audit log is writable by others (mode "
                              f"{stat.S_IMODE(st.st_mode):04o}): they could forge records",
                              path=shown, fix=f"chmod go-w {shown}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_record(fd: int, entry: AuditEntry) -> None:
    """One JSON line, whole (O_APPEND: concurrent writers never interleave inside a line),
    then fsync(2): on disk before the caller goes on."""
    data = (json.dumps(entry, ensure_ascii=True) + "\n").encode("utf-8")
    written = os.write(fd, data)
    if written != len(data):
        raise OSError(f"short write ({written} of {len(data)} bytes)")
    os.fsync(fd)


class AuditLog:
    """The opened audit log of one load or unload (`AuditSink.open()`); `warnings` are what
    the operator must see before confirming (no syslog, no JSON log)."""

    def __init__(self, fd: int | None, path: str | os.PathLike[str] | None,
                 syslog: Callable[[str, bool], None] | None, warnings: list[Problem]) -> None:
        self.fd = fd
        self.path = path
        self.syslog = syslog
        self.warnings = warnings
        self._syslog_said = False

    def attempt(self, pending: LoadResult, *, kernel: AuditedFile | None = None,
                initrd: AuditedFile | None = None) -> AuditOutcome:
        """The record written before the syscall. Raises KhotuiError when the JSON log cannot
        take it: then nothing is loaded."""
        entry = build_entry(pending, kernel=kernel, initrd=initrd)
        entry["phase"] = "attempt"
        entry["result"] = "attempt"
        entry.pop("errno", None)
        entry.pop("strerror", None)
        line = format_syslog(entry)
        if self.fd is not None:
            try:
                write_record(self.fd, entry)
            except OSError as exc:
                raise KhotuiError(f"cannot write the audit record ({exc.strerror or exc}); "
                                  "refusing to load without a record, nothing was loaded",
                                  path=os.fspath(self.path or ""), fix=NO_LOG_FIX) from None
        return AuditOutcome(entry, line, self._syslog(line, True))

    def result(self, result: LoadResult, *, kernel: AuditedFile | None = None,
               initrd: AuditedFile | None = None) -> AuditOutcome:
        """The record of what the kernel answered. The change is made by now: a log that
        fails here comes back as a warning."""
        entry = build_entry(result, kernel=kernel, initrd=initrd)
        line = format_syslog(entry)
        warnings = self._syslog(line, result.ok)
        if self.fd is not None:
            try:
                write_record(self.fd, entry)
            except OSError as exc:
                warnings.append(Problem(f"could not append the audit record of the result "
                                        f"({exc.strerror or exc}); the attempt is recorded",
                                        os.fspath(self.path or ""), NO_LOG_FIX))
        return AuditOutcome(entry, line, warnings)

    def _syslog(self, line: str, ok: bool) -> list[Problem]:
        if self.syslog is None:
            return []
        try:
            self.syslog(line, ok)
        except Exception as exc:  # the JSON log has the record; say syslog did not, once
            if self._syslog_said:
                return []
            self._syslog_said = True
            return [Problem(f"could not write the audit record to syslog: {exc}",
                            fix="check that syslog runs (journalctl -u systemd-journald)")]
        return []

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def _user(env: Mapping[str, str]) -> _User:
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    user = _User(sudo_user=env.get("SUDO_USER") or None, user=name, uid=uid, euid=os.geteuid())
    if env.get("SUDO_UID"):
        user["sudo_uid"] = env["SUDO_UID"]
    ssh = env.get("SSH_CONNECTION") or env.get("SSH_CLIENT")
    if ssh:
        user["ssh_from"] = ssh.split()[0]
    return user


class _Failure(TypedDict, total=False):
    errno: int
    strerror: str


def _failure(result: LoadResult) -> _Failure:
    return {} if result.ok else _Failure(errno=result.errno, strerror=result.strerror)


def _file(f: AuditedFile | None) -> FileRecord | None:
    if f is None:
        return None
    return {"path": f.path, "resolved": f.resolved, "sha256": f.sha256, "size": f.size}


def build_entry(result: LoadResult, *, kernel: AuditedFile | None = None,
                initrd: AuditedFile | None = None, dry_run: bool = False,
                env: Mapping[str, str] | None = None, now: datetime | None = None,
                hostname: str | None = None) -> AuditEntry:
    """The JSON record for one attempt."""
    env = os.environ if env is None else env
    when = (now or datetime.now(UTC)).astimezone(UTC)
    entry: AuditEntry = {
        "time": when.isoformat(timespec="seconds"),
        "hostname": hostname or socket.gethostname(),
        **_user(env),
        "action": result.action,
        "phase": "result",
        "dry_run": dry_run,
        "kernel": _file(kernel),
        "initrd": _file(initrd),
        "cmdline": result.cmdline,
        "flags": hex(result.flags),
        "flag_names": flag_names(result.flags),
        "result": result.result,
        **_failure(result),
    }
    return entry


def format_syslog(entry: AuditEntry) -> str:
    """One line: who, what, which files (short hash), the answer."""
    who = entry["user"] + (f" (sudo from {entry['sudo_user']})" if entry.get("sudo_user") else "")
    phase = " attempt" if entry.get("phase") == "attempt" else ""
    parts = [f"{entry['action']}{phase}{' (dry run)' if entry.get('dry_run') else ''}:",
             f"result={entry['result']}", f"by={who}", f"uid={entry['uid']}"]
    if entry.get("ssh_from"):
        parts.append(f"ssh_from={entry['ssh_from']}")
    for key, f in (("kernel", entry["kernel"]), ("initrd", entry["initrd"])):
        if f:
            # quoted: a file name holding a newline must not forge a second syslog record
            parts.append(f"{key}={json.dumps(f['resolved'])} sha256={f['sha256'][:16]}")
    parts.append(f"flags={entry['flags']}")
    if not entry["action"].startswith("unload"):
        # json.dumps keeps the line one line whatever the cmdline holds
        parts.append(f"cmdline={json.dumps(entry['cmdline'])}")
    return " ".join(parts)


def append_json_line(path: str | os.PathLike[str], entry: AuditEntry) -> None:
    """Append one line to the checked log (`open_log`), fsynced. Raises OSError."""
    try:
        fd = open_log(path)
    except KhotuiError as exc:
        raise OSError(exc.message) from None
    try:
        write_record(fd, entry)
    finally:
        os.close(fd)


def record(result: LoadResult, *, kernel: AuditedFile | None = None,
           initrd: AuditedFile | None = None, dry_run: bool = False,
           log_path: str | os.PathLike[str] | None = DEFAULT_LOG_PATH,
           syslog: Callable[[str, bool], None] | None = default_syslog,
           env: Mapping[str, str] | None = None, now: datetime | None = None,
           hostname: str | None = None) -> AuditOutcome:
    """Record one load/unload attempt. Never raises for a log that cannot be written.

    `log_path` None skips the file; `syslog` None skips syslog (tests pass a recorder).
    """
    entry = build_entry(result, kernel=kernel, initrd=initrd, dry_run=dry_run, env=env,
                        now=now, hostname=hostname)
    line = format_syslog(entry)
    warnings: list[Problem] = []
    if syslog is not None:
        try:
            syslog(line, result.ok)
        except Exception as exc:  # a logging failure must never stop or hide the load result
            warnings.append(Problem(f"could not write the audit record to syslog: {exc}",
                                    fix="check that syslog runs (journalctl -u systemd-journald)"))
    if log_path is not None:
        try:
            append_json_line(log_path, entry)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            warnings.append(Problem(f"could not append the audit record ({reason}); the load "
                                    "itself is unaffected", os.fspath(log_path),
                                    NO_LOG_FIX))
    return AuditOutcome(entry, line, warnings)
