"""Audit records: the JSON line, the syslog line, sha256 through an fd, and logs that fail."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timezone

import pytest

from khotui.errors import Problem
from khotui.load import audit
from khotui.load.kexec import LoadResult
from khotui.load.syscall import KEXEC_FILE_DEBUG, KEXEC_FILE_NO_INITRAMFS, KEXEC_FILE_UNLOAD


@dataclass
class File:
    path: str
    resolved: str
    sha256: str
    size: int


KERNEL = File("/boot/vmlinuz", "/boot/vmlinuz-7.3.4-amd64", "ab" * 32, 12_000_000)
INITRD = File("/boot/initrd.img", "/boot/initrd.img-7.3.4-amd64", "cd" * 32, 64 << 20)
WHEN = datetime(2026, 7, 1, 12, 30, 5, tzinfo=UTC)
ENV = {"SUDO_USER": "alice", "SUDO_UID": "1000", "SSH_CONNECTION": "10.0.0.5 5555 10.0.0.1 22"}


class Syslog:
    def __init__(self):
        self.lines = []

    def __call__(self, line, ok):
        self.lines.append((line, ok))


def ok_load(cmdline="console=ttyS0 kho=on", flags=KEXEC_FILE_DEBUG):
    return LoadResult(action="load", ok=True, flags=flags, cmdline=cmdline,
                      cmdline_len=len(cmdline.encode()) + 1, kernel_fd=3, initrd_fd=4)


def test_sha256_fd_hashes_from_offset_zero_and_leaves_the_position(tmp_path):
    data = os.urandom(3 * (1 << 20) + 123)  # more than one chunk
    p = tmp_path / "img"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        os.lseek(fd, 1000, os.SEEK_SET)
        assert audit.sha256_fd(fd) == hashlib.sha256(data).hexdigest()
        assert os.lseek(fd, 0, os.SEEK_CUR) == 1000
        os.lseek(fd, 0, os.SEEK_END)  # even at EOF the whole file is hashed
        assert audit.sha256_fd(fd) == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)


def test_record_writes_one_json_line(tmp_path):
    log = tmp_path / "khotui.log"
    sl = Syslog()
    out = audit.record(ok_load(), kernel=KERNEL, initrd=INITRD, log_path=log, syslog=sl,
                       env=ENV, now=WHEN, hostname="kho-guest")
    assert out.warnings == []
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry == out.entry
    assert entry["time"] == "2026-07-01T12:30:05+00:00"
    assert entry["hostname"] == "kho-guest"
    assert entry["sudo_user"] == "alice" and entry["sudo_uid"] == "1000"
    assert entry["uid"] == os.getuid() and entry["euid"] == os.geteuid()
    assert entry["user"]
    assert entry["ssh_from"] == "10.0.0.5"
    assert entry["action"] == "load" and entry["dry_run"] is False
    assert entry["kernel"] == {"path": "/boot/vmlinuz", "resolved": "/boot/vmlinuz-7.3.4-amd64",
                               "sha256": "ab" * 32, "size": 12_000_000}
    assert entry["initrd"]["sha256"] == "cd" * 32
    assert entry["cmdline"] == "console=ttyS0 kho=on"
    assert entry["flags"] == "0x8" and entry["flag_names"] == ["DEBUG"]
    assert entry["result"] == "ok" and "errno" not in entry
    stat_ = os.stat(log)
    assert stat.S_IMODE(stat_.st_mode) == 0o600


def test_time_is_utc_whatever_the_local_zone(tmp_path):
    from datetime import timedelta
    local = WHEN.astimezone(timezone(timedelta(hours=2)))
    out = audit.record(ok_load(), log_path=None, syslog=None, env={}, now=local, hostname="h")
    assert out.entry["time"] == "2026-07-01T12:30:05+00:00"
    assert out.entry["sudo_user"] is None


def test_failed_load_records_the_errno_name(tmp_path):
    failed = LoadResult(action="load", ok=False, flags=KEXEC_FILE_NO_INITRAMFS, cmdline="",
                        errno=99, errno_name="EADDRNOTAVAIL",
                        strerror="Cannot assign requested address")
    sl = Syslog()
    out = audit.record(failed, kernel=KERNEL, log_path=tmp_path / "l", syslog=sl, env={},
                       now=WHEN, hostname="h")
    assert out.entry["result"] == "EADDRNOTAVAIL"
    assert out.entry["errno"] == 99 and out.entry["initrd"] is None
    line, ok = sl.lines[0]
    assert not ok and "result=EADDRNOTAVAIL" in line


def test_syslog_line_is_one_line_with_the_essentials(tmp_path):
    sl = Syslog()
    audit.record(ok_load(cmdline="a=1\nb=2"), kernel=KERNEL, initrd=INITRD, log_path=None,
                 syslog=sl, env=ENV, now=WHEN, hostname="h")
    (line, ok), = sl.lines
    assert ok and "\n" not in line
    assert line.startswith("load: result=ok by=")
    assert "(sudo from alice)" in line
    assert 'kernel="/boot/vmlinuz-7.3.4-amd64" sha256=' + "ab" * 8 in line
    assert 'initrd="/boot/initrd.img-7.3.4-amd64"' in line
    assert "flags=0x8" in line and 'cmdline="a=1\\nb=2"' in line


def test_unload_record():
    result = LoadResult(action="unload", ok=True, flags=KEXEC_FILE_UNLOAD)
    out = audit.record(result, log_path=None, syslog=None, env={}, now=WHEN, hostname="h")
    assert out.entry["kernel"] is None and out.entry["flag_names"] == ["UNLOAD"]
    assert "cmdline=" not in out.syslog_line


def test_records_append(tmp_path):
    log = tmp_path / "khotui.log"
    for _ in range(2):
        audit.record(ok_load(), kernel=KERNEL, log_path=log, syslog=None, env={}, now=WHEN,
                     hostname="h")
    assert len(log.read_text().splitlines()) == 2


@pytest.mark.parametrize("kind", ["missing-dir", "directory", "symlink"])
def test_unwritable_log_is_a_warning_not_a_crash(tmp_path, kind):
    if kind == "missing-dir":
        log = tmp_path / "nope" / "khotui.log"
    elif kind == "directory":
        log = tmp_path / "dir"
        log.mkdir()
    else:  # root must never append through a planted symlink
        target = tmp_path / "target"
        target.write_text("")
        log = tmp_path / "link"
        log.symlink_to(target)
    sl = Syslog()
    out = audit.record(ok_load(), kernel=KERNEL, log_path=log, syslog=sl, env={}, now=WHEN,
                       hostname="h")
    (warning,) = out.warnings
    assert warning.path == str(log) and "could not append" in warning.message
    assert "--log" in warning.fix
    assert len(sl.lines) == 1  # syslog still got the record
    if kind == "symlink":
        assert target.read_text() == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write a 0400 file")
def test_permission_denied_log_is_a_warning(tmp_path):
    log = tmp_path / "khotui.log"
    log.write_text("")
    log.chmod(0o400)
    out = audit.record(ok_load(), log_path=log, syslog=None, env={}, now=WHEN, hostname="h")
    assert "Permission denied" in out.warnings[0].message


def test_syslog_failure_is_a_warning(tmp_path):
    def broken(line, ok):
        raise OSError("no /dev/log")
    out = audit.record(ok_load(), log_path=tmp_path / "l", syslog=broken, env={}, now=WHEN,
                       hostname="h")
    (warning,) = out.warnings
    assert isinstance(warning, Problem)
    assert warning.message == "could not write the audit record to syslog: no /dev/log"
    assert (tmp_path / "l").read_text().count("\n") == 1
