#!/usr/bin/env python3
"""Copy the CRDs from crds/ (the one source of truth) into the Helm chart.

    python hack/sync-chart-crds.py          # copy; removes chart CRDs that crds/ no longer has
    python hack/sync-chart-crds.py --check  # exit 1 and name every difference (tests/unit/deploy/test_chart.py runs it)

Helm installs what is in a chart's crds/ directory, and a chart cannot reach
outside its own directory, so the files are copied, byte for byte.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "crds"
CHART = ROOT / "charts" / "edgeai-operator" / "crds"


def differences(source: Path = SOURCE, chart: Path = CHART) -> list[str]:
    want = {p.name for p in source.glob("*.yaml")}
    have = {p.name for p in chart.glob("*.yaml")} if chart.is_dir() else set()
    out = [f"{chart / n} is missing" for n in sorted(want - have)]
    out += [f"{chart / n} has no source in {source}" for n in sorted(have - want)]
    out += [f"{chart / n} differs from {source / n}" for n in sorted(want & have)
            if not filecmp.cmp(source / n, chart / n, shallow=False)]
    return out


def sync(source: Path = SOURCE, chart: Path = CHART) -> list[str]:
    changed = differences(source, chart)
    chart.mkdir(parents=True, exist_ok=True)
    want = {p.name for p in source.glob("*.yaml")}
    for p in chart.glob("*.yaml"):
        if p.name not in want:
            p.unlink()
    for n in sorted(want):
        shutil.copyfile(source / n, chart / n)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only report differences (exit 1 if any)")
    a = ap.parse_args(argv)
    if not any(SOURCE.glob("*.yaml")):
        print(f"no CRDs in {SOURCE}", file=sys.stderr)
        return 1
    if a.check:
        diff = differences()
        for d in diff:
            print(d, file=sys.stderr)
        if diff:
            print("run: python hack/sync-chart-crds.py", file=sys.stderr)
        return 1 if diff else 0
    for d in sync():
        print(f"synced: {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
