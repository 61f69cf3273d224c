"""khotui.fleet.khotui_new_boot: wait, from the controller, until the host answers from a new boot.

After `systemctl kexec` is fired, `wait_for_connection` alone can return at once: systemd is
still stopping services in the old kernel and the host still answers. Verifying then would
fail `rebooted` in the old kernel, a false failed-verify that stops the rollout. So this waits
until the host's boot id (/proc/sys/kernel/random/boot_id, a new random one every boot) differs
from the one read before the kexec, treating a dropped or refused connection as "still on its
way" and resetting the connection between tries (an SSH control socket dies with the old
kernel), as ansible.builtin.reboot does; but it never executes anything itself.
"""

from __future__ import annotations

import contextlib
import time

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.action import ActionBase

BOOT_ID = "cat /proc/sys/kernel/random/boot_id"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        before = str(args.get("before") or "").strip()
        command = args.get("command") or BOOT_ID
        timeout = float(args.get("timeout", 600))
        pause = float(args.get("sleep", 2))
        start = time.monotonic()
        last = "no answer yet"
        while True:
            try:
                out = self._low_level_execute_command(command)
                now = str(out.get("stdout") or "").strip()
                if out.get("rc") == 0 and now and now != before:
                    result.update(changed=False, boot_id=now,
                                  elapsed=round(time.monotonic() - start, 1))
                    return result
                last = (f"still the boot from before the kexec ({now})" if out.get("rc") == 0
                        else f"`{command}` failed: {str(out.get('stderr') or '').strip()}")
            except AnsibleConnectionFailure as exc:
                last = f"unreachable: {exc}"
                # a connection that cannot reset now is tried again on the next round
                with contextlib.suppress(Exception):
                    self._connection.reset()
            if time.monotonic() - start > timeout:
                result.update(failed=True, boot_id=None,
                              msg=f"no new boot within {timeout:g} s after the kexec: {last}")
                return result
            time.sleep(pause)
