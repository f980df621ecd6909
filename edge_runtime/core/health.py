"""The runtime's own judgement of whether it should receive traffic.

The cloud cannot reach an edge pod's port through KubeEdge; it only sees Pod
readiness. So readiness is more than "a model is loaded": it also turns false
when too many recent requests failed inside the runtime (model errors, not
client mistakes) or, when a latency limit is set, when most recent requests
were slower than it (a model too heavy for this device, a thermally throttled
CPU), and comes back once the window clears. Pure: time is passed in, so the
policy is unit-tested without sleeping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Judgement:
    ready: bool
    reason: str


class ErrorWindow:
    """Counts server-side failures (and, with a limit, slow requests) over a sliding time window,
    in one-second buckets."""

    def __init__(self, window_seconds: float = 60.0, max_error_rate: float = 0.5, min_requests: int = 20,
                 max_latency_s: float | None = None, max_slow_rate: float = 0.5) -> None:
        if not 0.0 < max_error_rate <= 1.0:
            raise ValueError("max_error_rate must be in (0, 1]")
        if max_latency_s is not None and max_latency_s <= 0:
            raise ValueError("max_latency_s must be > 0")
        self.window = window_seconds
        self.max_error_rate = max_error_rate
        self.min_requests = min_requests
        self.max_latency_s = max_latency_s
        self.max_slow_rate = max_slow_rate
        # (second, requests, errors, slow), oldest first
        self._buckets: deque[list[int]] = deque()

    def _bucket(self, now: float) -> list[int]:
        sec = int(now)
        if self._buckets and self._buckets[-1][0] == sec:
            return self._buckets[-1]
        b = [sec, 0, 0, 0]
        self._buckets.append(b)
        self._expire(now)
        return b

    def _expire(self, now: float) -> None:
        limit = now - self.window
        while self._buckets and self._buckets[0][0] < limit:
            self._buckets.popleft()

    def record(self, now: float, error: bool, latency_s: float = 0.0) -> None:
        b = self._bucket(now)
        b[1] += 1
        if error:
            b[2] += 1
        elif self.max_latency_s is not None and latency_s > self.max_latency_s:
            b[3] += 1

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
        slow = sum(b[3] for b in self._buckets)
        if self.max_latency_s is not None and total >= self.min_requests and slow / total > self.max_slow_rate:
            return Judgement(
                False,
                f"{slow} of the last {total} requests took longer than {self.max_latency_s * 1000:.0f} ms "
                f"within {self.window:.0f}s (limit {self.max_slow_rate:.0%})",
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
