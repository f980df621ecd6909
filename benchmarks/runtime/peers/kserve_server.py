"""KServe's Python ModelServer serving an ONNX model with onnxruntime (run inside the kserve venv).

usage: python kserve_server.py MODEL.onnx NAME PORT [GRPC_PORT]
"""

import sys

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.sess = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
        self.input_name = self.sess.get_inputs()[0].name
        self.output_name = self.sess.get_outputs()[0].name
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        y = self.sess.run(None, {self.input_name: x})[0]
        out = InferOutput(name=self.output_name, shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y, binary_data=False)
        # KServe 0.21 refuses to encode a response without an id.
        return InferResponse(model_name=self.name, infer_outputs=[out], response_id=payload.id or "0")


if __name__ == "__main__":
    path, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    grpc_port = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    model = OnnxModel(name, path)
    kwargs = {"http_port": port, "workers": 1, "enable_grpc": bool(grpc_port)}
    if grpc_port:
        kwargs["grpc_port"] = grpc_port
    try:
        server = kserve.ModelServer(**kwargs)
    except TypeError:  # older releases take fewer arguments
        server = kserve.ModelServer(http_port=port, workers=1)
    server.start([model])
