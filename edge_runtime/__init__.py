"""The edge runtime: verified ONNX inference over the Open Inference Protocol."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgeai-operator")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"
