"""Every JSON object the CLI prints, written in one place with its `schema`.

The versioning rule (README, "JSON for scripts"): each object names its kind and version as
`"schema": "khotui.<kind>/<N>"` (khotui.status/1, khotui.plan/1, khotui.load/1, khotui.unload/1,
khotui.kernels/1, khotui.error/1, khotui.verify/1; the receipt file khotui.receipt/1). N goes
up only when a field is removed, renamed or changes meaning; a new field keeps N, so a script
checks the kind and N and ignores fields it does not know. `schema` is added here, after the
command built its object: whatever else a command puts in its object (another field, a
top-level note) keeps it.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

SCHEMA_VERSION = 1
JSON_CHUNK = 64 << 10


def schema(kind: str) -> str:
    return f"khotui.{kind}/{SCHEMA_VERSION}"


def write_json(kind: str, obj: dict[str, Any], out: TextIO | None = None) -> None:
    """`obj` with `schema` first, as one indented JSON object and a newline."""
    out = out or sys.stdout
    tagged: dict[str, Any] = {"schema": schema(kind)}
    tagged.update((k, v) for k, v in obj.items() if k != "schema")
    # In 64 KiB pieces: json.dump() writes every token separately (200,000 writes for the
    # status of a 10,000-node KHO FDT), each a syscall when stdout is unbuffered
    # (PYTHONUNBUFFERED, python -u); json.dumps() would hold the whole text at once.
    parts: list[str] = []
    size = 0
    for part in json.JSONEncoder(indent=2, sort_keys=False).iterencode(tagged):
        parts.append(part)
        size += len(part)
        if size >= JSON_CHUNK:
            out.write("".join(parts))
            parts, size = [], 0
    parts.append("\n")
    out.write("".join(parts))
    out.flush()


def write_error(message: str, path: str | None = None, fix: str | None = None,
                out: TextIO | None = None) -> None:
    """The error object of a command run with --json (it exits 2)."""
    write_json("error", {"error": {"message": message, "path": path, "fix": fix}}, out)
