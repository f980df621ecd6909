"""The one error type `pack` raises for bad input."""

from __future__ import annotations

from edge_runtime.artifacts.integrity import IntegrityError


class PackError(IntegrityError):
    """Bad input or an impossible request, with a CamelCase reason.

    A subclass of IntegrityError so the CLI's exit-code mapping applies:
    InvalidModel (7) for files that are not usable ONNX models, BadKey (8)
    for keys of the wrong type; other reasons exit 1.
    """
