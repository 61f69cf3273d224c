"""Fuzz one parser with atheris: `python bench/fuzz/run.py TARGET [SECONDS]` (not in CI).

Seeds come from the real captures and kernels (seeds.py); the corpus grows under
/tmp/khotui-fuzz/TARGET (not committed). Prints one line: target, inputs run, seconds, result.
A crash is any exception but KhotuiError; atheris writes the input to crash-* in the cwd.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

import atheris  # noqa: E402

with atheris.instrument_imports():
    pass

from seeds import write  # noqa: E402
from targets import TARGETS  # noqa: E402


def main() -> None:
    target = sys.argv[1]
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else 60
    fn = TARGETS[target]
    corpus = Path(os.environ.get("KHOTUI_FUZZ_DIR", "/tmp/khotui-fuzz")) / target
    nseeds = write(target, corpus)

    print(f"fuzz {target}: {nseeds} seeds, corpus {corpus}, {seconds} s", flush=True)
    # libFuzzer prints "Done N runs in S second(s)" and writes crashes to crash-<target>-*
    atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={seconds}", "-rss_limit_mb=1024",
                   "-timeout=10", "-max_len=65536", "-print_final_stats=1",
                   f"-artifact_prefix={corpus.parent}/crash-{target}-"], fn)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
