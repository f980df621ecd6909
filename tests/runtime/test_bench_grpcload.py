"""The benchmark's gRPC load generator (benchmarks/runtime/grpcload) against the runtime's real gRPC port.

The benchmark's gRPC rows are only as honest as what grpcload counts: every call that ends, and as an error
unless it ends with :status 200 and grpc-status 0. The runs here are counted (`-n`: so many calls per
connection), not timed, so what they assert holds on a machine of any speed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import sidevenv  # type: ignore[import-not-found]  # hack/, on the path from tests/conftest.py

from benchmarks.runtime import grpc_load
from edge_runtime import oip

from .conftest import Server

pytestmark = pytest.mark.runtime

DEADLINE_S = 300.0  # only for a run that hangs: the counted runs end when their calls are done


@pytest.fixture(scope="module")
def grpcload() -> Path:
    binary, why = grpc_load.ensure(sidevenv.CACHE)
    assert binary is not None, why
    return binary


def _run(binary: Path, port: int, body: Path, conc: int, calls: int) -> grpc_load.Result:
    return grpc_load.run(binary, f"127.0.0.1:{port}", body, conc, DEADLINE_S, warmup=0, calls=calls)


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
    # apply, in frames as large as it allows, then in grpc-go's 16 KiB ones.
    for body in (_message(tmp_path), _message(tmp_path, rows=3000)):
        r = _run(grpcload, grpc_tabular[1], body, conc=3, calls=7)
        assert r.requests == 21 and r.errors == 0 and r.statuses == {"0": 21} and not r.failed
        assert 0 < r.p50_ms <= r.p99_ms and r.rps > 0
    small = grpc_load.run(grpcload, f"127.0.0.1:{grpc_tabular[1]}", _message(tmp_path, rows=3000), 2, DEADLINE_S,
                          warmup=0, frame=16384, calls=5)
    assert small.statuses == {"0": 10} and not small.failed


def test_a_timed_run_counts_the_calls_that_end_in_its_window(
    grpcload: Path, grpc_tabular: tuple[Server, int], tmp_path: Path
) -> None:
    """The benchmark's own mode: calls for a time, those that end in the window counted. However slow the
    machine, what was counted was answered well, and the rate is what was counted over the window."""
    r = grpc_load.run(grpcload, f"127.0.0.1:{grpc_tabular[1]}", _message(tmp_path), 2, 1.0, warmup=0.2)
    assert r.errors == 0 and set(r.statuses) <= {"0"} and not r.failed
    assert r.rps == r.requests / 1.0


def test_errors_are_counted_with_their_status(
    grpcload: Path, grpc_tabular: tuple[Server, int], tmp_path: Path
) -> None:
    unknown = _run(grpcload, grpc_tabular[1], _message(tmp_path, model="nope"), conc=2, calls=6)
    assert unknown.requests == 12 and unknown.errors == 12
    assert unknown.statuses == {"5": 12} and not unknown.failed  # NOT_FOUND; the connections serve on
    # 2 MiB against a 1 MiB limit: answered RESOURCE_EXHAUSTED before the message is whole; grpcload stops
    # sending it, as a client does, and goes on with the next call on the same connection.
    big = _run(grpcload, grpc_tabular[1], _message(tmp_path, pad=2 << 20), conc=1, calls=4)
    assert big.requests == 4 and big.errors == 4 and big.statuses == {"8": 4} and not big.failed


def test_bad_flags_and_files_are_named(grpcload: Path, tmp_path: Path) -> None:
    notgrpc = tmp_path / "plain.json"
    notgrpc.write_text('{"inputs": []}')
    for args, says in (
        (["-data", str(notgrpc), "-addr", "127.0.0.1:1"], "is not one gRPC-framed message"),
        (["-data", str(tmp_path / "missing"), "-addr", "127.0.0.1:1"], "-data"),
        (["-data", str(notgrpc)], "-addr is required"),
        (["-data", str(notgrpc), "-addr", "127.0.0.1:1", "-c", "0"], "-c must be 1 to 10000"),
        (["-data", str(notgrpc), "-addr", "127.0.0.1:1", "-n", "-1"], "-n must not be negative"),
    ):
        done = subprocess.run([str(grpcload), *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and says in done.stderr, (args, done.stderr)
