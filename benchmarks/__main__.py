"""Dispatch `python -m benchmarks [NAME [args...]]` to the suite benchmarks/NAME (all suites when no name)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def suites() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        m.name for m in pkgutil.iter_modules([str(here)]) if m.ispkg and (here / m.name / "__main__.py").exists()
    )


def main(argv: list[str]) -> int:
    names = suites()
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: python -m benchmarks [{'|'.join(names)}] [suite args...]")
        return 0
    if argv and not argv[0].startswith("-"):
        if argv[0] not in names:
            print(f"unknown suite {argv[0]!r}; suites: {', '.join(names)}", file=sys.stderr)
            return 2
        return int(importlib.import_module(f"benchmarks.{argv[0]}.__main__").main(argv[1:]) or 0)
    rc = 0
    for name in names:
        rc |= int(importlib.import_module(f"benchmarks.{name}.__main__").main(argv) or 0)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
