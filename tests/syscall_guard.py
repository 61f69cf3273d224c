"""Run a command under a seccomp filter that kills the process on any kexec or reboot syscall.

This is the proof that dry-run paths (`status`, `plan`, `snapshot`, the demo TUI) cannot reach
a state-changing syscall: the kernel itself stops the process with SIGSYS *before* the syscall
runs, so the test is also safe to run as root on a real host.

Usage: python tests/syscall_guard.py CMD [ARGS...]   (the filter survives execve)
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_KILL_PROCESS = 0x80000000

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06

# (audit arch, {syscall name: number}) from include/uapi/linux/audit.h and the syscall tables
ARCHES = {
    "x86_64": (0xC000003E, {"kexec_file_load": 320, "kexec_load": 246, "reboot": 169}),
    "aarch64": (0xC00000B7, {"kexec_file_load": 294, "kexec_load": 104, "reboot": 142}),
}
FORBIDDEN = ARCHES


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def install() -> None:
    audit_arch, numbers = ARCHES[platform.machine()]
    nrs = list(numbers.values())
    prog = [
        _insn(BPF_LD_W_ABS, 0, 0, 4),                       # seccomp_data.arch
        _insn(BPF_JEQ_K, 1, 0, audit_arch),
        _insn(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),   # foreign ABI: refuse outright
        _insn(BPF_LD_W_ABS, 0, 0, 0),                       # seccomp_data.nr
    ]
    for i, nr in enumerate(nrs):
        remaining = len(nrs) - i - 1
        # equal: jump over the remaining compares and the ALLOW to the KILL
        prog.append(_insn(BPF_JEQ_K, remaining + 1, 0, nr))
    prog.append(_insn(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    prog.append(_insn(BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS))
    buf = ctypes.create_string_buffer(b"".join(prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def supported() -> bool:
    return platform.system() == "Linux" and platform.machine() in ARCHES


if __name__ == "__main__":
    install()
    os.execvp(sys.argv[1], sys.argv[1:])
