"""Inference itself: loaded ONNX sessions, dynamic batching, the model repository and the typed
dataplane over them."""
