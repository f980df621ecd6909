"""The runtime's own judgement of whether it should receive traffic.

The cloud cannot reach an edge pod's port through KubeEdge; it only sees Pod
readiness. So readiness is more than "a model is loaded": it also turns false
when too many recent requests failed inside the runtime (model errors, not
client mistakes), and comes back once the window clears. Pure: time is passed
in, so the policy is unit-tested without sleeping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Judgement:
    ready: bool
    reason: str


class ErrorWindow:
    """Counts server-side failures over a sliding time window, in one-second buckets."""

    def __init__(self, window_seconds: float = 60.0, max_error_rate: float = 0.5, min_requests: int = 20) -> None:
        if not 0.0 < max_error_rate <= 1.0:
            raise ValueError("max_error_rate must be in (0, 1]")
        self.window = window_seconds
        self.max_error_rate = max_error_rate
        self.min_requests = min_requests
        # (second, requests, errors), oldest first
        self._buckets: deque[list[int]] = deque()

    def _bucket(self, now: float) -> list[int]:
        sec = int(now)
        if self._buckets and self._buckets[-1][0] == sec:
            return self._buckets[-1]
        b = [sec, 0, 0]
        self._buckets.append(b)
        self._expire(now)
        return b

    def _expire(self, now: float) -> None:
        limit = now - self.window
        while self._buckets and self._buckets[0][0] < limit:
            self._buckets.popleft()

    def record(self, now: float, error: bool) -> None:
        b = self._bucket(now)
        b[1] += 1
        if error:
            b[2] += 1

    def counts(self, now: float) -> tuple[int, int]:
        self._expire(now)
        return sum(b[1] for b in self._buckets), sum(b[2] for b in self._buckets)

    def judge(self, now: float) -> Judgement:
        total, errors = self.counts(now)
        if total >= self.min_requests and errors / total > self.max_error_rate:
            return Judgement(
                False,
                f"{errors} of the last {total} requests failed in the runtime within {self.window:.0f}s "
                f"(limit {self.max_error_rate:.0%})",
            )
        return Judgement(True, "ok")


def judge_readiness(models_ready: dict[str, bool], window: Judgement) -> Judgement:
    """Server readiness: at least one model, all models ready, error rate fine."""
    if not models_ready:
        return Judgement(False, "no model is loaded")
    not_ready = sorted(n for n, ok in models_ready.items() if not ok)
    if not_ready:
        return Judgement(False, f"models not ready: {', '.join(not_ready)}")
    return window
