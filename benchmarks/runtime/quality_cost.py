"""What model-quality tracking costs per request, in process (no HTTP: an upper bound on its share).

    python -m benchmarks.runtime.quality_cost

Three dataplanes serve the tabular MLP [N,16]->[N,3]: quality off (`--no-quality`), on without a
profile, on with a reference profile (PSI per output signal and feature). Requests of batch 1 and 32
go through `DataPlane.infer` in interleaved rounds; the best round's CPU time per request is kept
(CPU time, not wall time, so other load on a shared machine disturbs it less).
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

    def plane(enabled: bool, with_profile: bool) -> DataPlane:
        metrics = RuntimeMetrics(process=False, quality_metrics=QualityMetrics(enabled=enabled))
        dp = DataPlane(Settings(threads=1), metrics)
        dp.load_initial("t", ModelSource(str(model), sha, "v1", None))
        if with_profile:
            dp.set_quality_profile("t", profile)
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
            planes = {"off": plane(False, False), "on": plane(True, False), "on+profile": plane(True, True)}
            best = dict.fromkeys(planes, float("inf"))
            for _ in range(ROUNDS):
                for k, dp in planes.items():
                    best[k] = min(best[k], await per_request(dp, batch))
            cells = ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in best.items())
            extra = (best["on+profile"] - best["off"]) * 1e6
            print(f"batch {batch}: CPU per request: {cells}; quality with a profile adds {extra:.1f} us")

    asyncio.run(run())


if __name__ == "__main__":
    main()
