"""The Open Inference Protocol's gRPC messages, built from the shipped descriptor in a private pool.

Generated artifacts only, kept apart from the server: `open_inference_grpc.binpb`
is protoc's output for `open_inference_grpc.proto` (see `generate`). The
message classes are made from it in a descriptor pool of their own, never the
process-wide default pool, so this module coexists in one process with any
other generated copy of package `inference` (KServe's, Triton's client,
MLServer's): two such copies in the default pool clash (kserve#3099).

No service stubs are generated: the server registers its handlers with a
generic handler and the fallback client calls the method path, both with
these classes' (de)serialisers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

SERVICE = "inference.GRPCInferenceService"
_FILE = Path(__file__).with_name("open_inference_grpc.binpb")


def _load() -> dict[str, Any]:
    fds = descriptor_pb2.FileDescriptorSet.FromString(_FILE.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for fdp in fds.file:
        pool.Add(fdp)
    classes = message_factory.GetMessageClassesForFiles([f.name for f in fds.file], pool)
    return {full.removeprefix("inference."): cls for full, cls in classes.items()}


_CLASSES = _load()


def message(name: str) -> Any:
    """The class of message `name` (e.g. "ModelInferRequest"), nested ones as "Outer.Inner"."""
    return _CLASSES[name]


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


ServerLiveRequest: Any = _CLASSES["ServerLiveRequest"]
ServerLiveResponse: Any = _CLASSES["ServerLiveResponse"]
ServerReadyRequest: Any = _CLASSES["ServerReadyRequest"]
ServerReadyResponse: Any = _CLASSES["ServerReadyResponse"]
ModelReadyRequest: Any = _CLASSES["ModelReadyRequest"]
ModelReadyResponse: Any = _CLASSES["ModelReadyResponse"]
ServerMetadataRequest: Any = _CLASSES["ServerMetadataRequest"]
ServerMetadataResponse: Any = _CLASSES["ServerMetadataResponse"]
ModelMetadataRequest: Any = _CLASSES["ModelMetadataRequest"]
ModelMetadataResponse: Any = _CLASSES["ModelMetadataResponse"]
ModelInferRequest: Any = _CLASSES["ModelInferRequest"]
ModelInferResponse: Any = _CLASSES["ModelInferResponse"]
InferParameter: Any = _CLASSES["InferParameter"]
InferTensorContents: Any = _CLASSES["InferTensorContents"]
RepositoryIndexRequest: Any = _CLASSES["RepositoryIndexRequest"]
RepositoryIndexResponse: Any = _CLASSES["RepositoryIndexResponse"]
RepositoryModelLoadRequest: Any = _CLASSES["RepositoryModelLoadRequest"]
RepositoryModelLoadResponse: Any = _CLASSES["RepositoryModelLoadResponse"]
RepositoryModelUnloadRequest: Any = _CLASSES["RepositoryModelUnloadRequest"]
RepositoryModelUnloadResponse: Any = _CLASSES["RepositoryModelUnloadResponse"]
