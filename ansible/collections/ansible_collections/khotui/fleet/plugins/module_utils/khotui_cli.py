"""Running khotui on the target and reading its JSON, for the khotui.fleet modules.

Stdlib only (plus AnsibleModule, passed in): it runs on the managed host with that host's
Python. The contract it reads is khotui's (README "JSON for scripts"): every object names its
`schema` "khotui.<kind>/1"; exit 0 yes, 1 no (would fail / did not arrive), 2 bad input with a
khotui.error/1 object {"error": {message, path, fix}}.
"""

from __future__ import annotations

import json
import os

SCHEMA_VERSION = "1"

# The options every module shares: which khotui, and which host state it reads.
COMMON_ARGS = {
    "khotui_bin": {"type": "str", "default": "khotui"},
    "root": {"type": "path", "required": False},
}

# The options of the commands that take a kernel (plan, load).
LOAD_ARGS = {
    "kernel": {"type": "str", "required": False},
    "initrd": {"type": "str", "required": False},
    "append": {"type": "str", "required": False},
    "cmdline": {"type": "str", "required": False},
}


def find_khotui(module):
    """The khotui executable on this host, or a failed task naming the fix."""
    name = module.params["khotui_bin"]
    if os.sep in name:
        if os.path.isfile(name) and os.access(name, os.X_OK):
            return name
        module.fail_json(msg=f"khotui_bin {name} is not an executable file on this host; install "
                             "khotui there or set khotui_bin to its path",
                         error={"message": "not an executable file", "path": name,
                                "fix": "install khotui on the host or set khotui_bin"})
    found = module.get_bin_path(name)
    if found is None:
        module.fail_json(msg=f"{name} is not on this host's PATH; install khotui there or set "
                             "khotui_bin to its full path",
                         error={"message": "not on PATH", "path": name,
                                "fix": "install khotui on the host or set khotui_bin"})
    return found


def load_argv(module):
    """--kernel/--initrd/--cmdline/--append/--root from the module's options; a missing kernel
    or both command-line options fail the task before khotui runs."""
    p = module.params
    if not p.get("kernel"):
        module.fail_json(msg="khotui_kernel is not set for this host: set it (a path on the "
                             "host, or `default`) as a host or group variable",
                         error={"message": "khotui_kernel is not set", "path": None,
                                "fix": "set khotui_kernel for the host or its group"})
    if p.get("append") is not None and p.get("cmdline") is not None:
        module.fail_json(msg="both khotui_append and khotui_cmdline are set for this host; "
                             "give one: append adds to the running command line, cmdline "
                             "replaces it",
                         error={"message": "khotui_append and khotui_cmdline both set",
                                "path": None, "fix": "set only one of them"})
    argv = ["--kernel", p["kernel"]]
    for opt in ("initrd", "append", "cmdline"):
        if p.get(opt) is not None:
            argv += ["--" + opt, p[opt]]
    return argv + root_argv(module)


def root_argv(module):
    root = module.params.get("root")
    return ["--root", root] if root else []


def run_json(module, kind, argv):
    """Run khotui with `argv`; (exit code, its JSON object, stderr). A khotui.error/1 answer
    (exit 2) or anything that is not the expected kind's JSON fails the task with khotui's
    message, path and fix."""
    exe = find_khotui(module)
    rc, out, err = module.run_command([exe, *argv], check_rc=False,
                                      environ_update={"LC_ALL": "C.UTF-8"})
    err_text = (err or "").strip()
    try:
        obj = json.loads(out)
    except ValueError:
        obj = None
    schema = obj.get("schema") if isinstance(obj, dict) else None
    cmd = " ".join([module.params["khotui_bin"], *argv])
    if schema == "khotui.error/" + SCHEMA_VERSION:
        e = obj.get("error") or {}
        msg = f"khotui: {e.get('message')}" + (f" ({e['path']})" if e.get("path") else "")
        if e.get("fix"):
            msg += f"; fix: {e['fix']}"
        module.fail_json(msg=msg, exit_code=rc, cmd=cmd, error=e, stderr=err_text)
    if schema != f"khotui.{kind}/{SCHEMA_VERSION}":
        last = ": " + err_text.splitlines()[-1] if err_text else ""
        module.fail_json(msg=f"`{cmd}` did not answer with khotui.{kind}/{SCHEMA_VERSION} JSON "
                             f"(exit {rc}){last}; is khotui_bin a khotui that has --json?",
                         exit_code=rc, cmd=cmd, stderr=err_text,
                         error={"message": f"no khotui.{kind} JSON",
                                "path": module.params["khotui_bin"],
                                "fix": "install a khotui with --json on the host"})
    return rc, obj, err_text


def failed_checks(obj):
    """The failing checks of a plan or load object: ids, and each one's message and fix."""
    checks = [c for c in obj.get("checks") or [] if c.get("status") == "fail"]
    return ([c.get("id") for c in checks],
            [{"id": c.get("id"), "message": c.get("message"), "fix": c.get("fix")}
             for c in checks])
