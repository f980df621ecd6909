"""MLServer custom runtime serving an ONNX model with onnxruntime (imported by `mlserver start`)."""

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxRuntime(MLModel):
    async def load(self) -> bool:
        uri = self.settings.parameters.uri
        self.sess = ort.InferenceSession(uri, providers=["CPUExecutionProvider"])
        self.input_name = self.sess.get_inputs()[0].name
        self.output_name = self.sess.get_outputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype("float32", copy=False)
        y = self.sess.run(None, {self.input_name: x})[0]
        return InferenceResponse(
            model_name=self.name, id=payload.id, outputs=[NumpyCodec.encode_output(name=self.output_name, payload=y)]
        )
