"""One reconciler per kind: InferenceDeployment, EdgeDevice status, Node discovery, EdgeModel verification.

Each reads the cache, asks core/ what should be, and applies the answer through the API client; the
manager queues their typed keys and counts their runs under their metrics label.
"""
