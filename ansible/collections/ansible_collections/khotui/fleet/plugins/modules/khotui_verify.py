#!/usr/bin/python
"""khotui.fleet.khotui_verify: `khotui verify --json --receipt FILE` on the target."""

from __future__ import annotations

DOCUMENTATION = r"""
module: khotui_verify
short_description: After a KHO kexec, check with khotui that what the load recorded arrived
description:
  - Runs C(khotui verify --json --receipt FILE) on the target, in the new kernel. Read-only;
    runs in check mode.
  - Something that did not arrive fails the task, naming the failed checks; so does a
    missing, foreign or corrupt receipt.
options:
  khotui_bin: {description: khotui on the target, type: str, default: khotui}
  receipt: {description: the receipt the load wrote, type: path,
            default: /var/lib/khotui/receipt.json}
  root: {description: a snapshot taken after the kexec, to verify offline, type: path}
author: khotui
"""

EXAMPLES = r"""
- khotui.fleet.khotui_verify:
    receipt: /var/lib/khotui/receipt.json
"""

RETURN = r"""
verified: {description: everything the receipt recorded arrived, type: bool, returned: always}
checks_failed: {description: ids of the checks that failed, type: list, returned: always}
failures: {description: each failed check's id and message, type: list, returned: always}
verify: {description: the whole khotui.verify/1 object, type: dict, returned: success}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.khotui.fleet.plugins.module_utils.khotui_cli import (  # noqa: E402
    COMMON_ARGS,
    root_argv,
    run_json,
)


def main():
    spec = {**COMMON_ARGS, "receipt": {"type": "path", "default": "/var/lib/khotui/receipt.json"}}
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    argv = ["verify", "--json", "--receipt", module.params["receipt"], *root_argv(module)]
    rc, obj, _stderr = run_json(module, "verify", argv)
    failed = [c for c in obj.get("checks") or [] if c.get("status") == "fail"]
    result = {"exit_code": rc, "verified": rc == 0 and bool(obj.get("ok")),
              "checks_failed": [c.get("id") for c in failed],
              "failures": [{"id": c.get("id"), "message": c.get("message")} for c in failed],
              "verify": obj}
    if not result["verified"]:
        module.fail_json(msg="khotui verify: did not arrive: " + "; ".join(
            f"{c.get('id')} ({c.get('message')})" for c in failed), **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
