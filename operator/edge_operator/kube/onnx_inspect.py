"""`python -m edge_operator.kube.onnx_inspect`: read an ONNX model on stdin, print its inputs and outputs.

The operator runs this in a child process rather than importing onnxruntime: the
runtime and its allocator cost tens of MiB that a fleet-wide operator should not
keep for a graph it reads once per model version, and a malformed model that
crashes onnxruntime then kills a short-lived child, not the operator.
Output: one JSON object, {"inputs": [...], "outputs": [...]} or {"error": "..."} (exit 1).
"""

from __future__ import annotations

import json
import sys
from typing import Any


def inspect(data: bytes) -> dict[str, Any]:
    import onnxruntime as ort

    from edge_runtime.core.codec import ONNX_TO_V2

    opts = ort.SessionOptions()
    # Only the graph's signature is wanted: no optimisation passes, one thread, quiet.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])

    def meta(arg: Any) -> dict[str, Any]:
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
        return {"name": arg.name, "datatype": ONNX_TO_V2.get(arg.type, arg.type), "shape": shape}

    return {"inputs": [meta(a) for a in sess.get_inputs()], "outputs": [meta(a) for a in sess.get_outputs()]}


def main() -> int:
    data = sys.stdin.buffer.read()
    try:
        out = inspect(data)
    except Exception as e:  # onnxruntime raises its own exception types for malformed graphs
        print(json.dumps({"error": f"{type(e).__name__}: {e}"[:2000]}))
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
