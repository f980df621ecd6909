"""Edge-cloud fallback decisions: confidence of a result and a circuit breaker.

Pure: numpy in, decisions out, time passed in. The I/O half (forwarding to
the cloud, the durable queue) lives in `fallback` and `hardqueue`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"


def top_confidence(outputs: Sequence[np.ndarray]) -> float | None:
    """Lowest top-class confidence over the rows of the first floating-point output.

    A row that already is a probability vector (values in [0, 1] summing to 1)
    is read as is; otherwise the row is taken as logits and softmaxed. A batch
    is as hard as its hardest row. None when no output looks like class scores.
    """
    for out in outputs:
        if out.dtype.kind != "f" or out.size == 0:
            continue
        scores = out.astype(np.float64, copy=False)
        scores = scores.reshape(-1, scores.shape[-1]) if scores.ndim >= 2 else scores.reshape(1, -1)
        if not np.all(np.isfinite(scores)):
            return 0.0
        sums = scores.sum(axis=1)
        is_prob = bool(np.all(scores >= -1e-6) and np.all(scores <= 1 + 1e-6) and np.allclose(sums, 1.0, atol=1e-3))
        if not is_prob:
            shifted = scores - scores.max(axis=1, keepdims=True)
            e = np.exp(shifted)
            scores = e / e.sum(axis=1, keepdims=True)
        return float(scores.max(axis=1).min())
    return None


@dataclass(slots=True)
class Breaker:
    """Stops waiting on a cloud that is down.

    closed: calls go through; `failure_threshold` consecutive failures open it.
    open: calls are skipped until `cooldown` passes, then one probe is let
    through (half-open). A successful probe closes it; a failed one opens it
    again with the cooldown doubled, up to `max_cooldown`.
    """

    failure_threshold: int = 3
    base_cooldown: float = 2.0
    max_cooldown: float = 60.0
    state: str = CLOSED
    failures: int = 0
    cooldown: float = 0.0
    opened_at: float = 0.0
    probe_in_flight: bool = False

    def allow(self, now: float) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN and now - self.opened_at >= self.cooldown:
            self.state = HALF_OPEN
            self.probe_in_flight = False
        if self.state == HALF_OPEN and not self.probe_in_flight:
            self.probe_in_flight = True
            return True
        return False

    def success(self) -> None:
        self.state = CLOSED
        self.failures = 0
        self.cooldown = 0.0
        self.probe_in_flight = False

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.state == HALF_OPEN:
            self._open(now, min(self.max_cooldown, max(self.base_cooldown, self.cooldown * 2)))
        elif self.state == CLOSED and self.failures >= self.failure_threshold:
            self._open(now, self.base_cooldown)

    def _open(self, now: float, cooldown: float) -> None:
        self.state = OPEN
        self.opened_at = now
        self.cooldown = cooldown
        self.probe_in_flight = False


BREAKER_STATES_NUM = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}
