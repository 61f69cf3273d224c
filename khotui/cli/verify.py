"""`khotui verify`: the receipt of the load against the host after the kexec (see
khotui.load.verify), printed as one line per check and a verdict, or as khotui.verify/1 JSON.
Exit 0 everything arrived, 1 something did not, 2 bad input (cli.main maps a KhotuiError,
a ReceiptError included, to 2 with the file and the fix)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from khotui.cli.jsonout import write_json
from khotui.load import receipt
from khotui.load.verify import FAIL, PASS, verify
from khotui.plan import host_status

EXIT_OK, EXIT_FAILED = 0, 1
MARK = {PASS: "ok  ", FAIL: "FAIL", "skip": "skip"}


def run(args: argparse.Namespace, root: Path, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    path = args.receipt or receipt.default_path()
    rec = receipt.read(path)
    verdict = verify(rec, host_status(root))
    if args.json:
        obj = verdict.as_dict()
        obj["receipt"] = str(path)
        obj["loaded_at"] = rec.get("written_at")
        write_json("verify", obj, out)
    else:
        host = rec["host"] if isinstance(rec["host"], dict) else {}
        out.write(f"receipt {path} (written {rec.get('written_at')}, on "
                  f"{host.get('release')})\n")
        for c in verdict.checks:
            out.write(f"  {MARK.get(c.status, c.status):4} {c.id:15} {c.message}\n")
        out.write(verdict.summary() + "\n")
    return EXIT_OK if verdict.ok else EXIT_FAILED
