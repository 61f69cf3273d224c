#!/usr/bin/python
"""khotui.fleet.khotui_plan: `khotui plan --json` on the target, read into task results."""

from __future__ import annotations

DOCUMENTATION = r"""
module: khotui_plan
short_description: Dry-run a KHO kexec load with khotui (would it fit, which checks fail)
description:
  - Runs C(khotui plan --json) on the target. Read-only; runs in check mode.
  - A plan that would fail is not a failed task; C(fits) says it. Bad input (a missing
    kernel file, an unreadable snapshot) fails the task with khotui's message and fix.
options:
  khotui_bin: {description: khotui on the target, type: str, default: khotui}
  kernel: {description: kernel image on the target, or C(default), type: str, required: true}
  initrd: {description: initrd on the target, type: str}
  append: {description: text added to the running command line, type: str}
  cmdline: {description: the exact next command line, type: str}
  root: {description: a snapshot directory to review instead of the live host, type: path}
author: khotui
"""

EXAMPLES = r"""
- khotui.fleet.khotui_plan:
    kernel: /boot/vmlinuz-7.3.4
  register: plan
"""

RETURN = r"""
fits: {description: the load would succeed, type: bool, returned: success}
exact: {description: nothing was assumed, type: bool, returned: success}
errno: {description: the errno the load would fail with, type: str, returned: success}
message: {description: why it would fail and what to do, type: str, returned: success}
checks_failed: {description: ids of the failing checks, type: list, returned: success}
failures: {description: each failing check's id, message and fix, type: list, returned: success}
plan: {description: the whole khotui.plan/1 object, type: dict, returned: success}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.khotui.fleet.plugins.module_utils.khotui_cli import (  # noqa: E402
    COMMON_ARGS,
    LOAD_ARGS,
    failed_checks,
    load_argv,
    run_json,
)


def main():
    module = AnsibleModule(argument_spec={**COMMON_ARGS, **LOAD_ARGS}, supports_check_mode=True)
    rc, plan, _stderr = run_json(module, "plan", ["plan", "--json", *load_argv(module)])
    ids, failures = failed_checks(plan)
    module.exit_json(changed=False, exit_code=rc, fits=bool(plan.get("would_succeed")),
                     exact=bool(plan.get("exact")), errno=plan.get("errno"),
                     message=plan.get("message"), checks_failed=ids, failures=failures,
                     assumptions=plan.get("assumptions") or [], plan=plan)


if __name__ == "__main__":
    main()
