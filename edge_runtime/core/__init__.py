"""The protocol's vocabulary and pure policies: typed requests and responses, the REST and gRPC codecs,
access, health and fallback decisions. No server, no onnxruntime session."""
