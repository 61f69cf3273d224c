"""The kexec_file_load seam, flags, the dry-run kill switch, and errno explanations.

No test here can reach the real syscall: the autouse fixture makes libc unreachable from
`real_syscalls()`, and every LibcSyscalls gets a fake `syscall` function that records the ctypes
values it receives.
"""

from __future__ import annotations

import ctypes
import errno
import subprocess
import sys

import pytest

from khotui.errors import KhotuiError
from khotui.load import kexec, syscall
from khotui.load.explain import ExplainContext, explain
from khotui.load.syscall import (
    KEXEC_FILE_DEBUG,
    KEXEC_FILE_NO_CMA,
    KEXEC_FILE_NO_INITRAMFS,
    KEXEC_FILE_ON_CRASH,
    KEXEC_FILE_UNLOAD,
    LibcSyscalls,
    RealSyscallForbidden,
)


class FakeSyscall:
    """Stands in for libc's `syscall`: records the ctypes values, answers 0 or -1 + errno."""

    def __init__(self, fail_errno: int = 0) -> None:
        self.fail_errno = fail_errno
        self.calls: list[tuple] = []

    def __call__(self, *args):
        self.calls.append(args)
        if self.fail_errno:
            ctypes.set_errno(self.fail_errno)
            return -1
        return 0


def values(call):
    return [a.value for a in call]


# --- numbers and flags -----------------------------------------------------------------------

def test_flag_values_match_uapi():
    assert (syscall.KEXEC_FILE_UNLOAD, syscall.KEXEC_FILE_ON_CRASH, syscall.KEXEC_FILE_NO_INITRAMFS,
            syscall.KEXEC_FILE_DEBUG, syscall.KEXEC_FILE_NO_CMA, syscall.KEXEC_FILE_FORCE_DTB) == \
        (0x1, 0x2, 0x4, 0x8, 0x10, 0x20)
    assert syscall.KEXEC_FILE_FLAGS == 0x3F
    assert syscall.LINUX_REBOOT_CMD_KEXEC == 0x45584543
    assert syscall.LINUX_REBOOT_MAGIC1 == 0xFEE1DEAD
    assert syscall.LINUX_REBOOT_MAGIC2 == 672274793


@pytest.mark.parametrize("machine,nr", [("x86_64", 320), ("aarch64", 294), ("arm64", 294),
                                        ("riscv64", 294)])
def test_syscall_numbers(machine, nr):
    assert syscall.syscall_number(machine) == nr


@pytest.mark.parametrize("machine", ["i686", "ppc64le", "s390x", "loongarch64"])
def test_unsupported_architecture(machine):
    with pytest.raises(KhotuiError, match="not supported on this architecture by khotui"):
        syscall.syscall_number(machine)
    with pytest.raises(KhotuiError):
        LibcSyscalls(FakeSyscall(), machine=machine)


def test_flag_names_and_unknown_bits():
    assert syscall.flag_names(0xC) == ["NO_INITRAMFS", "DEBUG"]
    assert syscall.flag_names(0x48) == ["DEBUG", "0x40"]


def test_flags_unsupported_by_older_kernels():
    assert syscall.flags_unsupported_by(KEXEC_FILE_NO_CMA, "6.16.3-amd64") == ["NO_CMA"]
    assert syscall.flags_unsupported_by(KEXEC_FILE_NO_CMA, "6.17.0") == []
    assert syscall.flags_unsupported_by(KEXEC_FILE_DEBUG, "6.6.50") == ["DEBUG"]
    assert syscall.flags_unsupported_by(KEXEC_FILE_NO_CMA | KEXEC_FILE_DEBUG, "7.3.4") == []
    assert syscall.flags_unsupported_by(KEXEC_FILE_NO_CMA, None) == []


# --- the ctypes call -------------------------------------------------------------------------

def test_load_builds_the_x86_64_call():
    fake = FakeSyscall()
    sc = LibcSyscalls(fake, machine="x86_64")
    result = kexec.load(7, 8, "console=ttyS0 kho=on", flags=KEXEC_FILE_DEBUG, syscalls=sc)
    assert result.ok and result.result == "ok"
    (call,) = fake.calls
    assert [type(a) for a in call] == [ctypes.c_long, ctypes.c_int, ctypes.c_int, ctypes.c_ulong,
                                       ctypes.c_char_p, ctypes.c_ulong]
    nr, kfd, ifd, cmdline_len, cmdline, flags = values(call)
    assert nr == 320
    assert (kfd, ifd) == (7, 8)
    assert cmdline == b"console=ttyS0 kho=on"
    assert cmdline_len == len(b"console=ttyS0 kho=on") + 1  # the trailing NUL counts
    assert flags == KEXEC_FILE_DEBUG
    assert result.cmdline_len == cmdline_len


def test_cmdline_is_utf8_and_len_counts_bytes():
    fake = FakeSyscall()
    kexec.load(3, 4, "label=é", syscalls=LibcSyscalls(fake, machine="x86_64"))
    _, _, _, cmdline_len, cmdline, _ = values(fake.calls[0])
    assert cmdline == "label=é".encode()
    assert cmdline_len == len("label=é".encode()) + 1 == 9


def test_no_initrd_passes_minus_one_and_no_initramfs():
    fake = FakeSyscall()
    result = kexec.load(5, None, "", syscalls=LibcSyscalls(fake, machine="aarch64"))
    nr, _kfd, ifd, cmdline_len, cmdline, flags = values(fake.calls[0])
    assert nr == 294
    assert ifd == -1
    assert flags & KEXEC_FILE_NO_INITRAMFS
    assert cmdline_len == 1 and cmdline == b""
    assert result.initrd_fd == -1


def test_no_initramfs_flag_forces_minus_one_in_the_wrapper():
    fake = FakeSyscall()
    LibcSyscalls(fake, machine="x86_64").kexec_file_load(5, 9, b"x", KEXEC_FILE_NO_INITRAMFS)
    assert values(fake.calls[0])[2] == -1


@pytest.mark.parametrize("flags", [0x40, 0x100, 1 << 40, -1])
def test_unknown_flag_bits_rejected_before_the_call(flags):
    fake = FakeSyscall()
    sc = LibcSyscalls(fake, machine="x86_64")
    with pytest.raises(KhotuiError, match="unknown kexec_file_load flag"):
        kexec.load(3, 4, "", flags=flags, syscalls=sc)
    with pytest.raises(KhotuiError):
        sc.kexec_file_load(3, 4, b"", flags)
    assert fake.calls == []


def test_nul_in_cmdline_rejected_before_the_call():
    fake = FakeSyscall()
    sc = LibcSyscalls(fake, machine="x86_64")
    with pytest.raises(KhotuiError, match="NUL"):
        kexec.load(3, 4, "root=/dev/sda\0init=/bin/sh", syscalls=sc)
    with pytest.raises(KhotuiError, match="NUL"):
        sc.kexec_file_load(3, 4, b"a\0b", 0)
    assert fake.calls == []


def test_contradictory_arguments_rejected_before_the_call():
    fake = FakeSyscall()
    sc = LibcSyscalls(fake, machine="x86_64")
    with pytest.raises(KhotuiError, match="NO_INITRAMFS"):
        kexec.load(3, 4, "", flags=KEXEC_FILE_NO_INITRAMFS, syscalls=sc)
    with pytest.raises(KhotuiError, match="unload"):
        kexec.load(3, 4, "", flags=KEXEC_FILE_UNLOAD, syscalls=sc)
    with pytest.raises(KhotuiError):
        kexec.load(-1, 4, "", syscalls=sc)
    assert fake.calls == []


def test_kernel_error_comes_back_with_its_errno():
    fake = FakeSyscall(fail_errno=errno.EADDRNOTAVAIL)
    result = kexec.load(3, 4, "quiet", syscalls=LibcSyscalls(fake, machine="x86_64"))
    assert not result.ok
    assert result.errno == errno.EADDRNOTAVAIL
    assert result.errno_name == result.result == "EADDRNOTAVAIL"
    err = result.error(ExplainContext(kho_enabled=True))
    assert isinstance(err, KhotuiError)
    assert "scratch" in str(err) and err.fix


def test_wrapper_raises_oserror_with_errno():
    sc = LibcSyscalls(FakeSyscall(fail_errno=errno.EBUSY), machine="x86_64")
    with pytest.raises(OSError) as info:
        sc.kexec_file_load(3, 4, b"", 0)
    assert info.value.errno == errno.EBUSY


def test_unload_passes_no_files_and_no_cmdline():
    fake = FakeSyscall()
    result = kexec.unload(LibcSyscalls(fake, machine="x86_64"))
    _nr, kfd, ifd, cmdline_len, cmdline, flags = values(fake.calls[0])
    assert (kfd, ifd, cmdline_len, cmdline) == (-1, -1, 0, None)
    assert flags == KEXEC_FILE_UNLOAD
    assert result.action == "unload"
    kexec.unload(LibcSyscalls(fake, machine="x86_64"), on_crash=True)
    assert values(fake.calls[1])[5] == KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH


def test_reboot_through_the_seam_passes_the_magic():
    reboot = FakeSyscall()
    LibcSyscalls(FakeSyscall(), reboot_fn=reboot, machine="x86_64").reboot_kexec()
    (call,) = reboot.calls
    assert values(call) == [169, 0xFEE1DEAD, 672274793, 0x45584543, None]


# --- the guard -------------------------------------------------------------------------------

def test_kill_switch_blocks_every_real_path():
    fake, reboot = FakeSyscall(), FakeSyscall()
    sc = LibcSyscalls(fake, reboot_fn=reboot, machine="x86_64")
    syscall.forbid_real_syscalls()
    assert syscall.DRY_RUN_ONLY
    with pytest.raises(RealSyscallForbidden):
        sc.kexec_file_load(3, 4, b"", 0)
    with pytest.raises(RealSyscallForbidden):
        kexec.load(3, 4, "", syscalls=sc)  # not turned into a LoadResult
    with pytest.raises(RealSyscallForbidden):
        kexec.unload(sc)
    with pytest.raises(RealSyscallForbidden):
        sc.reboot_kexec()
    with pytest.raises(RealSyscallForbidden):
        syscall.real_syscalls()  # raises before even opening libc
    assert fake.calls == [] and reboot.calls == []
    assert isinstance(RealSyscallForbidden("x"), KhotuiError)


class FakeLibc:
    def __init__(self):
        self.functions = []

    def __getitem__(self, name):
        assert name == "syscall"
        fn = FakeSyscall()
        self.functions.append(fn)
        return fn


def test_real_syscalls_only_builds_typed_function_pointers(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(syscall, "_open_libc", lambda: libc)
    monkeypatch.setattr(syscall, "_machine", lambda: "x86_64")
    sc = syscall.real_syscalls()
    load_fn, reboot_fn = libc.functions
    assert load_fn.argtypes == [ctypes.c_long, ctypes.c_int, ctypes.c_int, ctypes.c_ulong,
                                ctypes.c_char_p, ctypes.c_ulong]
    assert load_fn.restype is ctypes.c_long
    assert reboot_fn.argtypes[0] is ctypes.c_long
    assert load_fn.calls == [] and reboot_fn.calls == []  # constructing calls nothing
    assert sc.nr == 320


def test_importing_the_core_opens_no_libc():
    code = (
        "import ctypes\n"
        "def boom(*a, **k): raise SystemExit('CDLL constructed at import')\n"
        "ctypes.CDLL = boom\n"
        "import khotui.load.session, khotui.load.kexec, khotui.load.audit, khotui.load.opened\n"
        "assert not khotui.load.syscall.DRY_RUN_ONLY\n"
        "print('clean')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


# --- explanations ----------------------------------------------------------------------------

# Every errno of kho-abi.md §4.2 plus the ones kernel_read_file() and the LSM hooks return.
ALL = ["EPERM", "EINVAL", "EBUSY", "ENOEXEC", "EKEYREJECTED", "ENOKEY", "EBADMSG", "ENODATA",
       "EADDRNOTAVAIL", "ENOMEM", "EFBIG", "EIO", "EBADF", "EACCES", "ETXTBSY", "ENOSYS"]


@pytest.mark.parametrize("name", ALL)
def test_every_errno_has_words_for_the_operator(name):
    code = getattr(errno, name)
    ex = explain(code, ExplainContext())
    assert ex.errno_name == name and ex.errno == code
    assert ex.summary and ex.cause and ex.fix
    assert "khotui has no specific explanation" not in ex.cause
    assert name in str(ex)


def test_eperm_kexec_load_disabled_says_one_way_until_reboot():
    ex = explain(errno.EPERM, ExplainContext(is_root=True, has_cap_sys_boot=True,
                                             kexec_load_disabled=True, load_limit_reboot=-1,
                                             lockdown="none"))
    assert "kexec_load_disabled" in ex.cause
    assert "one-way" in ex.fix and "reboot" in ex.fix
    assert "CAP_SYS_BOOT" not in ex.cause and "lockdown" not in ex.cause


def test_eperm_not_root_names_cap_sys_boot_first():
    ex = explain(errno.EPERM, ExplainContext(is_root=False, kexec_load_disabled=True))
    assert ex.cause.startswith("khotui lacks CAP_SYS_BOOT")
    assert "root" in ex.cause and "sudo" in ex.fix
    assert "kexec_load_disabled" in ex.fix  # the second problem is still mentioned


def test_eperm_container():
    ex = explain(errno.EPERM, ExplainContext(is_root=True, has_cap_sys_boot=False,
                                             in_container=True))
    assert "CAP_SYS_BOOT" in ex.cause and "container" in ex.cause


def test_eperm_load_limit_used_up():
    ex = explain(errno.EPERM, ExplainContext(has_cap_sys_boot=True, kexec_load_disabled=False,
                                             load_limit_reboot=0, lockdown="none"))
    assert "kexec_load_limit_reboot is 0" in ex.cause
    assert "every call counts" in ex.cause
    assert "reboot" in ex.fix


def test_eperm_crash_load_uses_the_panic_limit():
    ex = explain(errno.EPERM, ExplainContext(has_cap_sys_boot=True, kexec_load_disabled=False,
                                             load_limit_reboot=-1, load_limit_panic=0,
                                             lockdown="none", flags=KEXEC_FILE_ON_CRASH))
    assert "kexec_load_limit_panic" in ex.cause


def test_eperm_lockdown_without_signature():
    ex = explain(errno.EPERM, ExplainContext(has_cap_sys_boot=True, kexec_load_disabled=False,
                                             load_limit_reboot=-1, lockdown="integrity"))
    assert "locked down (integrity)" in ex.cause and "signature" in ex.cause
    assert "signed" in ex.fix


def test_eperm_unknown_host_lists_causes_in_kernel_order():
    cause = explain(errno.EPERM, ExplainContext()).cause
    positions = [cause.index(word) for word in
                 ("CAP_SYS_BOOT", "kexec_load_disabled", "kexec_load_limit_reboot", "locked down")]
    assert positions == sorted(positions)


def test_eperm_root_lists_cap_last():
    cause = explain(errno.EPERM, ExplainContext(is_root=True)).cause
    assert cause.index("kexec_load_disabled") < cause.index("locked down") < \
        cause.index("CAP_SYS_BOOT")


def test_eperm_everything_ruled_out_points_at_lsm():
    ex = explain(errno.EPERM, ExplainContext(has_cap_sys_boot=True, kexec_load_disabled=False,
                                             load_limit_reboot=3, lockdown="none"))
    assert "LoadPin" in ex.cause and "dmesg" in ex.fix


def test_einval_no_cma_on_an_older_kernel():
    ex = explain(errno.EINVAL, ExplainContext(kernel_release="6.16.9", flags=KEXEC_FILE_NO_CMA))
    assert "NO_CMA" in ex.cause and "6.17" in ex.cause
    assert "--no-cma" in ex.fix


def test_einval_no_cma_on_a_new_kernel_is_not_blamed():
    ex = explain(errno.EINVAL, ExplainContext(kernel_release="7.3.4", flags=KEXEC_FILE_NO_CMA))
    assert "NO_CMA" not in ex.cause


def test_einval_cmdline_too_long_counts_the_elfcorehdr_reserve():
    ex = explain(errno.EINVAL, ExplainContext(image_cmdline_size=2047, cmdline_len=2030))
    assert "too long" in ex.cause
    assert "2030" in ex.cause and "2047" in ex.cause and "at most 2017" in ex.cause
    assert "13 bytes" in ex.fix
    ok = explain(errno.EINVAL, ExplainContext(image_cmdline_size=2047, cmdline_len=2017))
    assert "too long" not in ok.cause


def test_einval_arm64_not_an_image():
    ex = explain(errno.EINVAL, ExplainContext(arch="aarch64", kernel_format="gzip",
                                              kernel_path="/boot/vmlinuz-7.3.4-arm64"))
    assert "arm64 Image" in ex.cause and "/boot/vmlinuz-7.3.4-arm64 is gzip" in ex.cause
    assert "zcat" in ex.fix


def test_einval_empty_initrd():
    ex = explain(errno.EINVAL, ExplainContext(initrd_size=0, initrd_path="/boot/initrd.img"))
    assert "initrd /boot/initrd.img is empty" in ex.cause


def test_eaddrnotavail_with_kho_names_the_segment_and_regions():
    ctx = ExplainContext(kho_enabled=True, failing_segment="initrd",
                         failing_segment_memsz=64 << 20,
                         regions_tried=[("lowmem", 48 << 20), ("global", 8 << 20),
                                        ("node0", 8 << 20), ("node1", 8 << 20)])
    ex = explain(errno.EADDRNOTAVAIL, ctx)
    assert ex.cause.startswith("initrd (64 MiB) fits in no scratch region: lowmem 48 MiB, "
                               "global 8 MiB, node0 8 MiB, node1 8 MiB")
    assert "smaller initrd" in ex.fix and "kho_scratch=" in ex.fix and "cold boot" in ex.fix


def test_eaddrnotavail_with_kho_without_a_prediction():
    ex = explain(errno.EADDRNOTAVAIL, ExplainContext(kho_enabled=True))
    assert "scratch region" in ex.cause and "kho_scratch=" in ex.fix


def test_eaddrnotavail_without_kho_and_for_crash():
    assert "System RAM" in explain(errno.EADDRNOTAVAIL, ExplainContext(kho_enabled=False)).cause
    crash = explain(errno.EADDRNOTAVAIL, ExplainContext(kho_enabled=True,
                                                        flags=KEXEC_FILE_ON_CRASH))
    assert "crashkernel" in crash.cause


@pytest.mark.parametrize("name", ["EKEYREJECTED", "ENOKEY", "EBADMSG", "ENODATA"])
def test_signature_errnos(name):
    ex = explain(getattr(errno, name), ExplainContext(secure_boot=True))
    assert "signature" in ex.summary
    assert "Secure Boot" in ex.cause
    assert "signed" in ex.fix


def test_enoexec_names_the_file_and_format():
    ex = explain(errno.ENOEXEC, ExplainContext(kernel_path="/boot/vmlinux", kernel_format="ELF"))
    assert "/boot/vmlinux is not a bzImage64" in ex.cause and "ELF" in ex.cause


def test_efbig_names_the_big_file():
    ex = explain(errno.EFBIG, ExplainContext(initrd_size=5 << 30, initrd_path="/boot/big.img",
                                             kernel_size=12 << 20))
    assert "initrd /boot/big.img is 5 GiB" in ex.cause and "4 GiB" in ex.cause
    assert "kernel" not in ex.cause.split(";")[0]


def test_ebusy_and_etxtbsy():
    assert "in progress" in explain(errno.EBUSY).summary
    assert "writing" in explain(errno.ETXTBSY).summary


def test_unknown_errno_is_generic_with_strerror():
    ex = explain(errno.EXDEV)
    assert ex.errno_name == "EXDEV"
    assert ex.summary == "Invalid cross-device link"
    assert "dmesg" in ex.fix


def test_explanations_write_sizes_with_the_one_formatter():
    from khotui import units
    size = (4 << 30) + (40 << 20)
    ex = explain(errno.EFBIG, ExplainContext(initrd_size=size, initrd_path="/boot/big.img"))
    assert units.size(size) == "4.0 GiB" and "/boot/big.img is 4.0 GiB;" in ex.cause


def test_einval_cmdline_limit_is_the_one_in_cmdline_py():
    from khotui.cmdline import accepted_length
    limit = accepted_length(4096)
    ex = explain(errno.EINVAL, ExplainContext(image_cmdline_size=4096, cmdline_len=limit + 1))
    assert f"at most {limit}" in ex.cause and "by 1 bytes" in ex.fix
    ok = explain(errno.EINVAL, ExplainContext(image_cmdline_size=4096, cmdline_len=limit))
    assert "too long" not in ok.cause


def test_typed_values_survive_a_real_foreign_call():
    """Through a genuine C function pointer (a ctypes callback with the syscall's prototype),
    so ctypes itself converts the wrapper's values, as it would for libc's syscall()."""
    seen = []
    proto = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_int, ctypes.c_int,
                             ctypes.c_ulong, ctypes.c_char_p, ctypes.c_ulong)

    def callback(nr, kfd, ifd, cmdline_len, cmdline, flags):
        seen.append((nr, kfd, ifd, cmdline_len, ctypes.string_at(cmdline, cmdline_len), flags))
        return 0

    c_fn = proto(callback)
    kexec.load(11, None, "kho=on", flags=KEXEC_FILE_DEBUG,
               syscalls=LibcSyscalls(c_fn, machine="x86_64"))
    assert seen == [(320, 11, -1, 7, b"kho=on\0", KEXEC_FILE_DEBUG | KEXEC_FILE_NO_INITRAMFS)]
