"""Command line entry point (placeholder until the CLI lands)."""

import sys


def main(argv: list[str] | None = None) -> int:
    print("khotui: not built yet", file=sys.stderr)
    return 2
