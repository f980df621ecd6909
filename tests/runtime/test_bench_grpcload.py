"""The benchmark's gRPC load generator (benchmarks/runtime/grpcload) against the runtime's real gRPC port.

The benchmark's gRPC rows are only as honest as what grpcload counts: every call that ends in the window, and
as an error unless it ends with :status 200 and grpc-status 0. Runs are short and counted, never timed: a
1 s window on a busy machine still ends calls, and the assertions are on what they ended with.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks.runtime import grpc_load
from edge_runtime import oip

from .conftest import Server

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def grpcload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    cache = Path(os.environ.get("EDGEAI_CACHE", Path.home() / ".cache" / "edgeai"))
    binary, why = grpc_load.ensure(cache)
    assert binary is not None, why
    return binary


def _message(tmp: Path, model: str = "tabular", rows: int = 1, pad: int = 0) -> Path:
    req = oip.ModelInferRequest(model_name=model)
    req.inputs.add(name="features", datatype="FP32", shape=[rows, 16])
    req.raw_input_contents.append(b"\0" * (64 * rows))
    if pad:
        req.parameters["pad"].string_param = "x" * pad
    raw = req.SerializeToString()
    p = tmp / f"{model}-{rows}-{pad}.grpc"
    p.write_bytes(b"\0" + len(raw).to_bytes(4, "big") + raw)
    return p


def test_good_calls_count_and_nothing_else(grpcload: Path, grpc_tabular: tuple[Server, int], tmp_path: Path) -> None:
    # 3000 rows: a 192 KB message, more than the server's first stream window of 64 KiB before its SETTINGS
    # apply, sent in 16 KiB frames.
    for body in (_message(tmp_path), _message(tmp_path, rows=3000)):
        r = grpc_load.run(grpcload, f"127.0.0.1:{grpc_tabular[1]}", body, conc=2, duration=1.0, warmup=0.2)
        assert r.requests > 0 and r.errors == 0 and r.statuses == {"0": r.requests} and not r.failed
        assert r.p50_ms > 0 and r.p99_ms >= r.p50_ms and r.rps == r.requests / 1.0


def test_errors_are_counted_with_their_status(grpcload: Path, grpc_tabular: tuple[Server, int], tmp_path: Path) -> None:
    target = f"127.0.0.1:{grpc_tabular[1]}"
    unknown = grpc_load.run(grpcload, target, _message(tmp_path, model="nope"), conc=2, duration=1.0, warmup=0.2)
    assert unknown.requests > 0 and unknown.errors == unknown.requests
    assert unknown.statuses == {"5": unknown.requests} and not unknown.failed  # NOT_FOUND; connections serve on
    # 2 MiB against a 1 MiB limit: answered RESOURCE_EXHAUSTED before the message is whole; grpcload stops
    # sending it, as a client does, and goes on with the next call on the same connection.
    big = grpc_load.run(grpcload, target, _message(tmp_path, pad=2 << 20), conc=1, duration=1.0, warmup=0.2)
    assert big.requests > 0 and big.errors == big.requests and set(big.statuses) == {"8"} and not big.failed


def test_bad_flags_and_files_are_named(grpcload: Path, tmp_path: Path) -> None:
    notgrpc = tmp_path / "plain.json"
    notgrpc.write_text('{"inputs": []}')
    for args, says in (
        (["-data", str(notgrpc), "-addr", "127.0.0.1:1"], "is not one gRPC-framed message"),
        (["-data", str(tmp_path / "missing"), "-addr", "127.0.0.1:1"], "-data"),
        (["-data", str(notgrpc)], "-addr is required"),
        (["-data", str(notgrpc), "-addr", "127.0.0.1:1", "-c", "0"], "-c must be 1 to 10000"),
    ):
        done = subprocess.run([str(grpcload), *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and says in done.stderr, (args, done.stderr)
