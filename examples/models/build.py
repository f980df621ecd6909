"""Write the example ONNX models (small CNN classifier, small tabular MLP).

    python examples/models/build.py [OUT_DIR]      # default: examples/models/out

Deterministic: the same files (and sha256) every run. The builders live in
`edge_runtime.models_zoo` so tests, benchmarks and the demo use the very same
models; this script is the command-line face of it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edge_runtime.artifacts.integrity import hash_file
from edge_runtime.models_zoo import build_cnn, build_tabular


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(f"usage: python {Path(__file__).name} [OUT_DIR]   (default: {Path(__file__).resolve().parent / 'out'})")
        return 0
    if argv and argv[0].startswith("-"):
        print(f"error: unknown option {argv[0]!r}; the only argument is the output folder", file=sys.stderr)
        return 2
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / "out"
    for path in (build_cnn(out / "cnn.onnx"), build_tabular(out / "tabular.onnx")):
        d = hash_file(path)
        print(f"{path}  sha256={d.sha256}  size={d.size}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
