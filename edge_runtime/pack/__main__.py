"""`python -m edge_runtime.pack MODEL.onnx ...` is `edge-runtime pack MODEL.onnx ...`."""

from __future__ import annotations

import sys

from edge_runtime.cli import main

if __name__ == "__main__":
    sys.exit(main(["pack", *sys.argv[1:]]))
