"""Every row of tests/bad_inputs.py through the public entry points: the expected exit code or
error, a message that names the file and carries a fix, and never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from khotui.errors import KhotuiError
from tests.bad_inputs import BAD_INPUTS, BadInput, Call, Cli
from tests.conftest import REPO


def _run(cli: Cli) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("KHOTUI_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "khotui", *cli.args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("row", BAD_INPUTS, ids=[r.id for r in BAD_INPUTS])
def test_bad_input(row: BadInput, tmp_path, shared):
    if row.needs_root and os.geteuid() != 0:
        pytest.skip("needs root to give a file to another user")
    target = row.build(tmp_path)
    if isinstance(target, Cli):
        result = _run(target)
        out = result.stdout + result.stderr
        assert "Traceback" not in out and "internal error" not in out, out
        assert result.returncode == row.exit, (result.returncode, out[-2000:])
        if row.finding is None:
            # exit 2: one message on stderr naming the file, with a fix
            assert row.fragment in result.stderr, result.stderr
            assert target.names in result.stderr and "fix:" in result.stderr, result.stderr
            return
        data = json.loads(result.stdout)
        found = [c for c in data["checks"] if c["id"] == row.finding]
        assert found, [c["id"] for c in data["checks"]]
        f = next((c for c in found if row.fragment in c["message"]), found[0])
        assert f["status"] == row.status, f
        assert row.fragment in f["message"], f
        assert target.names in f["message"], f
        assert f["fix"], f
        return
    assert isinstance(target, Call)
    if row.raises:
        with pytest.raises(KhotuiError) as info:
            target.fn()
        err = info.value
        assert row.fragment in err.message, err.message
        assert err.path is not None and target.names in err.path, err.path
        assert err.fix
        assert target.names in str(err) and "fix:" in str(err)
    else:
        result = target.fn()
        warnings = list(getattr(result, "warnings", []))
        assert any(row.fragment in w for w in warnings), warnings
        assert getattr(result, "name", target.names) == target.names


def test_table_covers_the_issue():
    ids = {r.id for r in BAD_INPUTS}
    for needed in ("fdt-zero-length", "fdt-wrong-magic", "fdt-bad-struct-offset",
                   "fdt-nop-loop-without-end", "fdt-unterminated-strings", "fdt-enormous-totalsize",
                   "scratch-line-count-mismatch", "scratch-non-hex", "scratch-overlap",
                   "scratch-past-end-of-ram", "iomem-bad-nesting", "iomem-all-zero-non-root",
                   "kernel-elf-vmlinux", "kernel-pe-without-linux", "kernel-directory",
                   "kernel-fifo", "kernel-device-node", "kernel-symlink-loop",
                   "kernel-changes-while-read", "kernel-world-writable",
                   "kernel-owned-by-another-user", "kernel-zero-length",
                   "blocks-record-cut-short", "blocks-record-huge-count",
                   "blocks-record-run-past-address-space"):
        assert needed in ids
