"""A stand-in `khotui` for fleet tests of the live path: load, exec, verify, on this machine.

The real khotui loads only on a live KHO host (the VM tier). This one answers `plan`, `load` and
`verify` with khotui's JSON contract (schema, exit 0/1/2) so the playbook's exec and verify
phases and the batch stop run for real under Ansible; nothing is loaded. What it answers is
chosen by the kernel's file name: `ok`, `verify-fails` (the `kernel` check fails after the
kexec), `load-fails` (kexec_file_load returns ENOMEM). The load writes the receipt it is given
(the kernel name inside), which verify reads back.
"""

from __future__ import annotations

import json
import os
import sys


def _opt(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def _say(kind: str, obj: dict[str, object], code: int) -> int:
    print(json.dumps({"schema": f"khotui.{kind}/1", **obj}))
    return code


def main(argv: list[str]) -> int:
    command = argv[0]
    kernel = os.path.basename(_opt(argv, "--kernel") or "")
    ok_check = [{"id": "segments-fit", "status": "ok", "message": "fits", "fix": None}]
    if command == "plan":
        return _say("plan", {"would_succeed": True, "errno": None, "exact": True,
                             "message": None, "checks": ok_check}, 0)
    if command == "load":
        receipt = _opt(argv, "--receipt") or "receipt.json"
        if kernel == "load-fails":
            return _say("load", {"dry_run": False, "checks": ok_check, "note": None,
                                 "load": {"ok": False, "errno": "ENOMEM", "receipt": None,
                                          "explanation": {"summary": "out of memory",
                                                          "cause": "test", "fix": "free memory"}}},
                        1)
        with open(receipt, "w") as f:
            json.dump({"kernel": kernel}, f)
        return _say("load", {"dry_run": False, "checks": ok_check, "note": None,
                             "load": {"ok": True, "errno": None, "receipt": receipt}}, 0)
    if command == "verify":
        with open(_opt(argv, "--receipt") or "") as f:
            loaded = json.load(f)["kernel"]
        if loaded == "verify-fails":
            check = {"id": "kernel", "status": "fail",
                     "message": "the running kernel is not the loaded one"}
            return _say("verify", {"ok": False, "failed": ["kernel"], "checks": [check]}, 1)
        return _say("verify", {"ok": True, "failed": [],
                               "checks": [{"id": "kernel", "status": "pass", "message": "ok"}]}, 0)
    return _say("error", {"error": {"message": f"fake khotui: no {command}", "path": None,
                                    "fix": None}}, 2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
