#!/usr/bin/python
"""khotui.fleet.khotui_load: `khotui load --json --yes --receipt FILE` on the target."""

from __future__ import annotations

DOCUMENTATION = r"""
module: khotui_load
short_description: Load the next kernel for a KHO kexec with khotui, writing a receipt
description:
  - Runs C(khotui load --json --yes --receipt FILE) on the target: the checks and the plan
    again on the very files loaded, then kexec_file_load(2). Never C(--force), never C(--exec)
    (the playbook executes the kexec itself, asynchronously).
  - With C(root) (a snapshot) the load is a dry run that changes nothing and writes no
    receipt; C(dry_run) says so.
  - A refused or failed load fails the task with the errno and khotui's explanation.
  - In check mode nothing runs.
options:
  khotui_bin: {description: khotui on the target, type: str, default: khotui}
  kernel: {description: kernel image on the target, or C(default), type: str, required: true}
  initrd: {description: initrd on the target, type: str}
  append: {description: text added to the running command line, type: str}
  cmdline: {description: the exact next command line, type: str}
  root: {description: a snapshot directory (the load is then a dry run), type: path}
  receipt: {description: where the receipt goes, type: path,
            default: /var/lib/khotui/receipt.json}
  log: {description: khotui's JSON audit log (khotui's default when unset), type: path}
author: khotui
"""

EXAMPLES = r"""
- khotui.fleet.khotui_load:
    kernel: /boot/vmlinuz-7.3.4
    receipt: /var/lib/khotui/receipt.json
"""

RETURN = r"""
loaded: {description: the image is loaded (false on a dry run), type: bool, returned: always}
dry_run: {description: a snapshot, nothing loaded, type: bool, returned: success}
errno: {description: the errno of a refused or failed load, type: str, returned: always}
receipt: {description: the receipt written, type: str, returned: success}
note: {description: khotui's note (dry run, refusal), type: str, returned: success}
checks_failed: {description: ids of the failing checks, type: list, returned: success}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.khotui.fleet.plugins.module_utils.khotui_cli import (  # noqa: E402
    COMMON_ARGS,
    LOAD_ARGS,
    failed_checks,
    load_argv,
    run_json,
)

DEFAULT_RECEIPT = "/var/lib/khotui/receipt.json"


def main():
    spec = {**COMMON_ARGS, **LOAD_ARGS,
            "receipt": {"type": "path", "default": DEFAULT_RECEIPT},
            "log": {"type": "path", "required": False}}
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    if module.check_mode:
        module.exit_json(changed=False, loaded=False, dry_run=True, errno=None,
                         note="check mode: nothing loaded")
    argv = ["load", "--json", "--yes", "--receipt", module.params["receipt"]]
    if module.params.get("log"):
        argv += ["--log", module.params["log"]]
    rc, obj, _stderr = run_json(module, "load", argv + load_argv(module))
    ids, failures = failed_checks(obj)
    done = obj.get("load") or {}
    dry_run = bool(obj.get("dry_run"))
    errno = done.get("errno") or obj.get("errno")
    result = {"exit_code": rc, "dry_run": dry_run, "errno": errno, "note": obj.get("note"),
              "checks_failed": ids, "failures": failures,
              "receipt": done.get("receipt"), "receipt_problem": done.get("receipt_problem"),
              "matches_prediction": done.get("matches_prediction"),
              # not `warnings`: Ansible reads that key as the module's own (deprecated)
              "khotui_warnings": done.get("warnings") or []}
    for w in result["khotui_warnings"]:
        module.warn(f"khotui load: {w}")
    loaded = rc == 0 and not dry_run and bool(done.get("ok"))
    if rc != 0:
        ex = done.get("explanation") or {}
        why = [obj.get("note") or f"failed (exit {rc})"]
        if ex:
            why.append(f"{errno}: {ex.get('summary')}; fix: {ex.get('fix')}")
        elif obj.get("message"):
            why.append(obj["message"])
        module.fail_json(msg="khotui load: " + "; ".join(why), loaded=loaded, changed=loaded,
                         **result)
    module.exit_json(changed=loaded, loaded=loaded, **result)


if __name__ == "__main__":
    main()
