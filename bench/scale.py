#!/usr/bin/env python3
"""How `khotui status`, `plan` and `snapshot` scale from the demo snapshot to a 24 TiB host.

    .venv/bin/python bench/scale.py [--runs N] [--sizes demo,1x,10x,100x] [--growth]

For each sysroot (the bundled demo, and synthetic hosts from bench/gen_sysroot.py, cached under
/tmp/khotui-bench/<scale>) it runs, as separate processes, `khotui status --json --root R`,
`khotui plan --json --root R --kernel <bzImage-kho-7.3.4> --initrd <8 MiB cpio>` and
`khotui snapshot --root R OUT` (a new OUT each run, removed after it): the median wall time of
N runs and the peak RSS of the child (ru_maxrss from wait4), beside the baseline
`python -c pass` measured in the same run. Prints a plain table and a markdown one.

`--growth` also times the parsers in-process on 1x, 10x and 100x inputs, one input at a time
(iomem lines, memory blocks, FDT nodes, sub-blobs, scratch regions), and prints the ratio per
10x of input: ~10 is linear, ~100 would be quadratic.

Children run with bytecode caching on (as an installed khotui has .pyc files): the package is
byte-compiled once first, and PYTHONDONTWRITEBYTECODE is dropped from their environment.
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import gen_sysroot  # noqa: E402

from tests.fixtures.where import VM  # noqa: E402  ($KHOTUI_SHARED, else ../shared)

KERNEL = VM / "bzImage-kho-7.3.4"
INITRD_SIZE = 8 << 20


def initrd_file() -> Path:
    """An 8 MiB newc cpio (sparse), as the captures loaded."""
    from khotui.demo import _write_sparse_cpio
    path = gen_sysroot.CACHE_BASE / "initrd-8M.cpio"
    if not path.exists() or path.stat().st_size != INITRD_SIZE:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_sparse_cpio(path, INITRD_SIZE)
    return path


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


OUT = "{out}"   # in a command: a new empty directory for each run, removed after it


def run_once(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, peak RSS KiB) of one child."""
    out = None
    if OUT in cmd:
        out = tempfile.mkdtemp(prefix="snapshot-", dir=gen_sysroot.CACHE_BASE)
        cmd = [out if a == OUT else a for a in cmd]
    try:
        return _run_child(cmd, env)
    finally:
        if out:
            shutil.rmtree(out, ignore_errors=True)


def _run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {err}")
    return wall, usage.ru_maxrss


def measure(cmd: list[str], runs: int, env: dict[str, str]) -> tuple[float, int]:
    run_once(cmd, env)  # warm the page cache and the bytecode
    samples = [run_once(cmd, env) for _ in range(runs)]
    return statistics.median(s[0] for s in samples), max(s[1] for s in samples)


def sysroot_for(size: str) -> tuple[Path, str]:
    if size == "demo":
        from khotui.demo import demo_root
        return demo_root(), "demo snapshot (two-nodes capture)"
    shape = gen_sysroot.shape_for_scale(size)
    root = gen_sysroot.cached(size, log=lambda m: print(m, file=sys.stderr, flush=True))
    return root, shape.label()


def commands(py: str, root: Path, initrd: Path) -> dict[str, list[str]]:
    return {
        "status": [py, "-m", "khotui", "status", "--json", "--root", str(root)],
        "plan": [py, "-m", "khotui", "plan", "--json", "--root", str(root),
                 "--kernel", str(KERNEL), "--initrd", str(initrd)],
        "snapshot": [py, "-m", "khotui", "snapshot", "--root", str(root), OUT],
    }


def table(runs: int, sizes: list[str], no_pyc: bool) -> list[tuple[str, str, str, float, int]]:
    py = sys.executable
    env = dict(os.environ) if no_pyc else child_env()
    if not no_pyc:
        compileall.compile_dir(str(REPO / "khotui"), quiet=1)
    initrd = initrd_file()
    rows: list[tuple[str, str, str, float, int]] = []
    base_t, base_rss = measure([py, "-c", "pass"], runs, env)
    rows.append(("baseline", "python -c pass", "", base_t, base_rss))
    for size in sizes:
        root, label = sysroot_for(size)
        for name, cmd in commands(py, root, initrd).items():
            t, rss = measure(cmd, runs, env)
            rows.append((size, name, label, t, rss))
            print(f"  {size:5} {name:6} {t * 1000:8.0f} ms {rss / 1024:7.1f} MiB", file=sys.stderr,
                  flush=True)
    return rows


def print_tables(rows, runs: int) -> None:
    base_t = rows[0][3]
    print(f"\n{'size':6} {'command':16} {'median':>9} {'x base':>7} {'peak RSS':>10}   "
          f"({runs} runs each; {os.cpu_count()} CPUs)")
    for size, name, _label, t, rss in rows:
        print(f"{size:6} {name:16} {t * 1000:7.0f}ms {t / base_t:6.1f}x {rss / 1024:7.1f} MiB")
    print("\n| host | command | median wall | × baseline | peak RSS |")
    print("|---|---|---:|---:|---:|")
    for size, name, label, t, rss in rows:
        host = f"{size}: {label}" if label else size
        print(f"| {host} | `{name}` | {t * 1000:.0f} ms | {t / base_t:.1f} | {rss / 1024:.0f} MiB |")


# --- growth per input ---------------------------------------------------------------------------


def _best(fn, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def growth_inputs():
    """(input name, size -> (n, callable timing the parser on that input)), in-process."""
    from dataclasses import replace

    from khotui.fdt import decode_kho_fdt, decode_sub_blob
    from khotui.host.iomem import parse_iomem
    from khotui.host.kho import read_scratch
    from khotui.host.memory import read_topology
    from khotui.host.sysroot import Sysroot

    full = gen_sysroot.shape_for_scale("100x")

    def iomem(f: float):
        text = gen_sysroot.iomem_text(replace(full, iomem_lines=round(full.iomem_lines * f)))
        return text.count("\n"), lambda: parse_iomem(text)

    def fdt(f: float):
        data = gen_sysroot.kho_fdt(replace(full, fdt_nodes=round(full.fdt_nodes * f)))
        return round(full.fdt_nodes * f), lambda: decode_kho_fdt(data, "fdt")

    def blobs(f: float):
        shape = replace(full, sub_blobs=round(full.sub_blobs * f))
        items = list(gen_sysroot.sub_blobs(shape).items())
        return len(items), lambda: [decode_sub_blob(n, d) for n, d in items]

    def blocks(f: float):
        size = {0.01: "1x", 0.1: "10x", 1.0: "100x"}[f]
        root = Sysroot(gen_sysroot.cached(size))
        return gen_sysroot.shape_for_scale(size).blocks, lambda: read_topology(root)

    def scratch(f: float):
        import tempfile
        shape = full
        n = max(3, round(shape.scratch_regions * 10 * f))   # 3, 34, 340 regions
        tmp = Path(tempfile.mkdtemp(prefix="khotui-scratch-"))
        out = tmp / "sys/kernel/debug/kho/out"
        out.mkdir(parents=True)
        regions = [(0x100000000 + i * (1 << 32), 1 << 29) for i in range(n)]
        (out / "scratch_phys").write_text("".join(f"{a:#x}\n" for a, _ in regions))
        (out / "scratch_len").write_text("".join(f"{s:#x}\n" for _, s in regions))
        return n, lambda: read_scratch(Sysroot(tmp))

    return {"iomem lines (parse_iomem)": iomem, "FDT nodes (decode_kho_fdt)": fdt,
            "sub-blobs (decode_sub_blob each)": blobs,
            "memory blocks (read_topology)": blocks, "scratch regions (read_scratch)": scratch}


def print_growth() -> None:
    print("\n| input | 1x | 10x | 100x | 10x/1x | 100x/10x |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, make in growth_inputs().items():
        cells, times = [], []
        for f in (0.01, 0.1, 1.0):
            n, fn = make(f)
            t = _best(fn)
            times.append(t)
            cells.append(f"{n}: {t * 1000:.1f} ms")
        print(f"| {name} | {' | '.join(cells)} | {times[1] / times[0]:.1f} | "
              f"{times[2] / times[1]:.1f} |", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="demo,1x,10x,100x")
    ap.add_argument("--growth", action="store_true", help="also time each parser per input size")
    ap.add_argument("--no-pyc", action="store_true",
                    help="run children as the environment says (e.g. without bytecode caching)")
    args = ap.parse_args()
    if not KERNEL.exists():
        raise SystemExit(f"no kernel at {KERNEL}: the plan needs bzImage-kho-7.3.4 in "
                         "$KHOTUI_SHARED/vm (default ../shared/vm)")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    rows = table(args.runs, sizes, args.no_pyc)
    print_tables(rows, args.runs)
    if args.growth:
        print_growth()
    return 0


if __name__ == "__main__":
    sys.exit(main())
