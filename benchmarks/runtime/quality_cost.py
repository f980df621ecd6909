"""What model-quality tracking costs per request, in process (no HTTP: an upper bound on its share).

    python -m benchmarks.runtime.quality_cost

Five dataplanes serve the tabular MLP [N,16]->[N,3]: quality off (`--no-quality`), on without a
profile, on with a reference profile (PSI per output signal and feature), and with the previous
revision's window as a second reference (a rollout's maxPSIPrevious): on the reference's bins (one
profile shipped with both builds, the usual case) and on other bins (another profile, the worst
case: every signal binned twice). Requests of batch 1 and 32
go through `DataPlane.infer` in interleaved rounds; the best round's CPU time per request is kept
(CPU time, not wall time, so other load on a shared machine disturbs it less). Then the tracker alone,
where the second reference's cost shows without the model's and the dataplane's noise: one flush of
256 rows (`Tracker.observe`, the unit the runtime batches requests into) and one `snapshot` (each
scrape, and each readiness probe while a gate judges).
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

from edge_runtime import models_zoo
from edge_runtime.core import quality
from edge_runtime.core.protocol import InferenceRequest, Tensor
from edge_runtime.serving.dataplane import DataPlane
from edge_runtime.serving.repository import ModelSource, Settings
from edge_runtime.telemetry.metrics import QualityMetrics, RuntimeMetrics

REQUESTS, ROUNDS = 3000, 7


def main() -> None:
    d = Path(tempfile.mkdtemp())
    model = models_zoo.build_tabular(d / "tabular.onnx")
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    x = models_zoo.sample_inputs("tabular", 4000, seed=0)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"features": x})[0]
    layout = quality.layout_of([("features", "FP32", (-1, 16))], [("probabilities", "FP32", (-1, 3))])
    profile = quality.build_profile(layout, {"features": x}, {"probabilities": y})
    window = quality.Tracker(layout, profile)
    window.observe({"features": x[:2000]}, {"probabilities": y[:2000]})
    same_bins = window.window_profile()
    other_bins = quality.build_profile(layout, {"features": x[2000:] * 1.1}, {"probabilities": y[2000:]}, bins=12)

    def plane(enabled: bool, with_profile: bool, previous: quality.Profile | None = None) -> DataPlane:
        metrics = RuntimeMetrics(process=False, quality_metrics=QualityMetrics(enabled=enabled))
        dp = DataPlane(Settings(threads=1), metrics)
        dp.load_initial("t", ModelSource(str(model), sha, "v1", None))
        if with_profile:
            dp.set_quality_profile("t", profile)
        if previous is not None:
            dp.set_previous_window("t", "previous", previous)
        return dp

    async def per_request(dp: DataPlane, batch: int) -> float:
        reqs = [
            InferenceRequest([Tensor("features", "FP32", (batch, 16), x[i % 3000 : i % 3000 + batch])])
            for i in range(REQUESTS)
        ]
        t0 = time.process_time()
        for r in reqs:
            await dp.infer("t", None, r)
        return (time.process_time() - t0) / REQUESTS

    async def run() -> None:
        for batch in (1, 32):
            planes = {"off": plane(False, False), "on": plane(True, False), "on+profile": plane(True, True),
                      "+previous same bins": plane(True, True, same_bins),
                      "+previous other bins": plane(True, True, other_bins)}
            best = dict.fromkeys(planes, float("inf"))
            for _ in range(ROUNDS):
                for k, dp in planes.items():
                    best[k] = min(best[k], await per_request(dp, batch))
            cells = ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in best.items())
            extra = (best["on+profile"] - best["off"]) * 1e6
            same = (best["+previous same bins"] - best["on+profile"]) * 1e6
            other = (best["+previous other bins"] - best["on+profile"]) * 1e6
            print(f"batch {batch}: CPU per request: {cells}; quality with a profile adds {extra:.1f} us; "
                  f"the previous window adds {same:.1f} us on the same bins, {other:.1f} us on other bins")

    asyncio.run(run())

    trackers = {"profile": quality.Tracker(layout, profile),
                "+previous same bins": quality.Tracker(layout, profile, previous=same_bins),
                "+previous other bins": quality.Tracker(layout, profile, previous=other_bins)}
    observe = dict.fromkeys(trackers, float("inf"))
    snapshot = dict.fromkeys(trackers, float("inf"))
    for _ in range(ROUNDS * 2):
        for k, t in trackers.items():
            t0 = time.process_time()
            for i in range(200):
                j = (i * 256) % 3700
                t.observe({"features": x[j : j + 256]}, {"probabilities": y[j : j + 256]})
            observe[k] = min(observe[k], (time.process_time() - t0) / 200)
            t0 = time.process_time()
            for _ in range(200):
                t.snapshot()
            snapshot[k] = min(snapshot[k], (time.process_time() - t0) / 200)
    for k in trackers:
        print(f"tracker {k}: observe 256 rows {observe[k] * 1e6:.0f} us ({observe[k] * 1e6 / 256:.2f} us/row), "
              f"snapshot {snapshot[k] * 1e6:.0f} us")


if __name__ == "__main__":
    main()
