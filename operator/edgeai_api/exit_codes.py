"""Exit codes of `edge-runtime fetch` (and the one of `serve`'s quality gate): the contract between the
runtime's containers and the operator.

The runtime exits with them; the operator reads a failed init container's exit code back into the
reason it reports on the device (DigestMismatch, BadSignature, ...). Both import this module so the
two sides cannot drift apart.
"""

from __future__ import annotations

from typing import Final

EXIT_USAGE: Final = 2
EXIT_OTHER: Final = 1
EXIT_CODES: Final[dict[str, int]] = {
    "DigestMismatch": 3,
    "BadSignature": 4,
    "Unreachable": 5,
    "TooLarge": 6,
    "InvalidModel": 7,
    "BadKey": 8,
    "DecryptionFailed": 9,
}
# The other way round: an init container's exit code -> the reason it stands for.
EXIT_REASONS: Final[dict[int, str]] = {code: reason for reason, code in EXIT_CODES.items()}

# `edge-runtime serve`: its quality gate (spec.rollout.healthGate.quality) failed. The runtime writes the
# reason to its termination message first; the operator reads both from the Pod's status and fails the
# device (QualityGateFailed), so the rollout treats it like a crash.
EXIT_QUALITY_GATE: Final = 10
QUALITY_GATE_FAILED: Final = "QualityGateFailed"
