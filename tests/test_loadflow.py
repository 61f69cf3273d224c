"""Open once, hash via the fd, load that fd: what was previewed is what the kernel reads."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat

import pytest

from khotui.errors import KhotuiError, Problem
from khotui.load import opened, syscall
from khotui.load import session as load_session
from khotui.load.audit import AuditSink
from khotui.load.session import LoadSession
from khotui.load.syscall import KEXEC_FILE_DEBUG, KEXEC_FILE_NO_INITRAMFS
from khotui.plan import PlanRequest
from tests.conftest import CAPTURES, VM
from tests.fakes import FakeKernel, logs_like
from tests.fakes import FakeKernel as RecordingSyscalls
from tests.fixtures.trees import copy_tree


@pytest.fixture(autouse=True)
def private_lock(tmp_path, monkeypatch):
    """Each test its own load lock directory: a session a test leaves open (a dialog never
    answered) must not hold the lock of the next test, nor this machine's /run/khotui."""
    from khotui.load import lock
    monkeypatch.setattr(lock, "LOCK_DIR", str(tmp_path / "run-khotui"))

@pytest.fixture
def images(tmp_path):
    kernel = tmp_path / "vmlinuz-7.3.4"
    initrd = tmp_path / "initrd.img-7.3.4"
    kernel.write_bytes(b"KERNEL-ORIGINAL" * 1000)
    initrd.write_bytes(b"INITRD-ORIGINAL" * 500)
    for p in (kernel, initrd):
        p.chmod(0o644)
    return kernel, initrd


def quiet(log_path=None):
    return {"sink": AuditSink(log_path=log_path, syslog=None)}


def test_open_hashes_and_records(images):
    kernel, initrd = images
    with opened.open_for_load(kernel, initrd) as files:
        assert files.kernel.sha256 == hashlib.sha256(kernel.read_bytes()).hexdigest()
        assert files.initrd.sha256 == hashlib.sha256(initrd.read_bytes()).hexdigest()
        assert files.kernel.size == kernel.stat().st_size
        assert files.kernel.path == str(kernel) and files.kernel.resolved == str(kernel)
        assert files.kernel.read_head(6) == b"KERNEL"
        if os.geteuid() == 0:
            assert files.warnings == []
        fds = [f.fd for f in files.files]
    for fd in fds:  # the with block closed them
        with pytest.raises(OSError) as info:
            os.fstat(fd)
        assert info.value.errno == errno.EBADF


def test_symlink_is_followed_and_the_target_recorded(images, tmp_path):
    kernel, _ = images
    link = tmp_path / "vmlinuz"
    link.symlink_to(kernel.name)
    with opened.open_for_load(link) as files:
        assert files.kernel.path == str(link)
        assert files.kernel.resolved == str(kernel)
        assert files.initrd is None and files.initrd_fd is None


def test_renaming_another_file_over_the_path_changes_nothing(images, tmp_path):
    kernel, initrd = images
    original_kernel, original_initrd = kernel.read_bytes(), initrd.read_bytes()
    log = tmp_path / "khotui.log"
    sc = RecordingSyscalls()
    with opened.open_for_load(kernel, initrd) as files:
        previewed = files.kernel.sha256
        # someone swaps both paths after the preview
        for path in (kernel, initrd):
            evil = tmp_path / (path.name + ".evil")
            evil.write_bytes(b"EVIL" * 10)
            os.rename(evil, path)
        assert kernel.read_bytes() == b"EVIL" * 10
        out = opened.run_load(files, "console=ttyS0 kho=on", flags=KEXEC_FILE_DEBUG,
                                syscalls=sc, **quiet(log_path=log))
    assert out.result.ok
    replaced = [w for w in out.warnings if "now names a different file" in w.message]
    assert [w.path for w in replaced] == [str(kernel), str(initrd)]
    assert all(isinstance(w, Problem) and w.fix for w in replaced)
    (call,) = sc.calls
    assert call.kernel_fd == files.kernel.fd and call.initrd_fd == files.initrd.fd
    assert call.kernel == original_kernel
    assert call.initrd == original_initrd
    assert call.cmdline == b"console=ttyS0 kho=on" and call.flags == KEXEC_FILE_DEBUG
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["kernel"]["sha256"] == previewed == hashlib.sha256(original_kernel).hexdigest()
    assert entry["initrd"]["sha256"] == hashlib.sha256(original_initrd).hexdigest()


def test_writing_into_the_opened_file_refuses_the_load(images, tmp_path):
    kernel, initrd = images
    sc = RecordingSyscalls()
    with opened.open_for_load(kernel, initrd) as files:
        with open(kernel, "r+b") as f:  # same inode: the fd would see it
            f.write(b"EVIL")
        assert files.changed_since_open()
        with pytest.raises(KhotuiError, match="refusing to load what was not previewed"):
            opened.run_load(files, "", syscalls=sc, **quiet(log_path=tmp_path / "l"))
    assert sc.calls == []


def test_same_size_same_mtime_rewrite_is_caught_by_the_rehash(images):
    kernel, _ = images
    with opened.open_for_load(kernel) as files:
        st = kernel.stat()
        with open(kernel, "r+b") as f:
            f.write(b"X")
        os.utime(kernel, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert files.changed_since_open(rehash=False) == []  # size and mtime look the same
        (change,) = files.changed_since_open()
        assert "content changed" in change


def test_no_initrd_loads_with_no_initramfs(images, tmp_path):
    kernel, _ = images
    sc = RecordingSyscalls()
    with opened.open_for_load(kernel) as files:
        out = opened.run_load(files, "quiet", syscalls=sc, **quiet(log_path=tmp_path / "l"))
    assert sc.calls[0].initrd_fd == -1
    assert sc.calls[0].flags & KEXEC_FILE_NO_INITRAMFS
    assert out.audit.entry["initrd"] is None


def test_failed_load_is_returned_and_audited(images, tmp_path):
    kernel, initrd = images
    log = tmp_path / "l"
    sc = RecordingSyscalls(errno.EADDRNOTAVAIL)
    with opened.open_for_load(kernel, initrd) as files:
        out = opened.run_load(files, "", syscalls=sc, **quiet(log_path=log))
    assert not out.result.ok and out.result.errno_name == "EADDRNOTAVAIL"
    attempt, result = (json.loads(line) for line in log.read_text().splitlines())
    assert attempt["phase"] == "attempt" and result["phase"] == "result"
    assert result["result"] == "EADDRNOTAVAIL"


def test_unwritable_audit_log_refuses_the_load(images, tmp_path):
    # issue #10: an audit log that cannot be written only warned, and the load went ahead
    kernel, _ = images
    sc = RecordingSyscalls()
    with opened.open_for_load(kernel) as files, pytest.raises(KhotuiError,
                                                              match="cannot open the audit log"):
        opened.run_load(files, "", syscalls=sc,
                        **quiet(log_path=tmp_path / "missing" / "khotui.log"))
    assert sc.calls == []


def test_closed_files_cannot_be_loaded(images, tmp_path):
    kernel, _ = images
    files = opened.open_for_load(kernel)
    files.close()
    files.close()  # idempotent
    with pytest.raises(KhotuiError, match="closed"):
        opened.run_load(files, "", syscalls=RecordingSyscalls(), **quiet(log_path=None))


def test_unload_flow(tmp_path):
    sc = RecordingSyscalls()
    out = opened.run_unload(syscalls=sc, **quiet(log_path=tmp_path / "l"))
    assert out.result.action == "unload"
    assert sc.calls[0].flags == syscall.KEXEC_FILE_UNLOAD
    attempt, result = (json.loads(line) for line in (tmp_path / "l").read_text().splitlines())
    assert attempt["action"] == result["action"] == "unload"
    assert (attempt["phase"], result["phase"]) == ("attempt", "result")


def test_dry_run_switch_stops_a_load_through_the_libc_wrapper(images, tmp_path):
    kernel, _ = images
    called = []
    sc = syscall.LibcSyscalls(lambda *a: called.append(a) or 0, machine="x86_64")
    syscall.forbid_real_syscalls()
    with opened.open_for_load(kernel) as files, pytest.raises(syscall.RealSyscallForbidden):
        opened.run_load(files, "", syscalls=sc, **quiet(log_path=tmp_path / "l"))
    assert called == []
    assert not (tmp_path / "l").exists()  # nothing was attempted, nothing recorded


# --- what open_for_load refuses --------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(KhotuiError, match="no such kernel"):
        opened.open_for_load(tmp_path / "nope")


def test_missing_initrd_closes_the_kernel(images, tmp_path, monkeypatch):
    kernel, _ = images
    closed = []
    real_close = os.close
    monkeypatch.setattr(os, "close", lambda fd: (closed.append(fd), real_close(fd)))
    with pytest.raises(KhotuiError, match="no such initrd"):
        opened.open_for_load(kernel, tmp_path / "nope")
    assert len(closed) == 2  # the kernel's O_PATH descriptor, then the kernel itself


def test_fifo_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(KhotuiError, match="FIFO"):
        opened.open_for_load(fifo)


def test_directory_and_device_are_refused(tmp_path):
    with pytest.raises(KhotuiError, match="directory"):
        opened.open_for_load(tmp_path)
    with pytest.raises(KhotuiError, match="character device"):
        opened.open_for_load("/dev/null")


def test_empty_file_is_refused(tmp_path, images):
    kernel, _ = images
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(KhotuiError, match="initrd is empty"):
        opened.open_for_load(kernel, empty)


def test_over_4_gib_is_refused_with_the_efbig_explanation(tmp_path, images):
    kernel, _ = images
    big = tmp_path / "big.img"
    with open(big, "wb") as f:
        f.truncate((4 << 30) + 1)  # sparse: costs no disk
    with pytest.raises(KhotuiError) as info:
        opened.open_for_load(kernel, big)
    assert "4 GiB" in str(info.value) and "smaller initrd" in info.value.fix


def test_world_writable_file_warns(images):
    kernel, _ = images
    kernel.chmod(0o666)
    with opened.open_for_load(kernel) as files:
        (warning,) = [w for w in files.warnings if "world-writable" in w.message]
        assert warning == Problem(
            "the kernel is world-writable (mode 0666): anyone could change it before it is "
            "loaded", str(kernel), f"chmod o-w {kernel}")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_file_owned_by_another_user_warns(images):
    kernel, _ = images
    os.chown(kernel, 65534, 65534)
    with opened.open_for_load(kernel) as files:
        (warning,) = files.warnings
        assert "uid 65534" in warning.message and "not root" in warning.message


def test_fds_are_close_on_exec(images):
    kernel, _ = images
    with opened.open_for_load(kernel) as files:
        assert not os.get_inheritable(files.kernel.fd)
        assert os.get_blocking(files.kernel.fd)  # O_NONBLOCK was cleared
        assert stat.S_ISREG(os.fstat(files.kernel.fd).st_mode)


def test_chmod_after_open_is_not_a_change(images):
    kernel, _ = images
    with opened.open_for_load(kernel) as files:
        kernel.chmod(0o600)  # moves ctime only
        assert files.changed_since_open() == []
        assert files.replaced_paths() == []


# --- the session: the one load policy `khotui load` and the app follow -----------------------


BZIMAGE = VM / "bzImage-kho-7.3.4"


def _initrd(tmp_path, size):
    import subprocess
    import sys
    out = tmp_path / f"initrd-{size}"
    subprocess.run([sys.executable, str(CAPTURES / "make-initrd"), str(size), str(out)],
                   check=True)
    return out


def _copy(capture, tmp_path):
    return copy_tree(CAPTURES / capture / "sysroot", tmp_path / capture)


def test_session_on_a_snapshot_is_a_dry_run_that_never_touches_the_syscalls(shared, tmp_path):
    fake = FakeKernel()
    s = LoadSession.prepare(CAPTURES / "two-nodes" / "sysroot",
                            PlanRequest(str(BZIMAGE), append="x=1"), sink=AuditSink(None, None))
    facts = s.facts
    assert facts.dry_run and "snapshot" in facts.dry_run_reason
    assert facts.kernel.sha256 == hashlib.sha256(BZIMAGE.read_bytes()).hexdigest()
    assert facts.kernel.size == BZIMAGE.stat().st_size and facts.initrd is None
    assert facts.cmdline.endswith("x=1") and facts.host_name == load_session.this_host_name()
    done = s.commit(force=("segments-fit",), syscalls=fake)
    assert done.dry_run and done.ok and not done.reached_kernel and done.overridden == ()
    assert fake.calls == [] and s.files.closed


def test_session_refuses_a_failing_check_and_forced_names_what_it_overrode(shared, tmp_path):
    root = _copy("scratch-too-small", tmp_path)
    request = PlanRequest(str(BZIMAGE), str(_initrd(tmp_path, 64 << 20)),
                          cmdline=(CAPTURES / "scratch-too-small/load/cmdline").read_text())
    fake = FakeKernel(errno.EADDRNOTAVAIL)
    sink = AuditSink(tmp_path / "log", None)
    with LoadSession.prepare(root, request, live=True, sink=sink) as s:
        assert [f.id for f in s.facts.failing] == ["segments-fit"]
        refused = s.precheck(force=())
        assert refused is not None and refused.refused and not refused.ok
        assert s.commit(force=(), syscalls=fake) == refused
    assert fake.calls == [] and (tmp_path / "log").read_text() == ""  # nothing attempted
    with LoadSession.prepare(root, request, live=True, sink=sink) as s:
        assert s.precheck(force=s.failing_ids) is None
        done = s.commit(force=s.failing_ids, syscalls=fake)
    assert len(fake.calls) == 1 and not done.ok and done.errno == "EADDRNOTAVAIL"
    assert [f.id for f in done.overridden] == ["segments-fit"]
    assert done.explanation.cause.startswith("initrd (64 MiB) fits in no scratch region: lowmem")
    assert json.loads((tmp_path / "log").read_text().splitlines()[-1])["result"] == "EADDRNOTAVAIL"


def test_session_plans_and_loads_the_descriptors_it_hashed(shared, tmp_path):
    root = _copy("two-nodes", tmp_path)
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(BZIMAGE.read_bytes())
    request = PlanRequest(str(kernel), str(_initrd(tmp_path, 8 << 20)),
                          cmdline=(CAPTURES / "two-nodes/load/cmdline").read_text())
    fake = FakeKernel(on_load=logs_like("two-nodes", root))
    with LoadSession.prepare(root, request, live=True, sink=AuditSink(None, None)) as s:
        previewed = s.facts.kernel.sha256
        evil = tmp_path / "evil"
        evil.write_bytes(b"EVIL" * 10)
        os.rename(evil, kernel)                       # the path moves on after the preview
        assert s.plan.kernel.size == BZIMAGE.stat().st_size
        done = s.commit(force=(), syscalls=fake)
    assert done.ok and done.matches_prediction is True and len(done.diffs) == 5
    assert fake.calls[0].kernel == BZIMAGE.read_bytes()
    assert hashlib.sha256(fake.calls[0].kernel).hexdigest() == previewed
    (moved,) = [w for w in done.warnings if "now names a different file" in w.message]
    assert moved.path == str(kernel)


def test_session_unload_is_a_dry_run_off_the_live_host(tmp_path):
    fake = FakeKernel()
    done = load_session.unload(syscalls=fake, live=False, sink=AuditSink(tmp_path / "l", None))
    assert done.dry_run and fake.calls == [] and not (tmp_path / "l").exists()
    done = load_session.unload(syscalls=fake, sink=AuditSink(tmp_path / "l", None))
    assert done.ok and fake.calls[0].flags == syscall.KEXEC_FILE_UNLOAD
