"""Regenerate open_inference_grpc.binpb from open_inference_grpc.proto (a developer step, never at run time).

    python -m edge_runtime.oip.generate [--check]

Needs grpcio-tools (a test dependency). The output is protoc's FileDescriptorSet
for the proto; `--check` exits 1 when the shipped file declares anything other
than the proto does (messages, field numbers and types, methods: compared
structurally, so another protoc version's byte layout does not matter), which a
unit test runs.
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


def shape(data: bytes) -> list[tuple[str, ...]]:
    """What a descriptor set declares (messages, fields with numbers and types, methods), independent of
    the protoc version that wrote it."""
    from google.protobuf import descriptor_pb2

    out: list[tuple[str, ...]] = []

    def walk(prefix: str, msg: descriptor_pb2.DescriptorProto) -> None:
        name = f"{prefix}.{msg.name}"
        out.append(("message", name))
        for f in msg.field:
            out.append(("field", name, f.name, str(f.number), str(f.type), str(f.label), f.type_name,
                        str(f.oneof_index) if f.HasField("oneof_index") else ""))
        for n in msg.nested_type:
            walk(name, n)

    for fdp in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        out.append(("file", fdp.name, fdp.package, fdp.syntax))
        for m in fdp.message_type:
            walk(fdp.package, m)
        for svc in fdp.service:
            for meth in svc.method:
                out.append(("method", svc.name, meth.name, meth.input_type, meth.output_type))
    return out


def main(argv: list[str]) -> int:
    data = generate()
    if "--check" in argv:
        if shape(OUT.read_bytes()) != shape(data):
            print(f"{OUT} is stale: run python -m edge_runtime.oip.generate", file=sys.stderr)
            return 1
        return 0
    OUT.write_bytes(data)
    print(f"wrote {OUT} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
