"""Who besides root could rewrite a file khotui is about to preview or load.

The kernel reads the kernel and initrd through the descriptors khotui hashed, but anyone who
can write the file itself could change its content between the hash and the syscall. The rule
is stated once here and used by the plan's checks (on the paths, as the failing check
`file-writable`, which `--force` can override) and by the load (on the opened descriptors).

Three ways someone else could change the bytes:
- the owner and mode bits (not root; group- or world-writable);
- a POSIX ACL granting write to a named user or group (`system.posix_acl_access`, which the mode
  bits alone do not show: with an ACL the group bits are the ACL mask, acl(5));
- a filesystem that is not local (FUSE, NFS, 9p, CIFS/SMB, Ceph...): the server or the FUSE
  daemon can hand the kernel's read other bytes than khotui's hash read, whatever the mode says.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import stat
import struct

from khotui.errors import Problem


def owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


# -- POSIX ACLs ----------------------------------------------------------------------------------
# The xattr value is `struct posix_acl_xattr_header` (u32 a_version = 2) followed by
# `struct posix_acl_xattr_entry` (u16 e_tag, u16 e_perm, u32 e_id), little-endian
# (include/uapi/linux/posix_acl_xattr.h, include/uapi/linux/posix_acl.h).
ACL_XATTR = "system.posix_acl_access"
ACL_XATTR_VERSION = 2
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20)
ACL_WRITE = 0x02
_ENTRY = struct.Struct("<HHI")


def acl_writers(value: bytes) -> list[tuple[str, int]]:
    """The named users and groups the ACL lets write: [("user", uid), ("group", gid)].

    A named entry's write is effective only if the mask (ACL_MASK) allows write too (acl(5),
    "ACCESS CHECK ALGORITHM"). The owning group's entry is left to the mode check (with an ACL
    the mode's group bits are the mask). Named entries for uid/gid 0 are root: not others."""
    if len(value) < 4 or struct.unpack_from("<I", value)[0] != ACL_XATTR_VERSION:
        return []
    named: list[tuple[str, int]] = []
    mask_write = True
    for off in range(4, len(value) - _ENTRY.size + 1, _ENTRY.size):
        tag, perm, ident = _ENTRY.unpack_from(value, off)
        if tag == ACL_MASK:
            mask_write = bool(perm & ACL_WRITE)
        elif tag in (ACL_USER, ACL_GROUP) and perm & ACL_WRITE and ident != 0:
            named.append(("user" if tag == ACL_USER else "group", ident))
    return named if mask_write else []


def _acl(fd: int | None, path: str) -> bytes | None:
    try:
        return os.getxattr(fd if fd is not None else path, ACL_XATTR)
    except OSError:  # ENODATA: no ACL; EOPNOTSUPP: the filesystem has none; gone: said elsewhere
        return None


# -- the filesystem ------------------------------------------------------------------------------
# f_type magic numbers, include/uapi/linux/magic.h (and fs/smb/client/cifsglob.h for SMB2)
REMOTE_FS = {
    0x65735546: "FUSE",
    0x6969: "NFS",
    0x01021997: "9p (v9fs)",
    0xFF534D42: "CIFS",
    0xFE534D42: "SMB2",
    0x517B: "SMB",
    0x00C36400: "Ceph",
    0x73757245: "Coda",
    0x5346414F: "AFS",
    0x6B414653: "AFS (kAFS)",
    0x47504653: "GPFS",
    0x0BD00BD0: "Lustre",
    0x786F4256: "VirtualBox shared folder",
    0x564C: "NCP",
}


class _Statfs(ctypes.Structure):
    # struct statfs (64-bit Linux, bits/statfs.h): only f_type is read; the tail is padding
    _fields_ = [("f_type", ctypes.c_long), ("_rest", ctypes.c_byte * 120)]


def fs_type(fd: int | None, path: str) -> int | None:
    """The f_type of the filesystem holding the file (fstatfs(2)); None when unknown."""
    try:
        # CDLL(None): the libc already in the process (find_library would run ldconfig)
        libc = ctypes.CDLL(None, use_errno=True)
        buf = _Statfs()
        if fd is not None:
            ret = libc.fstatfs(ctypes.c_int(fd), ctypes.byref(buf))
        else:
            ret = libc.statfs(os.fsencode(path), ctypes.byref(buf))
    except (OSError, AttributeError):
        return None
    if ret != 0:
        return None
    return int(buf.f_type) & 0xFFFFFFFF


def writable_by_others(role: str, path: str, st: os.stat_result, *,
                       fd: int | None = None) -> list[Problem]:
    """Anyone but root who can write the file (or serve its bytes) could change it between
    hash and load. `fd` (an open descriptor of the same file) is preferred over `path`."""
    problems = []
    if st.st_uid != 0:
        problems.append(Problem(
            f"the {role} is owned by {owner_name(st.st_uid)}, not root: that user could change "
            "it after khotui hashed it and before it is loaded", path,
            f"chown root:root {path}; chmod go-w {path} (or copy the {role} to a root-owned "
            "directory such as /boot and use that copy)"))
    if st.st_mode & stat.S_IWOTH:
        problems.append(Problem(
            f"the {role} is world-writable (mode {stat.S_IMODE(st.st_mode):04o}): anyone could "
            "change it before it is loaded", path, f"chmod o-w {path}"))
    elif st.st_mode & stat.S_IWGRP and st.st_gid != 0:
        problems.append(Problem(
            f"the {role} is writable by group {st.st_gid} (mode {stat.S_IMODE(st.st_mode):04o}): "
            "its members could change it before it is loaded", path, f"chmod g-w {path}"))
    acl = _acl(fd, path)
    writers = acl_writers(acl) if acl else []
    if writers:
        who = ", ".join(f"{kind} {owner_name(ident) if kind == 'user' else ident}"
                        for kind, ident in writers)
        problems.append(Problem(
            f"the {role} has a POSIX ACL letting {who} write it: they could change it before it "
            "is loaded", path, f"setfacl -b {path} (getfacl {path} shows the entries)"))
    magic = fs_type(fd, path)
    if magic is not None and magic in REMOTE_FS:
        problems.append(Problem(
            f"the {role} is on a {REMOTE_FS[magic]} filesystem (f_type 0x{magic:x}): its server "
            "or daemon can hand the kernel other bytes than khotui hashed", path,
            f"copy the {role} to a local filesystem such as /boot and load that copy"))
    return problems
