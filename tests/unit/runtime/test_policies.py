"""Pure runtime policies: readiness by error rate, the cloud breaker, confidence, batch split."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from edge_runtime.core.fallback_policy import CLOSED, HALF_OPEN, OPEN, Breaker, top_confidence
from edge_runtime.core.health import ErrorWindow, judge_readiness
from edge_runtime.serving.batching import Runner, batch_key, concat_feeds, fits, split_outputs


def test_error_window_judges_and_forgets() -> None:
    w = ErrorWindow(window_seconds=10, max_error_rate=0.5, min_requests=4)
    for i in range(3):
        w.record(100.0 + i * 0.1, error=True)
    assert w.judge(100.5).ready, "too few requests to judge"
    w.record(100.6, error=True)
    w.record(100.7, error=False)
    j = w.judge(101.0)
    assert not j.ready and "4 of the last 5" in j.reason
    assert w.judge(112.0).ready, "old failures leave the window"


def test_latency_limit_turns_readiness_off_while_most_requests_are_slow() -> None:
    w = ErrorWindow(window_seconds=10, min_requests=4, max_latency_s=0.05)
    w.record(100.0, error=False, latency_s=0.2)
    w.record(100.1, error=False, latency_s=0.2)
    w.record(100.2, error=False, latency_s=0.01)
    assert w.judge(100.5).ready, "too few requests to judge"
    w.record(100.3, error=False, latency_s=0.01)
    assert w.judge(100.5).ready, "half slow is not most"
    w.record(100.6, error=False, latency_s=0.3)
    j = w.judge(101.0)
    assert not j.ready and "3 of the last 5 requests took longer than 50 ms" in j.reason
    assert w.judge(112.0).ready, "slow requests leave the window"
    assert ErrorWindow(min_requests=1).judge(0).ready
    unlimited = ErrorWindow(window_seconds=10, min_requests=1)
    unlimited.record(1.0, error=False, latency_s=60.0)
    assert unlimited.judge(1.5).ready, "no limit set: latency is not judged"


def test_readiness_needs_a_model() -> None:
    ok = ErrorWindow().judge(0)
    assert not judge_readiness({}, ok).ready
    assert judge_readiness({"m": True}, ok).ready
    assert "m2" in judge_readiness({"m": True, "m2": False}, ok).reason


def test_breaker_opens_probes_and_closes() -> None:
    b = Breaker(failure_threshold=2, base_cooldown=5, max_cooldown=20)
    assert b.allow(0)
    b.failure(0)
    assert b.state == CLOSED
    b.failure(1)
    assert b.state == OPEN and not b.allow(2)
    assert b.allow(6.1) and b.state == HALF_OPEN  # one probe
    assert not b.allow(6.2)  # only one
    b.failure(6.3)
    assert b.state == OPEN and b.cooldown == 10  # doubled
    assert not b.allow(15) and b.allow(16.4)
    b.success()
    assert b.state == CLOSED and b.allow(17)


def test_top_confidence_probabilities_and_logits() -> None:
    probs = np.array([[0.1, 0.9], [0.4, 0.6]], np.float32)
    assert top_confidence([probs]) == pytest.approx(0.6)
    logits = np.array([[0.0, 0.0]], np.float32)
    assert top_confidence([logits * 0 + np.array([[3.0, -2.0]], np.float32)]) == pytest.approx(
        np.exp(3) / (np.exp(3) + np.exp(-2))
    )
    assert top_confidence([np.array([1, 2], np.int64)]) is None
    assert top_confidence([np.array([[np.nan, 1.0]], np.float32)]) == 0.0


def test_batch_helpers() -> None:
    a = {"x": np.ones((2, 3), np.float32)}
    b = {"x": np.zeros((1, 3), np.float32)}
    c = {"x": np.zeros((1, 4), np.float32)}
    assert batch_key(a) == batch_key(b) != batch_key(c)
    assert fits(2, 1, 3) and not fits(2, 2, 3)
    merged = concat_feeds([a, b])
    assert merged["x"].shape == (3, 3)
    parts = split_outputs([merged["x"] * 2], [2, 1])
    np.testing.assert_array_equal(parts[0][0], a["x"] * 2)
    np.testing.assert_array_equal(parts[1][0], b["x"] * 2)


class _InlineModel:
    """What the Runner needs of a LoadedModel: a model that runs on the event loop; `* 2` per row."""

    run_inline = True
    batchable = True

    def __init__(self) -> None:
        self.runs: list[int] = []

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["x"]
        self.runs.append(len(x))
        if (x < 0).any():
            raise ValueError("negative")
        return [x * 2]


def test_inline_batching_joins_what_arrives_before_the_run_and_keeps_the_policy() -> None:
    model = _InlineModel()
    batches: list[int] = []
    runner = Runner(model, ThreadPoolExecutor(1), max_batch_size=4, on_batch=batches.append)  # type: ignore[arg-type]

    async def main() -> list[Any]:
        feeds = [
            {"x": np.full((1, 3), 1.0, np.float32)},
            {"x": np.full((2, 3), 2.0, np.float32)},
            {"x": np.full((2, 3), 4.0, np.float32)},  # would make 5 rows: the next batch
            {"x": np.full((1, 4), 3.0, np.float32)},  # another shape: its own batch
            {"x": np.full((1, 3), -1.0, np.float32)},  # fails its own batch only
        ]
        got = await asyncio.gather(*(runner.run(f) for f in feeds), return_exceptions=True)
        alone = await runner.run({"x": np.full((1, 3), 5.0, np.float32)})
        return [*got, alone]

    got = asyncio.run(main())
    assert model.runs == [3, 2, 1, 1, 1], "arrival order, one key and at most max_batch_size rows per run"
    assert batches == model.runs
    np.testing.assert_array_equal(got[0][0], np.full((1, 3), 2.0))
    np.testing.assert_array_equal(got[1][0], np.full((2, 3), 4.0))
    np.testing.assert_array_equal(got[2][0], np.full((2, 3), 8.0))
    np.testing.assert_array_equal(got[3][0], np.full((1, 4), 6.0))
    assert isinstance(got[4], ValueError), "a failed run fails its own batch, not the others"
    np.testing.assert_array_equal(got[5][0], np.full((1, 3), 10.0))
    assert runner.in_flight == 0 and runner.queue_depth() == 0


class _MeetingModel(_InlineModel):
    """A model run in a worker thread whose runs wait for each other: two must be in flight at once."""

    run_inline = False

    def __init__(self) -> None:
        super().__init__()
        self.meet = threading.Barrier(2, timeout=60)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.meet.wait()  # broken (an error) if the other run never starts
        return super().run(feeds)


def test_parallel_runs_batch_what_queued_and_run_side_by_side() -> None:
    model = _MeetingModel()
    runner = Runner(model, ThreadPoolExecutor(2), max_batch_size=4, parallel=2)  # type: ignore[arg-type]

    async def main() -> list[Any]:
        feeds = [{"x": np.full((1, 3), float(i), np.float32)} for i in range(6)]
        got = await asyncio.gather(*(runner.run(f) for f in feeds))
        await runner.close()
        return got

    got = asyncio.run(main())
    assert sorted(model.runs) == [2, 4], "what queued while both runs were taken joined a batch"
    for i, out in enumerate(got):
        np.testing.assert_array_equal(out[0], np.full((1, 3), 2.0 * i))
    assert runner.in_flight == 0 and runner.describe()["parallel_runs"] == 2
