"""Audit trail of every kexec load/unload attempt: one syslog line and one JSON line.

kexec-tools leaves no record of what was loaded; kdump-config keeps the last command only. An
operator (or the next one on call) must be able to tell which kernel, initrd and cmdline were
loaded by whom, and what the kernel answered. Writing the record never fails the load: a log
that cannot be written comes back as a warning (a `Problem`) for the caller to show.
`AuditSink` says where the records go; tests pass one that writes to a temporary file.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import socket
import syslog as _syslog
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, Required, TypedDict

from khotui.errors import Problem
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


class AuditEntry(TypedDict, total=False):
    """One JSON line of the audit log, exactly as written."""

    time: Required[str]
    hostname: Required[str]
    sudo_user: Required[str | None]
    user: Required[str]
    uid: Required[int]
    euid: Required[int]
    sudo_uid: str
    ssh_from: str
    action: Required[str]
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


def default_syslog(line: str, ok: bool) -> None:
    facility = getattr(_syslog, "LOG_AUTHPRIV", _syslog.LOG_USER)
    _syslog.openlog("khotui", _syslog.LOG_PID, facility)
    try:
        _syslog.syslog(_syslog.LOG_NOTICE if ok else _syslog.LOG_ERR, line)
    finally:
        _syslog.closelog()


@dataclass(frozen=True)
class AuditSink:
    """Where the records of one load or unload go: the JSON log file (None: none) and syslog
    (None: none). The default is the production one."""

    log_path: str | os.PathLike[str] | None = DEFAULT_LOG_PATH
    syslog: Callable[[str, bool], None] | None = default_syslog


DEFAULT_SINK = AuditSink()


class _User(TypedDict, total=False):
    sudo_user: Required[str | None]
    user: Required[str]
    uid: Required[int]
    euid: Required[int]
    sudo_uid: str
    ssh_from: str


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
    parts = [f"{entry['action']}{' (dry run)' if entry.get('dry_run') else ''}:",
             f"result={entry['result']}", f"by={who}", f"uid={entry['uid']}"]
    if entry.get("ssh_from"):
        parts.append(f"ssh_from={entry['ssh_from']}")
    for key, f in (("kernel", entry["kernel"]), ("initrd", entry["initrd"])):
        if f:
            parts.append(f"{key}={f['resolved']} sha256={f['sha256'][:16]}")
    parts.append(f"flags={entry['flags']}")
    if not entry["action"].startswith("unload"):
        # json.dumps keeps the line one line whatever the cmdline holds
        parts.append(f"cmdline={json.dumps(entry['cmdline'])}")
    return " ".join(parts)


def append_json_line(path: str | os.PathLike[str], entry: AuditEntry) -> None:
    """Append one line; O_APPEND so concurrent writers never interleave inside a line,
    O_NOFOLLOW so root never appends through a symlink someone planted, 0600 when created."""
    data = (json.dumps(entry, ensure_ascii=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                 0o600)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write ({written} of {len(data)} bytes)")
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
                                    "run as root, or pass a writable --log path"))
    return AuditOutcome(entry, line, warnings)
