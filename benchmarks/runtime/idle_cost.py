"""What a CPU's idleness between requests costs the next one (why `serve --busy-poll-us` exists).

    python -m benchmarks.runtime.idle_cost

One tabular request (decode the JSON body, the dataplane's infer with its
metrics and quality staging, encode the answer), timed alone, after each of
several gaps spent either asleep (`time.sleep`, as an event loop in epoll) or
polling (`epoll` with a zero timeout, as the loop does with --busy-poll-us).
Prints p50/p90 per gap, and the same request back to back as the baseline.
"""

from __future__ import annotations

import hashlib
import select
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from edge_runtime import models_zoo
from edge_runtime.core.codec import decode_request, encode_request, encode_response
from edge_runtime.serving.dataplane import DataPlane
from edge_runtime.serving.repository import ModelSource, Settings
from edge_runtime.telemetry.metrics import RuntimeMetrics

GAPS_US = (50, 100, 250, 1000)
REQUESTS = 3000


def main() -> None:
    d = Path(tempfile.mkdtemp())
    model = models_zoo.build_tabular(d / "tabular.onnx")
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    body, _ = encode_request([(models_zoo.TABULAR_INPUT, models_zoo.sample_inputs("tabular", 1, seed=0))])
    dp = DataPlane(Settings(), RuntimeMetrics(process=False))
    dp.load_initial("m", ModelSource(str(model), sha, "v1", None))

    async def one() -> None:
        resp = await dp.infer("m", None, decode_request(body, None))
        encode_response(resp)

    def request() -> None:
        call = one()
        try:
            call.send(None)  # an inline model's request finishes without waiting
        except StopIteration:
            return
        raise RuntimeError("the model did not run inline: this measures nothing useful")

    ep = select.epoll()

    def asleep(gap: float) -> None:
        time.sleep(gap)

    def polling(gap: float) -> None:
        end = time.perf_counter() + gap
        while time.perf_counter() < end:
            ep.poll(0)

    def measure(wait: Callable[[float], None] | None, gap: float) -> tuple[float, float]:
        times = []
        for _ in range(REQUESTS):
            if wait is not None:
                wait(gap)
            t0 = time.perf_counter()
            request()
            times.append(time.perf_counter() - t0)
        times.sort()
        return times[len(times) // 2] * 1e6, times[int(len(times) * 0.9)] * 1e6

    for _ in range(500):
        request()
    print("| before the request | p50 us | p90 us |")
    print("|---|---:|---:|")
    p50, p90 = measure(None, 0)
    print(f"| nothing (back to back) | {p50:.1f} | {p90:.1f} |")
    for gap_us in GAPS_US:
        for label, wait in (("asleep", asleep), ("polling", polling)):
            p50, p90 = measure(wait, gap_us / 1e6)
            print(f"| {label} {gap_us} us | {p50:.1f} | {p90:.1f} |")


if __name__ == "__main__":
    main()
