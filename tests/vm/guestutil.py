#!/usr/bin/env python3
"""Guest-side helpers for the VM tier: standard library only, run as root inside the guest.

    guestutil.py load KERNEL [--initrd FILE] [--cmdline STR] [--flags N] [--ima-copy DIR]
        kexec_file_load(2) through ctypes (syscall 320 on x86_64, 294 on arm64); prints a JSON
        line {"errno": N, "error": "...", "flags": N}; exit 0 on success, 1 on failure.
        --cmdline defaults to $KHO_NEXT_CMDLINE (set by the init script); flags default to
        KEXEC_FILE_DEBUG (0x8), plus KEXEC_FILE_NO_INITRAMFS (0x4) without --initrd.
        --ima-copy DIR: after opening the files (opening them as root adds IMA FILE_CHECK
        measurements under ima_policy=tcb) and right before the syscall, copy the IMA
        measurement list (binary_runtime_measurements, runtime_measurements_count) to DIR:
        the list the kernel sizes its kexec IMA segment from.
    guestutil.py kexec
        reboot(LINUX_REBOOT_CMD_KEXEC); only returns (exit 1) if the kernel refused.
    guestutil.py kmsg OUT
        copy every /dev/kmsg record currently in the buffer to OUT (non-blocking), one
        "[seconds] message" line each, like dmesg.
    guestutil.py scratch
        the KHO scratch regions from debugfs as JSON [{"phys": N, "len": N}, ...].
    guestutil.py copytree SRC DST
        copy a directory tree (e.g. a snapshot) to the out share, without metadata.
    guestutil.py luo-hold NAME TOKEN CONTENT
        open /dev/liveupdate, create the LUO session NAME, write CONTENT into a new memfd and
        preserve it in the session under TOKEN; then fork a holder (own session, stdio on
        /dev/null) that keeps both fds (and the device) open until it is killed, so they are
        still open at reboot(KEXEC), when liveupdate_reboot() serialises the sessions. Prints
        {"pid", "session": NAME, "token", "size", "session_fd", "memfd"} once the holder holds
        them; exit 1 (with {"error", "errno", "step"}) if an ioctl fails.
    guestutil.py luo-retrieve NAME TOKEN
        in the next kernel: open /dev/liveupdate, retrieve the session NAME and the fd preserved
        under TOKEN, print {"session": NAME, "token", "content", "size"} (content: the memfd's
        bytes as text), then finish the session (LIVEUPDATE_SESSION_FINISH).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import platform
import shutil
import signal
import sys

KEXEC_FILE_NO_INITRAMFS = 0x4
KEXEC_FILE_DEBUG = 0x8
LINUX_REBOOT_CMD_KEXEC = 0x45584543
SYSCALLS = {"x86_64": 320, "aarch64": 294, "riscv64": 294}
KHO = "/sys/kernel/debug/kho"

libc = ctypes.CDLL(None, use_errno=True)


def load(argv: list[str]) -> int:
    kernel, initrd, cmdline, flags = None, None, os.environ.get("KHO_NEXT_CMDLINE"), None
    ima_copy = None
    it = iter(argv)
    for a in it:
        if a == "--initrd":
            initrd = next(it)
        elif a == "--cmdline":
            cmdline = next(it)
        elif a == "--flags":
            flags = int(next(it), 0)
        elif a == "--ima-copy":
            ima_copy = next(it)
        elif kernel is None:
            kernel = a
        else:
            raise SystemExit(f"guestutil load: unexpected argument {a!r}")
    if kernel is None or cmdline is None:
        raise SystemExit("usage: guestutil.py load KERNEL [--initrd F] [--cmdline S] [--flags N]")
    if flags is None:
        flags = KEXEC_FILE_DEBUG | (0 if initrd else KEXEC_FILE_NO_INITRAMFS)
    kfd = os.open(kernel, os.O_RDONLY)
    ifd = os.open(initrd, os.O_RDONLY) if initrd else -1
    buf = cmdline.encode() + b"\0"
    if ima_copy and os.path.isdir("/sys/kernel/security/ima"):
        # securityfs is never measured (dont_measure fsmagic), so this copy adds no entry.
        os.makedirs(ima_copy, exist_ok=True)
        for name in ("binary_runtime_measurements", "runtime_measurements_count"):
            with open(f"/sys/kernel/security/ima/{name}", "rb") as src, \
                    open(os.path.join(ima_copy, name), "wb") as dst:
                shutil.copyfileobj(src, dst)
    nr = SYSCALLS[platform.machine()]
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(nr), ctypes.c_int(kfd), ctypes.c_int(ifd),
                      ctypes.c_ulong(len(buf)), ctypes.c_char_p(buf), ctypes.c_ulong(flags))
    err = ctypes.get_errno() if rc != 0 else 0
    print(json.dumps({"errno": err, "error": errno.errorcode.get(err, "") if err else "",
                      "strerror": os.strerror(err) if err else "", "flags": flags,
                      "cmdline": cmdline}))
    return 0 if rc == 0 else 1


def kexec() -> int:
    sys.stdout.flush()
    rc = libc.reboot(ctypes.c_int(LINUX_REBOOT_CMD_KEXEC))
    err = ctypes.get_errno()
    print(f"reboot(LINUX_REBOOT_CMD_KEXEC) returned {rc}: errno {err} "
          f"({errno.errorcode.get(err, '?')}: {os.strerror(err)})")
    return 1


def kmsg(out: str) -> int:
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    lines = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # EPIPE: a record was overwritten; keep reading
                continue
            if not rec:
                break
            head, _, rest = rec.decode(errors="replace").partition(";")
            msg = rest.split("\n", 1)[0]  # continuation lines (" KEY=value") dropped
            fields = head.split(",")
            usec = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 0
            lines.append(f"[{usec // 1000000:5d}.{usec % 1000000:06d}] {msg}")
    finally:
        os.close(fd)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    return 0


def scratch() -> int:
    def hexes(name: str) -> list[int]:
        with open(f"{KHO}/out/{name}") as f:
            return [int(x, 16) for x in f.read().split()]

    phys, lens = hexes("scratch_phys"), hexes("scratch_len")
    print(json.dumps([{"phys": p, "len": n} for p, n in zip(phys, lens, strict=True)]))
    return 0


def copytree(src: str, dst: str) -> int:
    shutil.copytree(src, dst, copy_function=shutil.copyfile, dirs_exist_ok=True,
                    symlinks=True)
    return 0


# include/uapi/linux/liveupdate.h (Linux 7.3): _IO(LIVEUPDATE_IOCTL_TYPE 0xBA, nr), no size in
# the number (the size is the struct's first u32); the session fds come back O_CLOEXEC
# (luo_ioctl_create_session(), kernel/liveupdate/luo_core.c).
LIVEUPDATE_IOCTL_CREATE_SESSION = 0xBA00      # struct liveupdate_ioctl_create_session
LIVEUPDATE_IOCTL_RETRIEVE_SESSION = 0xBA01    # struct liveupdate_ioctl_retrieve_session
LIVEUPDATE_SESSION_PRESERVE_FD = 0xBA40       # struct liveupdate_session_preserve_fd
LIVEUPDATE_SESSION_RETRIEVE_FD = 0xBA41       # struct liveupdate_session_retrieve_fd
LIVEUPDATE_SESSION_FINISH = 0xBA42            # struct liveupdate_session_finish
LIVEUPDATE_SESSION_NAME_LENGTH = 64


class _LuoSessionArg(ctypes.Structure):
    """struct liveupdate_ioctl_create_session / _retrieve_session: {u32 size; s32 fd;
    u8 name[64]}."""
    _fields_ = [("size", ctypes.c_uint32), ("fd", ctypes.c_int32),
                ("name", ctypes.c_char * LIVEUPDATE_SESSION_NAME_LENGTH)]


class _LuoFdArg(ctypes.Structure):
    """struct liveupdate_session_preserve_fd / _retrieve_fd: {u32 size; s32 fd;
    __aligned_u64 token} (16 bytes)."""
    _fields_ = [("size", ctypes.c_uint32), ("fd", ctypes.c_int32), ("token", ctypes.c_uint64)]


class _LuoFinishArg(ctypes.Structure):
    """struct liveupdate_session_finish: {u32 size; u32 reserved}."""
    _fields_ = [("size", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


class _IoctlError(Exception):
    def __init__(self, step: str, err: int) -> None:
        super().__init__(step)
        self.step, self.err = step, err

    def report(self) -> str:
        return json.dumps({"step": self.step, "errno": self.err,
                           "error": errno.errorcode.get(self.err, ""),
                           "strerror": os.strerror(self.err)})


def _ioctl(fd: int, request: int, arg: ctypes.Structure, step: str) -> None:
    libc.ioctl.restype = ctypes.c_int
    arg.size = ctypes.sizeof(arg)
    if libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), ctypes.byref(arg)) != 0:
        raise _IoctlError(step, ctypes.get_errno())


def _open_device() -> int:
    try:
        return os.open("/dev/liveupdate", os.O_RDWR)
    except OSError as e:
        raise _IoctlError("open /dev/liveupdate", e.errno or 0) from None


def luo_hold(name: str, token: int, content: str) -> int:
    try:
        dev = _open_device()
        sess = _LuoSessionArg(name=name.encode())
        _ioctl(dev, LIVEUPDATE_IOCTL_CREATE_SESSION, sess, "LIVEUPDATE_IOCTL_CREATE_SESSION")
        # memfd_luo_can_preserve() (mm/memfd_luo.c): a shmem file with no link; the content
        # must be in before the preserve, which freezes the file (shmem_freeze())
        mfd = os.memfd_create("luo-payload", 0)
        data = content.encode()
        os.write(mfd, data)
        _ioctl(sess.fd, LIVEUPDATE_SESSION_PRESERVE_FD, _LuoFdArg(fd=mfd, token=token),
               "LIVEUPDATE_SESSION_PRESERVE_FD")
    except _IoctlError as e:
        print(e.report())
        return 1
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the holder: its own session, so no step's end or timeout reaches it
        os.close(ready_r)
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for n in (0, 1, 2):
            os.dup2(null, n)
        os.write(ready_w, b"ready")
        os.close(ready_w)
        while True:  # hold dev, the session and the memfd until killed (or the kexec)
            signal.pause()
    os.close(ready_w)
    os.read(ready_r, 16)
    # the holder has them; this process's copies go (the session stays open in the holder)
    for fd in (mfd, sess.fd, dev):
        os.close(fd)
    print(json.dumps({"pid": pid, "session": name, "token": token, "size": len(data),
                      "session_fd": sess.fd, "memfd": mfd}))
    return 0


def luo_retrieve(name: str, token: int) -> int:
    try:
        dev = _open_device()
        sess = _LuoSessionArg(name=name.encode())
        _ioctl(dev, LIVEUPDATE_IOCTL_RETRIEVE_SESSION, sess, "LIVEUPDATE_IOCTL_RETRIEVE_SESSION")
        got = _LuoFdArg(token=token)
        _ioctl(sess.fd, LIVEUPDATE_SESSION_RETRIEVE_FD, got, "LIVEUPDATE_SESSION_RETRIEVE_FD")
        size = os.fstat(got.fd).st_size
        data = os.pread(got.fd, size, 0)
        _ioctl(sess.fd, LIVEUPDATE_SESSION_FINISH, _LuoFinishArg(), "LIVEUPDATE_SESSION_FINISH")
    except _IoctlError as e:
        print(e.report())
        return 1
    print(json.dumps({"session": name, "token": token, "size": size,
                      "content": data.decode(errors="replace")}))
    return 0


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "load":
        return load(rest)
    if cmd == "kexec":
        return kexec()
    if cmd == "kmsg" and len(rest) == 1:
        return kmsg(rest[0])
    if cmd == "scratch":
        return scratch()
    if cmd == "copytree" and len(rest) == 2:
        return copytree(*rest)
    if cmd == "luo-hold" and len(rest) == 3:
        return luo_hold(rest[0], int(rest[1], 0), rest[2])
    if cmd == "luo-retrieve" and len(rest) == 2:
        return luo_retrieve(rest[0], int(rest[1], 0))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
