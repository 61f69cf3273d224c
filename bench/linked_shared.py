#!/usr/bin/env python3
"""A copy of the shared captures with the sysfs node <-> memory block links real sysfs has.

The captures in ../shared/kho store `node/nodeN/memoryM` and `memory/memoryM/nodeN` as small
files holding the link target; a copy of shared made with links kept (or a capture recorded
with them) has symlinks there, which loop: node0/memory5/node0/memory5/... A test that copies
such a tree following links never ends. This makes that copy, so the whole suite can be run
against it:

    .venv/bin/python bench/linked_shared.py DEST             # copy $KHOTUI_SHARED or ../shared
    .venv/bin/python bench/linked_shared.py DEST --test      # and run the suite on it
    .venv/bin/python bench/linked_shared.py DEST --test -- tests/test_host_memory.py -x

DEST must not exist. `--test` runs `pytest -q -m 'not vm' -p no:cacheprovider` (or the pytest
arguments after `--`) with KHOTUI_SHARED=DEST and prints its wall time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.fixtures.trees import NODE_DIR, add_sysfs_links, copy_tree, links_leaving  # noqa: E402
from tests.fixtures.where import SHARED  # noqa: E402


def linked_copy(src: Path, dest: Path) -> dict[str, int]:
    """Copy `src` (a shared directory) to `dest` and link every capture sysroot in it; returns
    the links made per sysroot (relative to dest)."""
    copy_tree(src, dest)
    sysroots = sorted(p for p in (dest / "kho").rglob("sysroot") if (p / NODE_DIR).is_dir())
    made = {str(p.relative_to(dest)): add_sysfs_links(p) for p in sysroots}
    leaving = links_leaving(dest)  # as in sysfs, every link made stays inside its sysroot
    if leaving:
        raise SystemExit(f"links leading out of {dest}: {leaving}")
    return made


def main(argv: list[str]) -> int:
    pytest_args: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, pytest_args = argv[:at], argv[at + 1:]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--shared", type=Path, default=SHARED,
                    help=f"the shared directory to copy (default {SHARED})")
    ap.add_argument("--test", action="store_true", help="run the test suite against the copy")
    args = ap.parse_args(argv)
    if args.dest.exists():
        raise SystemExit(f"{args.dest} exists: give a new directory")
    made = linked_copy(args.shared, args.dest)
    for name, count in made.items():
        print(f"{name}: {count} links")
    print(f"{sum(made.values())} links in {len(made)} sysroots under {args.dest}")
    if not args.test:
        return 0
    cmd = [sys.executable, "-m", "pytest", *(pytest_args or
                                            ["-q", "-m", "not vm", "-p", "no:cacheprovider"])]
    env = dict(os.environ, KHOTUI_SHARED=str(args.dest.resolve()))
    start = time.perf_counter()
    rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    print(f"KHOTUI_SHARED={args.dest} {' '.join(cmd[1:])}: exit {rc} after "
          f"{time.perf_counter() - start:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
