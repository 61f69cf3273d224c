#!/usr/bin/env python3
"""How long `khotui status` and `khotui plan` take on the demo snapshot, against a baseline.

The baseline, measured in the same run on the same machine, is a bare interpreter start
(`python3 -c pass`): what no Python tool can beat. The ratio is what khotui itself costs.
Prints the median of N runs each (default 7): wall time, and the ratio to the baseline.

    .venv/bin/python bench/cli_plan.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        samples.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.decode()}")
    return statistics.median(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    py = sys.executable
    from khotui.demo import demo_root
    root = demo_root()  # materialise once, outside the timings
    kernel, initrd = root / "boot/vmlinuz-7.3.4", root / "boot/initrd.img-7.3.4"
    cases = {
        "python3 -c pass (baseline)": [py, "-c", "pass"],
        "khotui status --demo --json": [py, "-m", "khotui", "status", "--demo", "--json"],
        "khotui plan --demo --json": [py, "-m", "khotui", "plan", "--demo", "--json",
                                      "--kernel", str(kernel), "--initrd", str(initrd)],
    }
    base = None
    print(f"{'command':40} {'median':>9} {'x baseline':>11}   ({args.runs} runs each)")
    for name, cmd in cases.items():
        t = timed(cmd, args.runs)
        base = base or t
        print(f"{name:40} {t * 1000:7.1f}ms {t / base:10.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
