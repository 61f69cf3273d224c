#!/bin/sh
# Run every fuzz target, one at a time, SECONDS each (default 60); summary on stdout.
# Not in CI: `sh bench/fuzz/all.sh 90`. Needs `pip install atheris` in the venv.
set -u
cd "$(dirname "$0")/../.."
SECONDS_EACH=${1:-60}
PY=${PY:-.venv/bin/python}
OUT=${KHOTUI_FUZZ_DIR:-/tmp/khotui-fuzz}
mkdir -p "$OUT"
for t in fdt sub_blob iomem scratch kernel initrd kernellog cmdline host_text; do
    "$PY" bench/fuzz/run.py "$t" "$SECONDS_EACH" >"$OUT/$t.log" 2>&1
    rc=$?
    runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$OUT/$t.log" | tail -1)
    crash=$(ls "$OUT"/crash-"$t"-* 2>/dev/null | head -1)
    echo "$t: rc=$rc ${runs:-no summary} ${crash:+CRASH $crash}"
done
