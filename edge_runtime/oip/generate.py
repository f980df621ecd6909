"""Regenerate open_inference_grpc.binpb from open_inference_grpc.proto (a developer step, never at run time).

    python -m edge_runtime.oip.generate [--check]

Needs grpcio-tools (a test dependency). The output is protoc's FileDescriptorSet
for the proto, byte for byte; `--check` exits 1 when the shipped file is stale,
which a unit test runs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "open_inference_grpc.proto"
OUT = HERE / "open_inference_grpc.binpb"
# The name the file has inside the descriptor: its own, so it can never be mistaken for
# another project's copy of the protocol (KServe's grpc_predict_v2.proto, Triton's grpc_service.proto).
PROTO_PATH = f"edgeai/oip/{PROTO}"


def generate() -> bytes:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        (root / "edgeai" / "oip").mkdir(parents=True)
        (root / PROTO_PATH).write_bytes((HERE / PROTO).read_bytes())
        out = root / "out.binpb"
        rc = protoc.main(["protoc", f"-I{root}", f"--descriptor_set_out={out}", PROTO_PATH])
        if rc != 0:
            raise SystemExit(f"protoc failed with {rc}")
        return out.read_bytes()


def main(argv: list[str]) -> int:
    data = generate()
    if "--check" in argv:
        if OUT.read_bytes() != data:
            print(f"{OUT} is stale: run python -m edge_runtime.oip.generate", file=sys.stderr)
            return 1
        return 0
    OUT.write_bytes(data)
    print(f"wrote {OUT} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
