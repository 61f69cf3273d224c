"""Who besides root could rewrite a file khotui is about to preview or load.

The kernel reads the kernel and initrd through the descriptors khotui hashed, but anyone who
can write the file itself could change its content between the hash and the syscall. The rule
is stated once here and used by the plan's checks (on the paths) and by the load (on the opened
descriptors).
"""

from __future__ import annotations

import os
import pwd
import stat

from khotui.errors import Problem


def owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def writable_by_others(role: str, path: str, st: os.stat_result) -> list[Problem]:
    """Anyone but root who can write the file could change it between hash and load."""
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
    return problems
