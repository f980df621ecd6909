"""`edge-runtime pack`: one trained ONNX model in, a fleet-ready EdgeModel out.

Layers, from pure to I/O:
- `manifest` and `report`: pure functions (no onnx, no files) that build the
  EdgeModel manifest and the per-variant report; unit-tested on plain data.
- `variants`: the ONNX side (checker, fp16 converter, onnxruntime quantizer,
  sessions and timing). The only place that imports the `pack` extra.
- `packer`: orchestration and the output folder, staged beside the target
  and renamed into place at the end so a failure never leaves half a result.
- `cli`: the argparse face; it imports nothing heavy until the command runs,
  so `edge-runtime --help` works in the runtime image, which has no onnx.
"""
